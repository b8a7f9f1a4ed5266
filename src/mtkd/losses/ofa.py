"""The OFA loss on logits, for distillation between heterogeneous architectures.

Hao, Guo, Chen, Han, Chen, Wang and Xu, "One-for-All: Bridge the Gap Between Heterogeneous
Architectures in Knowledge Distillation" (NeurIPS 2023, arXiv:2310.19444). Writing KD with a
one-hot ground truth as a cross-entropy to the teacher's distribution p^t, OFA raises the
target-class term to a power gamma >= 1 so that the student is pulled harder towards the true
class where the teacher is unsure, and filters irrelevant teacher knowledge:

    L_OFA = - sum_c [ (p^t_c + 1[c = y])^gamma - 1[c = y] ] * log p^s_c

(the form of the authors' implementation; for the target class the weight is
(1 + p^t_y)^gamma - 1, for the others (p^t_c)^gamma). gamma = 1 gives back the cross-entropy to
the teacher, i.e. KD at that temperature up to the teacher's entropy. For unlabeled samples
(label -1) there is no target class and only the (p^t_c)^gamma terms remain.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..labels import UNLABELED


def ofa_loss_per_sample(student_logits: torch.Tensor, target_probs: torch.Tensor, labels: torch.Tensor,
                        gamma: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """OFA loss of each sample.

    student_logits: [B, C]; target_probs: [B, C] teacher (or aggregated teachers')
    probabilities at ``temperature``; labels: [B] (-1 = unlabeled). Returns [B].
    """
    log_q = F.log_softmax(student_logits / temperature, dim=-1)  # [B, C]
    labeled = labels != UNLABELED
    mask = torch.zeros_like(target_probs)
    mask[labeled] = F.one_hot(labels[labeled], target_probs.shape[-1]).to(target_probs.dtype)
    weight = (target_probs + mask).pow(gamma) - mask  # [B, C]
    return -(weight * log_q).sum(-1)


def ofa_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, labels: torch.Tensor,
             gamma: float = 1.0, temperature: float = 1.0, sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Batch mean of :func:`ofa_loss_per_sample` (weighted per sample when weights [B] are given)."""
    per_sample = ofa_loss_per_sample(student_logits, target_probs, labels, gamma, temperature)
    if sample_weights is None:
        return per_sample.mean()
    return (per_sample * sample_weights).sum() / sample_weights.sum().clamp_min(1e-12)
