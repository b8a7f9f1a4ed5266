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

from ..aggregation.targets import TeacherTargets
from ..losses import ce_loss
from ..options import NoOptions
from ..teachers import FrozenTeacher
from .base import Traits


class OfflineRecipe(nn.Module):
    description = "frozen teachers, aggregated soft targets: (1 - alpha) * CE + alpha * KD"
    # teachers only ever see transfer-set samples, unaugmented: outputs may be cached
    traits = Traits(needs_teachers=True, uses_aggregator=True, uses_unlabeled=True, cacheable=True)
    Options = NoOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, on_teacher_error: str = "stop"):
        super().__init__()
        self.student = student
        self.aggregator = aggregator  # registered: an aggregator may have parameters of its own
        self.temperature, self.alpha = temperature, alpha
        # teachers (a plain list inside: their weights stay out of parameters()), aggregator, fault policy
        self.targets = TeacherTargets(teachers, aggregator, student, temperature, on_teacher_error)
        self.teachers, self.events = self.targets.teachers, self.targets.events

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        teacher_logits, alive = self.targets.teacher_logits(x, index)  # [K, B, C], [K]
        self.targets.before_step(x, y, teacher_logits, alive,  # e.g. the bilevel meta-weight update
                                 lambda logits, kd: (1 - self.alpha) * ce_loss(logits, y) + self.alpha * kd)
        student_logits = self.student(x)  # [B, C]
        kd, weights = self.targets.kd(student_logits, teacher_logits, y, alive)
        ce = ce_loss(student_logits, y)
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd}
        return self.targets.log_terms(losses, weights)
