"""Teacher targets: the frozen teachers, the aggregator, the teacher-fault policy and the
student's feature hook, owned by one object a recipe calls. The recipe keeps its own loss
line; this component only says what the teachers make of a batch:

    teacher_logits, alive = targets.teacher_logits(x, index)       # [K, B, C], [K]
    targets.before_step(x, y, teacher_logits, alive, loss)        # look-ahead aggregators (meta, bilevel)
    student_logits = student(x)                                   # [B, C]
    kd, weights = targets.kd(student_logits, teacher_logits, y, alive)   # scalar, [B, K]
    losses = {"loss": (1 - alpha) * ce + alpha * kd, ...}          # the recipe's formula
    return targets.log_terms(losses, weights)                     # + aggregator terms, teacher weights

``loss(student_logits, kd) -> scalar`` is the recipe's own loss as a closure, so an
aggregator that simulates a student step (MMKD's bilevel meta-weight update) uses the
recipe's formula instead of restating it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..models.features import PenultimateFeatures
from ..teachers.frozen import run_teachers
from .base import add_aggregator_terms, aggregated_kd

StudentLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (student logits [B, C], kd) -> loss


class TeacherTargets:
    """Not an ``nn.Module``: the recipe registers the aggregator (it may have parameters) and
    keeps the teachers out of ``parameters()``; this object only refers to them."""

    def __init__(self, teachers: Sequence, aggregator: nn.Module, student: nn.Module, temperature: float,
                 on_teacher_error: str = "stop", events: list | None = None):
        self.teachers = list(teachers)
        self.aggregator = aggregator
        self.student = student
        self.temperature = temperature
        self.on_teacher_error = on_teacher_error  # "stop" or "drop" (the teacher, for that batch)
        self.events = [] if events is None else events  # teacher faults, written to metrics by the trainer
        # the student's penultimate features [B, F], for aggregators that weigh by them (meta)
        self.features = PenultimateFeatures(student) if getattr(aggregator, "needs_features", False) else None
        self._look_ahead = getattr(aggregator, "before_step", None)

    @property
    def looks_ahead(self) -> bool:
        """True when the aggregator updates itself before the student's forward (``before_step``)."""
        return self._look_ahead is not None

    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor | None,
                       teachers: Sequence | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """([K, B, C] logits, no grad; alive [K]) under the teacher-fault policy; ``teachers``
        replaces the owned ones for this call (e.g. the checkpoints serving now)."""
        return run_teachers(self.teachers if teachers is None else teachers, x, index, self.on_teacher_error,
                            self.events)

    def before_step(self, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor, alive: torch.Tensor,
                    loss: StudentLoss, temperature: float | None = None) -> None:
        """Let a look-ahead aggregator update itself before the student's forward (no-op for the others)."""
        if self._look_ahead is not None:
            self._look_ahead(self.student, self.features, x, y, teacher_logits, alive,
                             self.temperature if temperature is None else temperature, loss)

    def kd(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
           alive: torch.Tensor | None = None, temperature: float | None = None,
           sample_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(KD term against the aggregate, weights [B, K] the aggregator gave each teacher)."""
        features = self.features.value if self.features is not None else None
        return aggregated_kd(self.aggregator, student_logits, teacher_logits, labels,
                             self.temperature if temperature is None else temperature, features, sample_weights,
                             alive)

    def log_terms(self, losses: dict, weights: torch.Tensor) -> dict:
        """The aggregator's own training terms added to ``"loss"``, its logged values, and each
        teacher's mean weight."""
        return add_aggregator_terms(losses, self.aggregator, self.teachers, weights)
