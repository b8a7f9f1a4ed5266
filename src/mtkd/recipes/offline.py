"""Offline multi-teacher distillation: frozen, pre-trained teachers; their softened outputs
are aggregated per sample into one target the student matches.

Loss (Hinton, Vinyals and Dean 2015, arXiv:1503.02531; multi-teacher form as in You et al.,
"Learning from Multiple Teacher Networks", KDD 2017):

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(aggregate_T(teachers) || student_T)

CE is taken over the labeled samples of the batch only, KD over every sample, so an
unlabeled transfer pool (label -1) adds distillation signal where no labels exist.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..losses import kd_ce_loss
from ..teachers import FrozenTeacher


class OfflineRecipe(nn.Module):
    description = "frozen teachers, aggregated soft targets: (1 - alpha) * CE + alpha * KD"
    needs_teachers = True
    uses_unlabeled = True

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, **_):
        super().__init__()
        self.student = student
        self.aggregator = aggregator  # registered: an aggregator may have parameters of its own
        self.teachers = list(teachers)  # plain list: teacher weights stay out of parameters()
        self.temperature, self.alpha = temperature, alpha

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        teacher_logits = torch.stack([t(x, index) for t in self.teachers])  # [K, B, C], no grad
        target, weights = self.aggregator(teacher_logits, y, self.temperature)  # [B, C], [B, K]
        losses = kd_ce_loss(self.student(x), y, target, self.temperature, self.alpha)
        for k, teacher in enumerate(self.teachers):
            losses[f"weight/{teacher.name}"] = weights[:, k].mean().detach()
        return losses
