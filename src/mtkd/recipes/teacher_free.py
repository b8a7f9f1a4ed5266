"""Teacher-free knowledge distillation (Tf-KD) and reverse KD (Re-KD).

Yuan, Tay, Li, Wang and Feng, "Revisiting Knowledge Distillation via Label Smoothing
Regularization", CVPR 2020 (arXiv:1909.11723). The paper observes that KD works as a learned
label smoothing, so a student can improve without a stronger teacher:

- ``mode: self`` (Tf-KD_self, their eq. 8): first train a copy of the student normally, then
  train the student with it as the teacher::

      loss = (1 - alpha) * CE(q, y) + alpha * multiplier * T^2 * KL(p^t_T || q_T) / C

  The pipeline trains the copy (teacher ``self``, the student's arch and the ``distill``
  training settings, another seed) before distilling; no configured teacher is used.
- ``mode: virtual`` (Tf-KD_reg, eq. 9-10): a hand-made "virtual teacher" that puts probability
  ``a`` (``correct_probability``) on the true class and spreads the rest uniformly::

      p^d(k) = a if k == y else (1 - a) / (C - 1)
      loss   = (1 - alpha) * CE(q, y) + alpha * multiplier * KL(p^d_T || q) / C

  By default this is the authors' ``loss_kd_regularization`` (my_loss_function.py in
  yuanli2333/Teacher-free-Knowledge-Distillation): a = 0.99; p^d_T, the virtual teacher
  softened at temperature T, is ``softmax(p^d / T)`` (the paper does not spell out how a
  distribution is softened; their code treats p^d as scores); the student q is *not* softened
  (T = 1); no T^2 factor. ``soften_student: true`` softens the student at T as eq. 9 reads
  (q_T; mtkd's form before it followed the authors' code, then with a = 0.9 and
  ``kl_mean: samples``). Needs no teacher.

``/ C`` above: the authors' ``nn.KLDivLoss()`` averages over batch x classes, i.e. the
per-sample KL summed over classes divided by the number of classes C, and their ``multiplier``
(1 to 100 in their configs) scales that; ``kl_mean: elements`` (the default) does the same so
their hyper-parameters carry over unchanged. ``kl_mean: samples`` drops the ``/ C`` (the KL of
the paper's equations averaged over samples, as mtkd's other recipes do).
- ``mode: reverse`` (Re-KD, section 3.1): a weaker model teaches a stronger one: the
  configured teachers (e.g. a small MLP) teach the ``student`` (e.g. a CNN) with the Tf-KD_self
  loss. The summary's "student" is then the stronger model being improved.

Only labeled samples are used (the paper's setting; ``virtual`` needs the labels anyway).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..data.base import UNLABELED
from ..errors import ConfigError
from ..losses import ce_loss
from ..options import TeacherSpec, TrainConfig
from ..teachers import FrozenTeacher
from .base import PreparedTeachers, TeacherPlan, TeacherStage, Traits, TrainedTeacher
from .offline import TeacherTargets


class TeacherFreeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mode: Literal["self", "virtual", "reverse"] = Field(
        "self", description="self: a trained copy of the student teaches it; virtual: a hand-made distribution; "
                            "reverse: the (weaker) configured teachers teach the student")
    correct_probability: float = Field(0.99, gt=0, lt=1, description="virtual teacher: probability a of the true "
                                       "class (0.99 in the authors' code)")
    multiplier: float = Field(1.0, gt=0, description="scales the distillation term (the authors' 'multiplier')")
    kl_mean: Literal["elements", "samples"] = Field(
        "elements", description="elements: KL averaged over batch x classes as the authors' nn.KLDivLoss() (so their "
                                "multiplier carries over); samples: summed over classes, averaged over samples")
    soften_student: bool = Field(False, description="virtual: soften the student at T as eq. 9 reads (the authors' "
                                                    "code leaves it at T = 1)")


def virtual_teacher(labels: torch.Tensor, num_classes: int, correct_probability: float) -> torch.Tensor:
    """The hand-made distribution p^d [B, C]: ``a`` on the label, ``(1 - a) / (C - 1)`` elsewhere."""
    a = correct_probability
    p = torch.full((len(labels), num_classes), (1 - a) / (num_classes - 1))
    p[torch.arange(len(labels)), labels.cpu()] = a
    return p.to(labels.device)


def virtual_target(labels: torch.Tensor, num_classes: int, correct_probability: float,
                   temperature: float) -> torch.Tensor:
    """The virtual teacher softened at T: ``softmax(p^d / T)`` [B, C] (see the module docstring)."""
    return torch.softmax(virtual_teacher(labels, num_classes, correct_probability) / temperature, dim=-1)


def virtual_kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, correct_probability: float,
                    temperature: float, soften_student: bool = False) -> torch.Tensor:
    """Tf-KD_reg's term KL(p^d_T || q), summed over classes and averaged over the labeled samples
    of the batch (label -1 has no virtual teacher); q = softmax(student) as in the authors' code, or
    softmax(student / T) with ``soften_student``. student_logits [B, C], labels [B]."""
    labeled = labels != UNLABELED
    if not labeled.any():
        return student_logits.sum() * 0.0
    logits, labels = student_logits[labeled], labels[labeled]
    target = virtual_target(labels, logits.shape[-1], correct_probability, temperature)  # [B', C]
    log_q = F.log_softmax(logits / (temperature if soften_student else 1.0), dim=-1)
    return (target * (target.log() - log_q)).sum(-1).mean()


class TeacherFreeRecipe(nn.Module):
    description = "Tf-KD: a trained copy of the student (self), a virtual teacher, or a weaker model (reverse) teaches"
    traits = Traits(prepares_teachers=True, checks_config=True)  # only mode reverse uses the configured teachers
    Options = TeacherFreeOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher] = (), aggregator: nn.Module | None = None,
                 temperature: float = 4.0, alpha: float = 0.9, options: TeacherFreeOptions | None = None,
                 on_teacher_error: str = "stop"):
        super().__init__()
        self.options = options or TeacherFreeOptions()
        if self.options.mode != "virtual" and not teachers:
            raise ConfigError(f"recipe 'teacher_free' with mode {self.options.mode!r} needs a teacher: "
                              + ("a trained copy of the student (the pipeline trains it; with the API pass it "
                                 "as the teacher)" if self.options.mode == "self" else "the weaker model(s)"))
        self.student, self.aggregator, self.teachers = student, aggregator, list(teachers)
        self.temperature, self.alpha = temperature, alpha
        # teachers, aggregator, fault policy, the aggregator's view of the student (feature hook, look-ahead)
        self.targets = TeacherTargets(teachers, aggregator, student, temperature, on_teacher_error)
        self.events = self.targets.events

    # ------------------------------------------------------------ pipeline hooks
    @staticmethod
    def check_config(prep) -> None:
        mode = prep.cfg.recipe_options.mode
        if mode == "reverse" and not prep.teachers:
            raise ConfigError("teachers: recipe 'teacher_free' with mode 'reverse' needs the weaker model(s) as teachers")

    @staticmethod
    def prepare_teachers(stage: TeacherStage) -> PreparedTeachers:

        cfg, mode = stage.cfg, stage.cfg.recipe_options.mode
        if mode == "reverse":
            return PreparedTeachers([TrainedTeacher(p.spec.name, p.arch.arch, stage.teacher(i, p), p.spec.weight)
                                     for i, p in enumerate(stage.plans)])
        if stage.plans:
            stage.log(f"note: recipe 'teacher_free' with mode {mode!r} does not use the configured teachers")
        if mode == "virtual":
            return PreparedTeachers([])
        # Tf-KD_self: the student's arch trained normally, with the distill section's training settings
        train = TrainConfig(**{k: getattr(cfg.distill, k) for k in TrainConfig.model_fields})
        spec = TeacherSpec("self", cfg.student, None, 1.0, train)
        plan = TeacherPlan(spec, cfg.student, stage.num_classes)
        return PreparedTeachers([TrainedTeacher("self", cfg.student.arch, stage.teacher(len(stage.plans), plan))])

    # ------------------------------------------------------------ one step
    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        weights = None
        if self.options.mode == "virtual":
            logits = self.student(x)  # [B, C]
            kd = virtual_kd_loss(logits, y, self.options.correct_probability, self.temperature,
                                 self.options.soften_student)
        else:
            teacher_logits, alive = self.targets.teacher_logits(x, index)  # [K, B, C], [K]
            self.targets.before_step(x, y, teacher_logits, alive,  # e.g. the bilevel meta-weight update
                                     lambda logits, kd: (1 - self.alpha) * ce_loss(logits, y) + self.alpha * kd)
            logits = self.student(x)  # [B, C]
            kd, weights = self.targets.kd(logits, teacher_logits, y, alive)
        ce = ce_loss(logits, y)
        if self.options.kl_mean == "elements":  # the authors' nn.KLDivLoss(): mean over batch x classes
            kd = kd / logits.shape[-1]
        kd = self.options.multiplier * kd
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd}
        return losses if weights is None else self.targets.log_terms(losses, weights)
