"""Losses: plain functions, listed by name for ``mtkd list``."""
from .kd import ce_loss, kd_ce_loss, kd_loss, kd_loss_per_sample, multi_temperature_kd_loss

LOSSES = {
    "kd": (kd_loss, "T^2 * KL(target || softmax(student / T)), Hinton et al. 2015"),
    "ce": (ce_loss, "cross-entropy on the labeled samples of a batch (label -1 is skipped)"),
    "kd_ce": (kd_ce_loss, "(1 - alpha) * CE(labels) + alpha * KD(target)"),
    "multi_temperature_kd": (multi_temperature_kd_loss,
                             "sum_k w_k * T_k^2 * KL(teacher_k || student) with per-teacher, per-sample T_k (ATMKD)"),
}

__all__ = ["LOSSES", "ce_loss", "kd_ce_loss", "kd_loss", "kd_loss_per_sample", "multi_temperature_kd_loss"]
