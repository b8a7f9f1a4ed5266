"""UEKD-style semi-supervised distillation: labeled batches get the supervised loss, unlabeled
batches get the distillation loss against the aggregated teachers, and the unlabeled samples
the teachers disagree on most weigh more (or are drawn more often).

Follows Unified Ensemble Knowledge Distillation (UEKD: dynamic teacher weights from validation
accuracy, see the ``accuracy`` aggregator, plus disagreement-based learning on unlabeled data),
Wu, Wu, Qi and Huang, "Unified and
Effective Ensemble Knowledge Distillation" (arXiv:2204.00548), whose abstract weighs the
distillation loss of unlabeled samples by the teachers' disagreement (the default here,
``selection: weight``; the exact weighting formula of the paper is not reproduced). Each step:

    loss = (1 - alpha) * CE(student(x_labeled), y) + alpha * sum_i v_i KD_i(x_unlabeled_i) / sum_i v_i

Disagreement d_i of every unlabeled sample is computed once (teachers are frozen) with
``disagreement`` (``pairwise_kl`` or ``vote_entropy``); ``selection: sample`` draws unlabeled
samples with probability proportional to d_i + ``floor`` * mean(d), ``selection: weight``
draws uniformly and sets v_i = d_i + ``floor`` * mean(d), ``selection: uniform`` ignores d.
Unlabeled batches are drawn from a generator seeded by the step, so a resumed run draws
exactly the same samples.

On MNIST-1D (benchmarks/aggregators.py) emphasising contested samples costs accuracy: the
samples the teachers agree on carry most of what the student learns, so the default floor
(1.0) keeps every sample at no less than half the mean weight, and ``selection: uniform``
(with a larger ``unlabeled_batch_size``) does best there.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..aggregation.disagreement import DISAGREEMENT
from ..data import IndexedTensorDataset
from ..errors import ConfigError
from ..aggregation.base import add_aggregator_terms, aggregated_kd
from ..losses import ce_loss
from ..models.features import PenultimateFeatures
from ..teachers import FrozenTeacher, run_teachers


class SemiSupervisedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    unlabeled_batch_size: int = Field(100, gt=0, description="unlabeled samples per step")
    disagreement: Literal["pairwise_kl", "vote_entropy"] = "pairwise_kl"
    selection: Literal["weight", "sample", "uniform"] = "weight"
    floor: float = Field(1.0, ge=0, description="added to every score, as a fraction of the mean score")
    labeled_kd: bool = Field(False, description="also distill on the labeled batch")


class SemiSupervisedRecipe(nn.Module):
    description = "UEKD: CE on labeled batches, KD on unlabeled ones picked by teacher disagreement"
    needs_teachers = True
    cacheable = True  # teachers only ever see transfer-set samples, unaugmented: outputs may be cached
    uses_unlabeled = False  # the trainer's loader gives labeled batches; the pool is drawn here
    needs_unlabeled = True
    Options = SemiSupervisedOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, options: SemiSupervisedOptions | None = None,
                 unlabeled: IndexedTensorDataset | None = None, seed: int = 0, on_teacher_error: str = "stop", **_):
        super().__init__()
        self.on_teacher_error = on_teacher_error  # "stop" or "drop" (the teacher, for that batch)
        self.events: list[dict] = []  # teacher faults of the last step, written to metrics by the trainer
        if unlabeled is None or len(unlabeled) == 0:
            raise ConfigError("recipe 'semi_supervised' needs an unlabeled pool: set data.unlabeled (mnist1d) "
                              "or x_unlabeled (npz)")
        opts = getattr(aggregator, "options", None)
        if getattr(opts, "form", None) == "joint" and not (options and options.labeled_kd):
            raise ConfigError("aggregator 'meta' with form: joint learns from labeled samples, which recipe "
                              "'semi_supervised' only shows it with labeled_kd: true; set that or use form: bilevel")
        self.student, self.aggregator, self.teachers = student, aggregator, list(teachers)
        self.temperature, self.alpha = temperature, alpha
        self.options = options or SemiSupervisedOptions()
        self.unlabeled, self.seed = unlabeled, seed
        self.features = PenultimateFeatures(student) if getattr(aggregator, "needs_features", False) else None
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        scores = self._disagreement()  # [U], on the CPU where the pool is sampled; recomputed, never saved
        self.scores = scores + self.options.floor * scores.mean().clamp_min(1e-12)

    @torch.no_grad()
    def _disagreement(self) -> torch.Tensor:
        measure = DISAGREEMENT[self.options.disagreement]
        x = self.unlabeled.x
        # the teachers' device: the student has not been moved yet when the recipe is built
        device = self.teachers[0].device
        out = []
        for i in range(0, len(x), 2048):
            xb = x[i:i + 2048].to(device)
            logits, _ = run_teachers(self.teachers, xb, self.unlabeled.index[i:i + 2048])  # faults stop here
            out.append(measure(logits).cpu())
        return torch.cat(out)

    def _unlabeled_batch(self):
        n = self.options.unlabeled_batch_size
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps_done))
        scores = self.scores
        if self.options.selection == "sample":
            rows = torch.multinomial(scores, n, replacement=True, generator=gen)
        else:
            rows = torch.randint(len(scores), (n,), generator=gen)
        d = self.unlabeled
        return d.x[rows], d.index[rows], scores[rows]

    def _kd(self, x, labels, index, sample_weights=None, teachers_out=None):
        teacher_logits, alive = teachers_out if teachers_out is not None else self.teacher_logits(x, index)
        student_logits = self.student(x)
        features = self.features.value if self.features is not None else None
        kd, weights = aggregated_kd(self.aggregator, student_logits, teacher_logits, labels, self.temperature,
                                    features, sample_weights, alive)
        return student_logits, kd, weights

    def teacher_logits(self, x: torch.Tensor, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """([K, B, C] logits, no grad; alive [K]) under the teacher-fault policy."""
        return run_teachers(self.teachers, x, index, self.on_teacher_error, self.events)

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        labeled_out = None  # teachers on the labeled batch, only when something needs them
        if hasattr(self.aggregator, "before_step") or self.options.labeled_kd:
            labeled_out = self.teacher_logits(x, index)
        if hasattr(self.aggregator, "before_step"):  # e.g. the bilevel meta-weight update
            self.aggregator.before_step(self, x, y, *labeled_out)
        device = x.device
        xu, iu, scores = self._unlabeled_batch()
        xu = xu.to(device)
        v = scores.to(device) if self.options.selection == "weight" else None  # per-sample KD weights
        yu = torch.full((len(xu),), -1, dtype=torch.long, device=device)
        _, kd_unlabeled, weights = self._kd(xu, yu, iu, v)
        if self.options.labeled_kd:
            logits, kd_labeled, _ = self._kd(x, y, index, teachers_out=labeled_out)
            kd = 0.5 * (kd_unlabeled + kd_labeled)
        else:
            logits, kd = self.student(x), kd_unlabeled
        ce = ce_loss(logits, y)
        self.steps_done += 1
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd,
                  "disagreement": scores.mean()}  # of the unlabeled samples drawn: selection at work
        return add_aggregator_terms(losses, self.aggregator, self.teachers, weights)
