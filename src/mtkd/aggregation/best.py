"""Per sample, the single teacher that is right with the highest confidence.

A strong, simple baseline for per-sample teacher selection (the "oracle"/best-teacher
baseline used in, e.g., Yuan et al., "Reinforced Multi-Teacher Selection for Knowledge
Distillation", AAAI 2021): among the teachers whose prediction equals the label, the one
with the highest probability on it gets weight 1. If no teacher is right, the teacher
with the highest probability on the label is taken (the least wrong). Unlabeled samples
use the ensemble's vote as their label (see ``pseudo_labels``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..options import NoOptions
from .base import Aggregate, AggregatorContext, Capabilities, mix, pseudo_labels, softened


class BestTeacherAggregator(nn.Module):
    description = "per sample, the one teacher that is right with the highest confidence"
    Options = NoOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: NoOptions | None = None):
        super().__init__()

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        y = pseudo_labels(teacher_logits, labels)  # [B]
        p1 = torch.softmax(teacher_logits, dim=-1)  # [K, B, C] at T = 1: the teachers' own confidence
        on_label = p1.gather(-1, y.view(1, -1, 1).expand(p1.shape[0], -1, 1)).squeeze(-1)  # [K, B]
        right = p1.argmax(-1) == y  # [K, B]
        # right teachers rank above wrong ones (+1 > any probability gap), then by confidence
        score = on_label + right.to(on_label.dtype)
        choice = score.argmax(0)  # [B]
        weights = torch.nn.functional.one_hot(choice, teacher_logits.shape[0]).to(teacher_logits.dtype)  # [B, K]
        return Aggregate(mix(softened(teacher_logits, temperature), weights), weights)
