"""CA-MKD: confidence-aware per-sample teacher weights from each teacher's cross-entropy
against the true label (Zhang, Chen and Wang, "Confidence-Aware Multi-Teacher Knowledge
Distillation", ICASSP 2022, arXiv:2201.00007, Eq. 2):

    w_k = 1 / (K - 1) * (1 - exp(L_CE^k) / sum_j exp(L_CE^j)),   L_CE^k = CE(softmax(z_k), y)

A teacher that predicts the label with higher confidence (lower CE) gets more weight; the
weights sum to 1 per sample. Weights are computed without gradient, and the loss is the
weighted sum of per-teacher KD terms, which for one shared temperature equals KD to the
weighted mixture (up to a constant that does not depend on the student). The paper's
intermediate-feature term is not part of this aggregator. Unlabeled samples use the
ensemble's vote as their label (see ``pseudo_labels``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..options import NoOptions
from .base import Aggregate, AggregatorContext, Capabilities, mix, pseudo_labels, softened


def camkd_weights(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """teacher_logits [K, B, C], labels [B] -> weights [B, K] (Eq. 2 of CA-MKD)."""
    k = teacher_logits.shape[0]
    if k == 1:
        return torch.ones(teacher_logits.shape[1], 1, dtype=teacher_logits.dtype, device=teacher_logits.device)
    ce = torch.stack([F.cross_entropy(z, labels, reduction="none") for z in teacher_logits], dim=1)  # [B, K]
    return (1.0 - torch.softmax(ce, dim=1)) / (k - 1)


class ConfidenceAggregator(nn.Module):
    description = "CA-MKD: weights from each teacher's cross-entropy on the label (Zhang et al. 2022)"
    Options = NoOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: NoOptions | None = None):
        super().__init__()

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        weights = camkd_weights(teacher_logits, pseudo_labels(teacher_logits, labels))
        return Aggregate(mix(softened(teacher_logits, temperature), weights), weights)
