"""FitNet hint loss: the student's intermediate features, mapped by a learned regressor to the
teacher's shape, are pulled towards the teacher's features at a chosen ("hint") layer.

Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets: Hints for Thin Deep Nets"
(ICLR 2015, arXiv:1412.6550): L_HT = 1/2 ||u_h(x) - r(v_g(x))||^2 with u_h the teacher's hint
layer, v_g the student's guided layer and r a learned regressor (here
``mtkd.models.projectors.Projector``). We average the squared error over feature elements
instead of summing it, so its scale does not depend on the layer's size.
"""
from __future__ import annotations

import torch


def hint_loss_per_sample(student_hint: torch.Tensor, teacher_hint: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the feature elements of each sample.

    student_hint: [B, ...] (already projected to the teacher's shape); teacher_hint: same shape.
    Returns [B].
    """
    if student_hint.shape != teacher_hint.shape:
        raise ValueError(f"hint shapes differ: student {list(student_hint.shape)}, "
                         f"teacher {list(teacher_hint.shape)}; project the student's features first")
    return (student_hint - teacher_hint).pow(2).flatten(1).mean(1)


def hint_loss(student_hint: torch.Tensor, teacher_hint: torch.Tensor,
              sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Batch mean of :func:`hint_loss_per_sample` (weighted per sample when weights [B] are given)."""
    per_sample = hint_loss_per_sample(student_hint, teacher_hint)
    if sample_weights is None:
        return per_sample.mean()
    return (per_sample * sample_weights).sum() / sample_weights.sum().clamp_min(1e-12)
