"""Aggregators: teacher logits [K, B, C] (+ labels [B], temperature, and optionally the
student's logits and features) -> soft target [B, C] and the per-teacher, per-sample
weights [B, K] used. One file per strategy against the interface in ``base.py``; this table is
the only registry."""
from __future__ import annotations

from pydantic import BaseModel
from torch import nn

from .base import Aggregate, AggregatorContext, Capabilities, check_aggregator, softened
from .accuracy import AccuracyAggregator
from .adaptive_temperature import AdaptiveTemperatureAggregator
from .aekd import AekdAggregator
from .best import BestTeacherAggregator
from .confidence import ConfidenceAggregator
from .entropy import EntropyAggregator
from .mean import MeanAggregator
from .meta import MetaAggregator
from .route import RouteAggregator
from .weighted import WeightedAggregator

AGGREGATORS: dict[str, type[nn.Module]] = {
    "mean": MeanAggregator,
    "weighted": WeightedAggregator,
    "accuracy": AccuracyAggregator,
    "best": BestTeacherAggregator,
    "confidence": ConfidenceAggregator,
    "entropy": EntropyAggregator,
    "adaptive_temperature": AdaptiveTemperatureAggregator,
    "aekd": AekdAggregator,
    "meta": MetaAggregator,
    "route": RouteAggregator,
}


def build_aggregator(name: str, ctx: AggregatorContext, options: BaseModel | dict | None = None) -> nn.Module:
    """Build aggregator ``name`` for the teachers in ``ctx``; ``options`` are its keys of the distill section."""
    cls = AGGREGATORS[name]
    if not isinstance(options, BaseModel):
        options = cls.Options.model_validate(options or {})
    aggregator = cls(ctx, options)
    check_aggregator(aggregator)  # its capabilities may depend on its options: checked once built
    return aggregator


__all__ = ["AGGREGATORS", "Aggregate", "AggregatorContext", "Capabilities", "MeanAggregator", "WeightedAggregator",
           "build_aggregator", "softened"]
