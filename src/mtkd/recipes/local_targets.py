"""Local targets: the teachers train alongside the student and are held within its reach.

Shi, Song, Zhou, Li and Li, "Follow Your Path: a Progressive Method for Knowledge Distillation"
(ProKT), ECML-PKDD 2021 (LNCS 12976, doi:10.1007/978-3-030-86523-8_36). A converged teacher can be too far from anything the
student can represent; ProKT instead lets the student follow the teacher's training path, one
step at a time, and keeps that path close to the student: each teacher's update minimizes its
own task loss plus a proximal term towards the student's current prediction (an approximate
mirror-descent step, whose solution is the "local target" the student then learns). Every step,
in the order of the authors' training loop (wxsh1213/prokt_text, run_glue_milestone.py)::

    1. teacher k takes its own optimizer step (Adam, ``teacher_lr``) on
           (1 - lambda) * CE(t_k, y) + lambda * KL(softmax(t_k) || softmax(s))     (s detached)
    2. the updated teachers predict the batch again: t'_k (no gradient)
    3. student: (1 - alpha) * CE(s, y) + alpha * T^2 * KL(mean_k softmax(t'_k / T) || softmax(s / T))

``lambda`` is ``constraint`` (0.4, the "move back weight" of the authors' example run; their
teacher criterion weighs CE and the constraint (1 - lambda) : lambda). Their teacher learning
rate is 0.3x the student's (3e-5 against 1e-4 for BERT); ``teacher_lr`` 3e-3 is that ratio for
mtkd's usual Adam 1e-2. Not verified against their code: the direction of their KL term (their
modified model computes it; KL(teacher || student) here, as the paper's proximal step reads), and
their teacher's learning-rate schedule (a constant ``teacher_lr`` here).
The teachers start from their arch's initialization (ProKT trains them
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
from .base import PreparedTeachers, TeacherStage, Traits
from ..models import build_model
from ..seeding import seed_everything


class LocalTargetsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    constraint: float = Field(0.4, ge=0, le=1, description="lambda: the teachers' loss is (1 - lambda) CE + "
                              "lambda KL(teacher || student)")
    teacher_lr: float = Field(3e-3, gt=0, description="learning rate of the teachers' own Adam optimizer")


def proximal_teacher_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                          constraint: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's ProKT loss: ((1 - lambda) * CE(t, y) + lambda * KL(softmax(t) || softmax(s)), the KL alone).

    teacher_logits, student_logits: [B, C] (the student's are detached here); labels [B] (-1 skipped)."""
    # log p from log_softmax, not xlogy(p, p): the teacher is differentiated here, and the gradient
    # of p log p at an underflowed p = 0 is 0 * -inf = NaN
    log_p = F.log_softmax(teacher_logits, dim=-1)
    log_q = F.log_softmax(student_logits.detach(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return (1 - constraint) * ce_loss(teacher_logits, labels) + constraint * kl, kl


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
        self.live = nn.ModuleList(live_teachers.values())  # trained here: registered, part of the state
        for m in self.live:
            m.requires_grad_(True)
        # the teachers' own optimizer; the trainer's never moves them (their gradients are cleared in step)
        self.teacher_optimizer = torch.optim.Adam(self.live.parameters(), lr=self.options.teacher_lr)

    # -- state beyond parameters (the teachers' optimizer), so a resumed run continues exactly
    def get_extra_state(self):
        return {"teacher_optimizer": self.teacher_optimizer.state_dict()}

    def set_extra_state(self, state):
        self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])

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
        # 1. the teachers' step, towards their task and held near the student's current prediction
        teacher_terms = [proximal_teacher_loss(m(x), s, y, self.options.constraint) for m in self.live]
        teacher_loss = sum(term for term, _ in teacher_terms)
        self.teacher_optimizer.zero_grad(set_to_none=True)
        teacher_loss.backward(inputs=list(self.live.parameters()))
        self.teacher_optimizer.step()
        self.teacher_optimizer.zero_grad(set_to_none=True)  # so no stale gradient reaches the trainer's step
        # 2. the local target: the updated teachers' softened mean, a constant for the student
        with torch.no_grad():
            target = torch.stack([F.softmax(m(x) / self.temperature, dim=-1) for m in self.live]).mean(0)  # [B, C]
        # 3. the student's loss (the trainer takes its step)
        kd = kd_loss(s, target, self.temperature)
        ce = ce_loss(s, y)
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd,
                  "teacher_loss": teacher_loss.detach()}
        for name, (_, kl) in zip(self.names, teacher_terms):
            losses[f"constraint/{name}"] = kl.detach()
        return losses

    # ------------------------------------------------------------ results
    def results(self, data, device="cpu") -> dict:
        """Test accuracy of the teachers trained alongside the student."""
        return {"local_targets": {"constraint": self.options.constraint, "teachers": [
            {"name": n, "accuracy": round(accuracy(m, data.test, device), 4)} for n, m in zip(self.names, self.live)]}}
