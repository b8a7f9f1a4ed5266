"""Equal-weight average of the teachers' softened distributions, the standard ensemble target
(Hinton et al. 2015, Sec. 2; You et al., "Learning from Multiple Teacher Networks", KDD 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ..options import NoOptions
from .base import Aggregate, AggregatorContext, softened


class MeanAggregator(nn.Module):
    description = "equal-weight mean of the teachers' softened probabilities"
    Options = NoOptions

    def __init__(self, ctx: AggregatorContext, options: NoOptions | None = None):
        super().__init__()

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        probs = softened(teacher_logits, temperature)  # [K, B, C]
        k, b, _ = probs.shape
        weights = torch.full((b, k), 1.0 / k, dtype=probs.dtype, device=probs.device)
        return Aggregate(probs.mean(dim=0), weights)
