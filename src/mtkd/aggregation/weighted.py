"""Fixed per-teacher weights (set by the user, normalized to sum to 1): the weighted-average
ensemble target of Fukuda et al., "Efficient Knowledge Distillation from an Ensemble of
Teachers" (Interspeech 2017)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .base import Aggregate, softened


class WeightedAggregator(nn.Module):
    description = "fixed per-teacher weights (teachers[i].weight), normalized to sum to 1"

    def __init__(self, num_teachers: int, weights: Sequence[float] | None = None):
        super().__init__()
        w = torch.ones(num_teachers) if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        if w.numel() != num_teachers:
            raise ConfigError(f"aggregator 'weighted' got {w.numel()} weights for {num_teachers} teachers")
        if (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"aggregator 'weighted' needs non-negative weights with a positive sum, got {w.tolist()}")
        self.register_buffer("weights", w / w.sum())  # [K]

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> Aggregate:
        probs = softened(teacher_logits, temperature)  # [K, B, C]
        w = self.weights.to(probs.dtype)
        target = torch.einsum("k,kbc->bc", w, probs)
        return Aggregate(target, w.expand(probs.shape[1], -1))
