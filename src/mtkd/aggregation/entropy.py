"""EBKD: teacher weights from the entropy of each teacher's prediction (Kwon, Na, Hwang and
Hwang, "Adaptive Knowledge Distillation Based on Entropy", ICASSP 2020), in the form the
CA-MKD reference code uses for its EBKD baseline:

    H_k = -sum_c q_kc log q_kc   (q_k = softmax(z_k), T = 1)
    w_k = 1 - H_k / sum_j H_j

so a more certain teacher (lower entropy) weighs more. Those weights sum to K - 1; here
they are divided by K - 1 to sum to 1 like every aggregator's (the reference's scale is
the same up to that constant factor, i.e. a rescaled alpha). Per sample, no labels needed.

A sample on which every teacher is fully certain (all entropies 0, so the shares H_k / sum_j H_j
are 0 / 0) gets equal weights 1/K: the limit of the formula when all entropies are equal.
"""
from __future__ import annotations

import torch
from torch import nn

from ..options import NoOptions
from .base import Aggregate, AggregatorContext, Capabilities, mix, softened


def ebkd_weights(teacher_logits: torch.Tensor) -> torch.Tensor:
    """teacher_logits [K, B, C] -> weights [B, K]."""
    k = teacher_logits.shape[0]
    if k == 1:
        return torch.ones(teacher_logits.shape[1], 1, dtype=teacher_logits.dtype, device=teacher_logits.device)
    logq = torch.log_softmax(teacher_logits, dim=-1)
    entropy = -(logq.exp() * logq).sum(-1).t()  # [B, K]
    total = entropy.sum(1, keepdim=True)  # [B, 1]
    # shares sum to 1 per sample; 0 / 0 (every teacher certain) -> equal shares 1/K
    share = torch.where(total > 1e-12, entropy / total.clamp_min(1e-12), torch.full_like(entropy, 1.0 / k))
    return (1.0 - share) / (k - 1)


class EntropyAggregator(nn.Module):
    description = "EBKD: lower-entropy (more certain) teachers weigh more (Kwon et al. 2020)"
    Options = NoOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: NoOptions | None = None):
        super().__init__()

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        weights = ebkd_weights(teacher_logits)
        return Aggregate(mix(softened(teacher_logits, temperature), weights), weights)
