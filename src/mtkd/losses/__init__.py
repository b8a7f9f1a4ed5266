"""Losses: plain functions, listed by name for ``mtkd list``."""
from .kd import ce_loss, kd_ce_loss, kd_loss, kd_loss_per_sample

LOSSES = {
    "kd": (kd_loss, "T^2 * KL(target || softmax(student / T)), Hinton et al. 2015"),
    "ce": (ce_loss, "cross-entropy on the labeled samples of a batch (label -1 is skipped)"),
    "kd_ce": (kd_ce_loss, "(1 - alpha) * CE(labels) + alpha * KD(target)"),
}

__all__ = ["LOSSES", "ce_loss", "kd_ce_loss", "kd_loss", "kd_loss_per_sample"]
