"""Local targets: the teachers train alongside the student and are held within its reach.

Shi, Song, Zhou, Li and Li, "Follow Your Path: a Progressive Method for Knowledge Distillation"
(ProKT), ECML-PKDD 2021 (LNCS 12976, doi:10.1007/978-3-030-86523-8_36). A converged teacher can be too far from anything the
student can represent; ProKT instead lets the student follow the teacher's training path, one
step at a time, and keeps that path close to the student: each teacher's update minimizes its
own task loss plus a proximal term towards the student's current prediction (an approximate
mirror-descent step, whose solution is the "local target" the student then learns)::

    teacher k:  CE(t_k, y) + lambda * KL(softmax(t_k) || softmax(s))           (s detached)
    student:    (1 - alpha) * CE(s, y) + alpha * T^2 * KL(mean_k softmax(t_k / T) || softmax(s / T))   (t detached)

Both updates happen in every step (one optimizer; the gradients do not mix because each term
detaches the other side). ``lambda`` is ``constraint`` (0.4, the "move back weight" of the
example run in the authors' published code). The teachers start from their arch's initialization (ProKT trains them
from scratch on images) or from a checkpoint file given as the teacher (as in their BERT runs);
they are trained by this recipe, not beforehand, so the pipeline does not pre-train them. Their
weights are part of the recipe's state (exact resume); after training their test accuracy is
reported in ``summary.json`` under ``local_targets``.
Pro-KD's checkpoint walk (recipe ``progressive``) is the offline counterpart: the teacher's
path is fixed in advance and the student replays it.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import ConfigError
from ..losses import ce_loss, kd_loss
from ..trainer import accuracy
from .base import PreparedTeachers, TeacherPlan, TeacherStage, Traits, TrainedTeacher
from ..models import build_model
from ..seeding import seed_everything


class LocalTargetsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    constraint: float = Field(0.4, ge=0, description="lambda: weight of the teachers' KL towards the student")


def proximal_teacher_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                          constraint: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's ProKT loss: (CE(t, y) + lambda * KL(softmax(t) || softmax(s)), the KL alone).

    teacher_logits, student_logits: [B, C] (the student's are detached here); labels [B] (-1 skipped)."""
    # log p from log_softmax, not xlogy(p, p): the teacher is differentiated here, and the gradient
    # of p log p at an underflowed p = 0 is 0 * -inf = NaN
    log_p = F.log_softmax(teacher_logits, dim=-1)
    log_q = F.log_softmax(student_logits.detach(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return ce_loss(teacher_logits, labels) + constraint * kl, kl


class LocalTargetsRecipe(nn.Module):
    description = "ProKT: teachers train with the student, each held near it by a KL term (local targets)"
    # the configured teachers are trained here, together with the student, not beforehand
    traits = Traits(trains_teachers=True, uses_unlabeled=True, prepares_teachers=True, checks_config=True,
                    reports_results=True)
    Options = LocalTargetsOptions

    def __init__(self, student: nn.Module, temperature: float = 4.0,
                 alpha: float = 0.9, options: LocalTargetsOptions | None = None,
                 live_teachers: Mapping[str, nn.Module] | None = None):
        super().__init__()
        self.events: list[dict] = []  # nothing to report per step (the Recipe protocol's field)
        if not live_teachers:
            raise ConfigError("recipe 'local_targets' trains its teachers alongside the student; configure at least "
                              "one teacher (its arch, or a checkpoint to start from)")
        self.options = options or LocalTargetsOptions()
        self.student, self.temperature, self.alpha = student, temperature, alpha
        self.names = list(live_teachers)
        self.live = nn.ModuleList(live_teachers.values())  # trained: registered, in the optimizer and the state
        for m in self.live:
            m.requires_grad_(True)

    # ------------------------------------------------------------ pipeline hooks
    @staticmethod
    def check_config(prep) -> None:
        if not prep.teachers:
            raise ConfigError("teachers: recipe 'local_targets' trains its teachers alongside the student; "
                              "add at least one teacher")

    @staticmethod
    def prepare_teachers(stage: TeacherStage) -> PreparedTeachers:

        live = {}
        for i, plan in enumerate(stage.plans):
            if plan.model is not None:  # start from the given checkpoint
                live[plan.spec.name] = plan.model
                continue
            seed_everything(stage.cfg.seed + 1 + i)
            live[plan.spec.name] = build_model(plan.arch, stage.data.input_shape, plan.num_classes)
        return PreparedTeachers([], {"live_teachers": live})

    # ------------------------------------------------------------ one step
    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        s = self.student(x)  # [B, C]
        t = [m(x) for m in self.live]  # K x [B, C], with gradients for the teachers' own update
        teacher_terms = [proximal_teacher_loss(tk, s, y, self.options.constraint) for tk in t]
        # the local target: the teachers' softened mean after their latest step, fixed for the student
        target = torch.stack([F.softmax(tk.detach() / self.temperature, dim=-1) for tk in t]).mean(0)  # [B, C]
        kd = kd_loss(s, target, self.temperature)
        ce = ce_loss(s, y)
        student_loss = (1 - self.alpha) * ce + self.alpha * kd
        teacher_loss = sum(term for term, _ in teacher_terms)
        losses = {"loss": student_loss + teacher_loss, "ce": ce, "kd": kd, "teacher_loss": teacher_loss.detach()}
        for name, (_, kl) in zip(self.names, teacher_terms):
            losses[f"constraint/{name}"] = kl.detach()
        return losses

    # ------------------------------------------------------------ results
    def results(self, data, device="cpu") -> dict:
        """Test accuracy of the teachers trained alongside the student."""
        return {"local_targets": {"constraint": self.options.constraint, "teachers": [
            {"name": n, "accuracy": round(accuracy(m, data.test, device), 4)} for n, m in zip(self.names, self.live)]}}
