"""What every aggregator receives and returns.

An aggregator is an ``nn.Module`` built once per run from an :class:`AggregatorContext`
and its options (keys of the ``distill`` section), and called every step::

    aggregate = aggregator(teacher_logits, labels, temperature, student_logits=..., features=...)

teacher_logits [K, B, C]; labels [B] (-1 = unlabeled); student_logits [B, C] and the
student's penultimate features [B, F] are given for methods that look at the student.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch

from ..data import IndexedTensorDataset
from ..data.base import UNLABELED


class Aggregate(NamedTuple):
    target: torch.Tensor  # [B, C] soft target for the student; rows sum to 1
    weights: torch.Tensor  # [B, K] weight each teacher got for each sample; rows sum to 1
    # [B, K] per-teacher, per-sample temperatures, for methods that soften each teacher
    # differently (the KD loss is then a weighted sum of per-teacher KL terms); None = one T
    temperatures: torch.Tensor | None = None


@dataclass
class AggregatorContext:
    """What an aggregator may need to know when it is built."""

    teachers: Sequence = ()  # FrozenTeacher objects, in order
    num_classes: int = 0
    teacher_weights: Sequence[float] | None = None  # teachers[i].weight from the config
    val_data: IndexedTensorDataset | None = None  # labeled, held out from training (never test)
    feature_dim: int | None = None  # width of the student's penultimate features
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def num_teachers(self) -> int:
        return len(self.teachers)


def softened(teacher_logits: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """[K, B, C] logits -> [K, B, C] probabilities at temperature T (a number, or [K, B, 1])."""
    return torch.softmax(teacher_logits / temperature, dim=-1)


def mix(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted mixture: probs [K, B, C], weights [B, K] -> [B, C]."""
    return torch.einsum("bk,kbc->bc", weights, probs)


def labeled_mask(labels: torch.Tensor) -> torch.Tensor:
    return labels != UNLABELED


def pseudo_labels(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True labels where known; for unlabeled samples the ensemble's vote (argmax of the mean
    probability), so label-based weightings also work on an unlabeled transfer pool."""
    vote = torch.softmax(teacher_logits, dim=-1).mean(0).argmax(-1)  # [B]
    return torch.where(labeled_mask(labels), labels, vote)
