"""Aggregators: teacher logits [K, B, C] (+ labels [B], temperature) -> soft target [B, C]
and the per-teacher, per-sample weights [B, K] used. Later strategies join this table."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .base import Aggregate, softened
from .mean import MeanAggregator
from .weighted import WeightedAggregator

AGGREGATORS: dict[str, type[nn.Module]] = {
    "mean": MeanAggregator,
    "weighted": WeightedAggregator,
}


def build_aggregator(name: str, num_teachers: int, teacher_weights: Sequence[float] | None = None) -> nn.Module:
    if name == "weighted":
        return WeightedAggregator(num_teachers, teacher_weights)
    return AGGREGATORS[name](num_teachers)


__all__ = ["AGGREGATORS", "Aggregate", "MeanAggregator", "WeightedAggregator", "build_aggregator", "softened"]
