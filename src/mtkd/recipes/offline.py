"""Offline multi-teacher distillation: frozen, pre-trained teachers; their softened outputs
are aggregated per sample into one target the student matches.

Loss (Hinton, Vinyals and Dean 2015, arXiv:1503.02531; multi-teacher form as in You et al.,
"Learning from Multiple Teacher Networks", KDD 2017):

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(aggregate_T(teachers) || student_T)

CE is taken over the labeled samples of the batch only, KD over every sample, so an
unlabeled transfer pool (label -1) adds distillation signal where no labels exist. When
the aggregator softens each teacher at its own temperature (ATMKD), the KD term is the
weighted sum of per-teacher terms, each at that teacher's temperature.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..config import NoOptions
from ..aggregation.base import add_aggregator_terms, aggregated_kd
from ..losses import ce_loss
from ..models.features import PenultimateFeatures
from ..teachers import FrozenTeacher, run_teachers


class OfflineRecipe(nn.Module):
    description = "frozen teachers, aggregated soft targets: (1 - alpha) * CE + alpha * KD"
    needs_teachers = True
    cacheable = True  # teachers only ever see transfer-set samples, unaugmented: outputs may be cached
    uses_unlabeled = True
    Options = NoOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, options: NoOptions | None = None,
                 on_teacher_error: str = "stop", **_):
        super().__init__()
        self.on_teacher_error = on_teacher_error  # "stop" or "drop" (the teacher, for that batch)
        self.events: list[dict] = []  # teacher faults of the last step, written to metrics by the trainer
        self.student = student
        self.aggregator = aggregator  # registered: an aggregator may have parameters of its own
        self.teachers = list(teachers)  # plain list: teacher weights stay out of parameters()
        self.temperature, self.alpha = temperature, alpha
        self.features = PenultimateFeatures(student) if getattr(aggregator, "needs_features", False) else None

    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """([K, B, C] logits, no grad; alive [K]) under the teacher-fault policy."""
        return run_teachers(self.teachers, x, index, self.on_teacher_error, self.events)

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        teacher_logits, alive = self.teacher_logits(x, index)
        if hasattr(self.aggregator, "before_step"):  # e.g. the bilevel meta-weight update
            self.aggregator.before_step(self, x, y, teacher_logits, alive)
        student_logits = self.student(x)  # [B, C]
        features = self.features.value if self.features is not None else None
        kd, weights = aggregated_kd(self.aggregator, student_logits, teacher_logits, y, self.temperature, features,
                                    alive=alive)
        ce = ce_loss(student_logits, y)
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd}
        return add_aggregator_terms(losses, self.aggregator, self.teachers, weights)
