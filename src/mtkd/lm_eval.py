"""Perplexity of causal language models on packed token rows, overall and per domain.

Perplexity = exp(mean negative log-likelihood of the masked-in targets), the mean taken over
tokens (not rows), so a domain with more test tokens weighs more in the overall number. The
ensemble's probability of a token is the mean of its teachers' probabilities (a mixture)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .data.text import TokenDataset, loss_mask
from .losses.tokens import masked_positions


@torch.no_grad()
def token_nll_sums(models: Sequence[nn.Module], data: TokenDataset, num_domains: int,
                   device: torch.device | str = "cpu", batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of NLL [num_domains], number of targets [num_domains]) of ``models`` on ``data``; with
    several models, of their mixture (mean of probabilities)."""
    sums = torch.zeros(num_domains, dtype=torch.float64)
    counts = torch.zeros(num_domains, dtype=torch.float64)
    states = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        for start in range(0, len(data), batch_size):
            ids = data.x[start:start + batch_size].long().to(device)  # [B, T]
            domains = data.y[start:start + batch_size].to(device)  # [B]
            mask = loss_mask(ids, data.eos_id, data.pad_id)
            targets = ids[:, 1:][mask[:, 1:]]  # [N]
            outs = [m(ids) for m in models]  # [B, T, V] each (a transformers model: .logits)
            log_probs = torch.stack([torch.log_softmax(masked_positions(getattr(o, "logits", o).float(), mask), -1)
                                     for o in outs])  # [M, N, V]
            mixed = torch.logsumexp(log_probs, 0) - math.log(len(models))  # [N, V]
            nll = -mixed.gather(1, targets[:, None]).squeeze(1).double().cpu()  # [N]
            per_token_domain = domains[:, None].expand_as(mask[:, 1:])[mask[:, 1:]].cpu()
            sums.index_add_(0, per_token_domain, nll)
            counts.index_add_(0, per_token_domain, torch.ones_like(nll))
    finally:
        for m, was in zip(models, states):
            m.train(was)
    return sums, counts


def perplexities(models: Sequence[nn.Module], data: TokenDataset, domain_names: Sequence[str],
                 device: torch.device | str = "cpu", batch_size: int = 16) -> dict:
    """{"perplexity": overall, "perplexity_by_domain": {name: value}, "nll": mean NLL, "tokens": N}."""
    sums, counts = token_nll_sums(models, data, len(domain_names), device, batch_size)
    by_domain = {name: round(math.exp(float(s / c)), 4) if c > 0 else None
                 for name, s, c in zip(domain_names, sums, counts)}
    total = float(counts.sum())
    nll = float(sums.sum()) / total if total else float("nan")
    return {"perplexity": round(math.exp(nll), 4) if total else None, "perplexity_by_domain": by_domain,
            "nll": round(nll, 5), "tokens": int(total)}
