"""How much a pool of teachers disagrees on each sample (for UEKD's unlabeled-data selection).

- ``pairwise_kl``: mean over ordered teacher pairs (i != j) of KL(p_i || p_j) (at T = 1).
- ``vote_entropy``: entropy of the teachers' vote distribution, the query-by-committee
  measure of Dagan and Engelson (ICML 1995); 0 when all teachers vote alike.
"""
from __future__ import annotations

import torch


def pairwise_kl(teacher_logits: torch.Tensor) -> torch.Tensor:
    """[K, B, C] -> [B]."""
    k = teacher_logits.shape[0]
    if k < 2:
        return torch.zeros(teacher_logits.shape[1], device=teacher_logits.device)
    logp = torch.log_softmax(teacher_logits, dim=-1)  # [K, B, C]
    p = logp.exp()
    # KL(p_i || p_j) = sum_c p_i (log p_i - log p_j), for every ordered pair at once: [K, K, B]
    kl = (p.unsqueeze(1) * (logp.unsqueeze(1) - logp.unsqueeze(0))).sum(-1)
    return kl.sum(dim=(0, 1)) / (k * (k - 1))  # diagonal terms are 0


def vote_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    """[K, B, C] -> [B]."""
    k, _, c = teacher_logits.shape
    votes = torch.nn.functional.one_hot(teacher_logits.argmax(-1), c).float().mean(0)  # [B, C]
    return -(torch.xlogy(votes, votes)).sum(-1)


DISAGREEMENT = {"pairwise_kl": pairwise_kl, "vote_entropy": vote_entropy}
