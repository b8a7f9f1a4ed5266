"""Logit distillation losses as plain functions.

``kd_loss`` follows Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
Network" (2015, arXiv:1503.02531): the student's temperature-softened distribution
is pulled towards a soft target by KL divergence, scaled by T^2 so the gradient's
magnitude does not shrink as T grows. In multi-teacher KD the soft target is the
aggregated teachers' distribution (see ``mtkd.aggregation``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..labels import UNLABELED


def kd_loss_per_sample(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(target || softmax(student / T)) for each sample.

    student_logits: [B, C]; target_probs: [B, C], rows sum to 1 (already softened at T).
    Returns [B].
    """
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    # xlogy gives 0 * log 0 = 0 for classes a target rules out entirely
    kl = (torch.xlogy(target_probs, target_probs) - target_probs * log_q).sum(dim=-1)
    return kl * temperature**2


def kd_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float,
            sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of :func:`kd_loss_per_sample` (optionally weighted per sample, weights [B])."""
    per_sample = kd_loss_per_sample(student_logits, target_probs, temperature)
    if sample_weights is None:
        return per_sample.mean()
    return (per_sample * sample_weights).sum() / sample_weights.sum().clamp_min(1e-12)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labeled samples of a batch (label -1 = unlabeled is skipped).

    logits: [B, C]; labels: [B]. A batch with no labeled sample gives 0 (with a gradient graph).
    """
    labeled = labels != UNLABELED
    if not labeled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labeled], labels[labeled])


def kd_ce_loss(student_logits: torch.Tensor, labels: torch.Tensor, target_probs: torch.Tensor,
               temperature: float, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * CE(labels) + alpha * KD(target)``; returns the total and both terms."""
    ce = ce_loss(student_logits, labels)
    kd = kd_loss(student_logits, target_probs, temperature)
    return {"loss": (1 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}


def multi_temperature_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                              temperatures: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of per-teacher KD terms, each teacher k softened at its own per-sample T_bk:

        mean_b  sum_k  w_bk * T_bk^2 * KL(softmax(z_kb / T_bk) || softmax(s_b / T_bk))

    student_logits [B, C]; teacher_logits [K, B, C]; temperatures, weights [B, K].
    """
    t = temperatures.t().unsqueeze(-1)  # [K, B, 1]
    p = torch.softmax(teacher_logits / t, dim=-1)  # [K, B, C]
    log_q = torch.log_softmax(student_logits.unsqueeze(0) / t, dim=-1)  # [K, B, C]
    kl = (torch.xlogy(p, p) - p * log_q).sum(-1) * t.squeeze(-1) ** 2  # [K, B]
    return (kl * weights.t()).sum(0).mean()
