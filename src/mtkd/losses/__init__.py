"""Losses: plain functions, listed by name for ``mtkd list``."""
from .kd import ce_loss, kd_ce_loss, kd_loss, kd_loss_per_sample, multi_temperature_kd_loss
from .fitnet import hint_loss, hint_loss_per_sample
from .infonce import infonce_loss, infonce_loss_per_sample, spatial_smooth
from .ofa import ofa_loss, ofa_loss_per_sample
from .tokens import forward_kl, jsd, reverse_kl

LOSSES = {
    "kd": (kd_loss, "T^2 * KL(target || softmax(student / T)), Hinton et al. 2015"),
    "ce": (ce_loss, "cross-entropy on the labeled samples of a batch (label -1 is skipped)"),
    "kd_ce": (kd_ce_loss, "(1 - alpha) * CE(labels) + alpha * KD(target)"),
    "multi_temperature_kd": (multi_temperature_kd_loss,
                             "sum_k w_k * T_k^2 * KL(teacher_k || student) with per-teacher, per-sample T_k (ATMKD)"),
    "hint": (hint_loss, "FitNet hint: mean squared error between projected student and teacher features, Romero et al. 2015"),
    "ofa": (ofa_loss, "OFA: -sum_c [(p_t + 1[c=y])^gamma - 1[c=y]] log p_s, Hao et al. 2023"),
    "infonce": (infonce_loss, "InfoNCE between (spatially smoothed) student and teacher features, as in TAS (Li et al. 2024)"),
    "forward_kl": (forward_kl, "language models, per token: T^2 * KL(teacher_T || student_T) over masked-in positions"),
    "reverse_kl": (reverse_kl, "language models, per token: T^2 * KL(student_T || teacher_T) (mode-seeking)"),
    "jsd": (jsd, "language models, per token: T^2 * generalised JSD(beta) of GKD (Agarwal et al., ICLR 2024)"),
}

__all__ = ["LOSSES", "ce_loss", "kd_ce_loss", "kd_loss", "kd_loss_per_sample", "multi_temperature_kd_loss",
           "hint_loss", "hint_loss_per_sample", "infonce_loss", "infonce_loss_per_sample", "spatial_smooth",
           "ofa_loss", "ofa_loss_per_sample", "forward_kl", "reverse_kl", "jsd"]
