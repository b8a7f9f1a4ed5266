"""Offline multi-teacher distillation: frozen, pre-trained teachers; their softened outputs
are aggregated per sample into one target the student matches.

Loss (Hinton, Vinyals and Dean 2015, arXiv:1503.02531; multi-teacher form as in You et al.,
"Learning from Multiple Teacher Networks", KDD 2017):

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(aggregate_T(teachers) || student_T)

CE is taken over the labeled samples of the batch only, KD over every sample, so an
unlabeled transfer pool (label -1) adds distillation signal where no labels exist. When
the aggregator softens each teacher at its own temperature (ATMKD), the KD term is the
weighted sum of per-teacher terms, each at that teacher's temperature.

The teachers' side of that loss is :class:`TeacherTargets`, which every recipe that distills
from frozen, aggregated teachers reuses (progressive, semi_supervised, features, tas,
teacher_free, continual); each keeps its own loss line.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..aggregation.base import Aggregate, Capabilities, mask_weights, mix, softened
from ..aggregation.coverage import class_masks, coverage_mix
from ..losses import ce_loss, kd_loss, multi_temperature_kd_loss
from ..models.features import PenultimateFeatures
from ..options import NoOptions
from ..teachers import FrozenTeacher, run_teachers
from .base import Traits

StudentLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (student logits [B, C], kd) -> loss


class TeacherTargets:
    """What the frozen teachers make of a batch: the teachers, the aggregator, the teacher-fault
    policy and the student's feature hook, owned by one object a recipe calls::

        teacher_logits, alive = targets.teacher_logits(x, index)            # [K, B, C], [K]
        targets.before_step(x, y, teacher_logits, alive, loss)             # look-ahead aggregators (meta)
        student_logits = student(x)                                        # [B, C]
        kd, weights = targets.kd(student_logits, teacher_logits, y, alive)  # scalar, [B, K]
        losses = {"loss": (1 - alpha) * ce + alpha * kd, ...}               # the recipe's own formula
        return targets.log_terms(losses, weights)                          # + aggregator terms, teacher weights

    ``loss(student_logits, kd) -> scalar`` is the recipe's loss as a closure, so an aggregator that
    simulates a student step (MMKD's meta-weight update) uses the recipe's formula instead of
    restating it. What the aggregator needs and gives is read from its declared
    ``capabilities`` (``mtkd.aggregation.base``).

    Not an ``nn.Module``: the recipe registers the aggregator (it may have parameters) and keeps
    the teachers out of ``parameters()``; this object only refers to them.
    """

    def __init__(self, teachers: Sequence[FrozenTeacher], aggregator: nn.Module | None, student: nn.Module,
                 temperature: float, on_teacher_error: str = "stop", events: list | None = None):
        self.teachers = list(teachers)
        self.aggregator = aggregator  # None only without teachers (teacher_free's virtual teacher)
        self.student = student
        self.temperature = temperature
        self.on_teacher_error = on_teacher_error  # "stop" or "drop" (the teacher, for that batch)
        self.events = [] if events is None else events  # teacher faults, written to metrics by the trainer
        self.capabilities: Capabilities = aggregator.capabilities if aggregator is not None else Capabilities()
        # the student's penultimate features [B, F], for aggregators that weigh by them (meta)
        self.features = PenultimateFeatures(student) if self.capabilities.needs_features else None
        self.class_masks = class_masks(self.teachers)  # [K, C] when some teacher covers only some classes, else None

    @property
    def looks_ahead(self) -> bool:
        """True when the aggregator updates itself before the student's forward (``before_step``)."""
        return self.capabilities.looks_ahead

    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor | None,
                       teachers: Sequence | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """([K, B, C] logits, no grad; alive [K]) under the teacher-fault policy; ``teachers``
        replaces the owned ones for this call (e.g. the checkpoints serving now)."""
        return run_teachers(self.teachers if teachers is None else teachers, x, index, self.on_teacher_error,
                            self.events)

    def before_step(self, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor, alive: torch.Tensor,
                    loss: StudentLoss, temperature: float | None = None) -> None:
        """Let a look-ahead aggregator update itself before the student's forward (no-op for the others)."""
        if self.capabilities.looks_ahead:
            self.aggregator.before_step(self.student, self.features, x, y, teacher_logits, alive,
                                        self.temperature if temperature is None else temperature, loss)

    def aggregate(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  alive: torch.Tensor | None = None, temperature: float | None = None) -> Aggregate:
        """The aggregator's target [B, C] and weights [B, K] for a batch. Teachers dropped from it
        (alive [K] False) get weight 0 and the others are renormalised; teachers that cover only some
        classes are mixed class by class (``mtkd.aggregation.coverage``)."""
        t = self.temperature if temperature is None else temperature
        features = self.features.value if self.features is not None else None
        agg = self.aggregator(teacher_logits, labels, t, student_logits=student_logits, features=features)
        masks = self.class_masks
        some_dropped = alive is not None and not bool(alive.all())  # one check (a device sync on a GPU)
        if some_dropped or masks is not None:
            weights = mask_weights(agg.weights, alive) if some_dropped else agg.weights
            per_teacher = self.capabilities.per_teacher_temperatures
            probs = softened(teacher_logits, agg.temperatures.t().unsqueeze(-1) if per_teacher else t)  # [K, B, C]
            target = mix(probs, weights) if masks is None else coverage_mix(probs, weights, masks)
            agg = agg._replace(target=target, weights=weights)
        return agg

    def kd(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
           alive: torch.Tensor | None = None, temperature: float | None = None,
           sample_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(KD term against the aggregate, weights [B, K] the aggregator gave each teacher).

        With one temperature: KD to the aggregated target (optionally weighted per sample,
        sample_weights [B]). With per-teacher temperatures (ATMKD): the weighted sum of per-teacher
        terms, each at its own temperature."""
        t = self.temperature if temperature is None else temperature
        agg = self.aggregate(student_logits, teacher_logits, labels, alive, t)
        if not self.capabilities.per_teacher_temperatures:
            return kd_loss(student_logits, agg.target, t, sample_weights), agg.weights
        weights = agg.weights
        if sample_weights is not None:  # [B, K] * [B, 1], normalised so the mean sample weight is 1
            weights = weights * (sample_weights / sample_weights.mean()).unsqueeze(1)
        return multi_temperature_kd_loss(student_logits, teacher_logits, agg.temperatures, weights), agg.weights

    def log_terms(self, losses: dict, weights: torch.Tensor, names: Sequence[str] | None = None) -> dict:
        """Finish a step's losses: the aggregator's own training terms added to ``"loss"``, the values
        it logs, and the mean weight [B, K] -> scalar of each teacher (``names``: default the owned ones)."""
        if self.capabilities.adds_losses:
            for name, value in self.aggregator.auxiliary_losses().items():
                losses["loss"] = losses["loss"] + value
                losses[name] = value
        if self.capabilities.logs:
            losses.update(self.aggregator.logged())
        for k, name in enumerate(names if names is not None else [t.name for t in self.teachers]):
            losses[f"weight/{name}"] = weights[:, k].mean().detach()
        return losses


class OfflineRecipe(nn.Module):
    description = "frozen teachers, aggregated soft targets: (1 - alpha) * CE + alpha * KD"
    # teachers only ever see transfer-set samples, unaugmented: outputs may be cached
    traits = Traits(needs_teachers=True, uses_aggregator=True, uses_unlabeled=True, cacheable=True)
    Options = NoOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, on_teacher_error: str = "stop"):
        super().__init__()
        self.student = student
        self.aggregator = aggregator  # registered: an aggregator may have parameters of its own
        self.temperature, self.alpha = temperature, alpha
        # teachers (a plain list inside: their weights stay out of parameters()), aggregator, fault policy
        self.targets = TeacherTargets(teachers, aggregator, student, temperature, on_teacher_error)
        self.teachers, self.events = self.targets.teachers, self.targets.events

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        teacher_logits, alive = self.targets.teacher_logits(x, index)  # [K, B, C], [K]
        self.targets.before_step(x, y, teacher_logits, alive,  # e.g. the bilevel meta-weight update
                                 lambda logits, kd: (1 - self.alpha) * ce_loss(logits, y) + self.alpha * kd)
        student_logits = self.student(x)  # [B, C]
        kd, weights = self.targets.kd(student_logits, teacher_logits, y, alive)
        ce = ce_loss(student_logits, y)
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd}
        return self.targets.log_terms(losses, weights)
