"""Fixed per-teacher weights (set by the user, normalized to sum to 1): the weighted-average
ensemble target of Fukuda et al., "Efficient Knowledge Distillation from an Ensemble of
Teachers" (Interspeech 2017)."""
from __future__ import annotations

import torch
from torch import nn

from ..options import NoOptions
from ..errors import ConfigError
from .base import Aggregate, AggregatorContext, Capabilities, mix, softened


class WeightedAggregator(nn.Module):
    description = "fixed per-teacher weights (teachers[i].weight), normalized to sum to 1"
    Options = NoOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: NoOptions | None = None):
        super().__init__()
        k = ctx.num_teachers
        w = torch.ones(k) if ctx.teacher_weights is None else torch.as_tensor(list(ctx.teacher_weights),
                                                                             dtype=torch.float32)
        if w.numel() != k:
            raise ConfigError(f"aggregator 'weighted' got {w.numel()} weights for {k} teachers")
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"aggregator 'weighted' needs non-negative weights with a positive sum, got {w.tolist()}")
        self.register_buffer("weights", w / w.sum())  # [K]

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        probs = softened(teacher_logits, temperature)  # [K, B, C]
        w = self.weights.to(probs.dtype).expand(probs.shape[1], -1)  # [B, K]
        return Aggregate(mix(probs, w), w)
