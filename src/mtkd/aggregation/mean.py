"""Equal-weight average of the teachers' softened distributions, the standard ensemble target
(Hinton et al. 2015, Sec. 2; You et al., "Learning from Multiple Teacher Networks", KDD 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ..options import NoOptions
from .base import Aggregate, AggregatorContext, Capabilities


class MeanAggregator(nn.Module):
    description = "equal-weight mean of the teachers' softened probabilities"
    Options = NoOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: NoOptions | None = None):
        super().__init__()

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        probs = torch.softmax(teacher_logits / temperature, dim=-1)  # [K, B, C] at temperature T
        k, b, _ = probs.shape
        weights = torch.full((b, k), 1.0 / k, dtype=probs.dtype, device=probs.device)  # [B, K]
        return Aggregate(probs.mean(dim=0), weights)
