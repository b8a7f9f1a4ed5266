"""Train the student on the labels alone (cross-entropy, no teacher): the baseline every
distillation method has to beat."""
from __future__ import annotations

import torch
from torch import nn

from ..options import NoOptions
from ..losses import ce_loss
from .base import Traits


class ScratchRecipe(nn.Module):
    description = "no teacher: cross-entropy on the labels (the baseline)"
    traits = Traits()  # unlabeled samples carry no signal without a teacher
    Options = NoOptions

    def __init__(self, student: nn.Module):
        super().__init__()
        self.events: list[dict] = []  # nothing to report per step (the Recipe protocol's field)
        self.student = student

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        ce = ce_loss(self.student(x), y)  # x: [B, ...], y: [B]
        return {"loss": ce, "ce": ce}
