"""UEKD: semi-supervised ensemble distillation on labeled and unlabeled data.

Wu, Wu, Qi and Huang, "Unified and Effective Ensemble Knowledge Distillation" (arXiv:2204.00548).
The paper's scheme, as its abstract states it: on labeled data the teachers'
predictions are weighted per sample by their correctness, and the distillation loss of a labeled
sample is weighted by the overall correctness of the weighted ensemble; on unlabeled data, where
correctness cannot be measured, the distillation loss is weighted by the teachers' disagreement.
Here (``labeled: uekd``, the default), with p_k = softmax(z_k) at T = 1 and y_b the label::

    c_kb = p_k(y_b)                            teacher k's correctness on labeled sample b
    w_kb = c_kb / sum_j c_jb                   per-sample teacher weights (equal if every c is 0)
    u_b  = sum_k w_kb c_kb                     the weighted ensemble's correctness, in [0, 1]
    KD_labeled   = mean_b u_b * T^2 KL(sum_k w_kb softmax(z_kb / T) || softmax(s_b / T))
    KD_unlabeled = sum_i v_i KD_i / sum_i v_i  (KD_i to the configured aggregator's target)
    loss = (1 - alpha) * CE(s(x_labeled), y) + alpha * (KD_labeled + KD_unlabeled) / 2

The paper's exact normalisation of w and u could not be read here (only its abstract was
available): the formulas above are the plain reading (weights proportional to correctness, the
ensemble's probability of the label as the loss weight). ``labeled: aggregator`` distils on the labeled
batch from the configured aggregator's target, unweighted; ``labeled: none`` uses CE alone there.
The ``accuracy`` aggregator (one global weight per teacher from validation accuracy) is a
different, simpler scheme, not the paper's.

Unlabeled batches: disagreement d_i of every unlabeled sample is computed once (teachers are
frozen) with ``disagreement`` (``pairwise_kl`` or ``vote_entropy``); ``selection: weight`` (the
default) draws uniformly and sets v_i = d_i + ``floor`` * mean(d); ``selection: sample`` draws
samples with probability proportional to that instead (v_i = 1); ``selection: uniform`` ignores
d. Unlabeled batches are drawn from a generator seeded by the step, so a resumed run draws
exactly the same samples.

On MNIST-1D (benchmarks/aggregators.py) emphasising contested samples costs accuracy: the
samples the teachers agree on carry most of what the student learns, so the default floor
(1.0) keeps every sample at no less than half the mean weight.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..aggregation.disagreement import DISAGREEMENT
from ..data import IndexedTensorDataset
from ..data.base import UNLABELED
from ..errors import ConfigError
from ..aggregation.base import mix, softened
from ..losses import ce_loss
from ..losses.kd import kd_loss_per_sample
from ..teachers import FrozenTeacher, run_teachers
from .base import Traits
from .offline import TeacherTargets


class SemiSupervisedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    unlabeled_batch_size: int = Field(100, gt=0, description="unlabeled samples per step")
    disagreement: Literal["pairwise_kl", "vote_entropy"] = "pairwise_kl"
    selection: Literal["weight", "sample", "uniform"] = "weight"
    floor: float = Field(1.0, ge=0, description="added to every score, as a fraction of the mean score")
    labeled: Literal["uekd", "aggregator", "none"] = Field(
        "uekd", description="distillation on the labeled batch: uekd (teacher weights from correctness, loss "
                            "weighted by the ensemble's correctness), aggregator (the configured aggregator's "
                            "target, unweighted) or none (CE only)")


def uekd_labeled_weights(teacher_logits: torch.Tensor, labels: torch.Tensor,
                         alive: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """UEKD on labeled samples: teacher_logits [K, B, C], labels [B] -> (teacher weights w [B, K]
    proportional to each teacher's probability of the label, rows summing to 1; the weighted
    ensemble's probability of the label u [B]). Teachers dropped from the batch (alive [K] False)
    count as giving the label probability 0."""
    p = torch.softmax(teacher_logits, dim=-1)  # [K, B, C] at T = 1
    c = p.gather(-1, labels.view(1, -1, 1).expand(p.shape[0], -1, 1)).squeeze(-1).t()  # [B, K]
    live = torch.ones(c.shape[1], dtype=torch.bool, device=c.device) if alive is None else alive
    c = c * live.to(c.dtype)
    total = c.sum(1, keepdim=True)
    uniform = live.to(c.dtype).expand_as(c) / live.sum()  # every live teacher gave the label probability 0
    w = torch.where(total > 0, c / total.clamp_min(1e-12), uniform)
    return w, (w * c).sum(1)


def uekd_labeled_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float, alive: torch.Tensor | None = None) -> torch.Tensor:
    """KD_labeled of the module docstring over the labeled samples of a batch (label -1 skipped).
    student_logits [B, C]; teacher_logits [K, B, C]; alive [K]."""
    keep = labels != UNLABELED
    if not keep.any():
        return student_logits.sum() * 0.0
    z, s = teacher_logits[:, keep], student_logits[keep]
    w, u = uekd_labeled_weights(z, labels[keep], alive)  # [B', K], [B']
    target = mix(softened(z, temperature), w)  # [B', C]
    return (u * kd_loss_per_sample(s, target, temperature)).mean()


class SemiSupervisedRecipe(nn.Module):
    description = ("UEKD: KD on labeled data weighted by teacher correctness, on unlabeled data by teacher "
                   "disagreement")
    traits = Traits(needs_teachers=True, uses_aggregator=True, cacheable=True, needs_unlabeled=True)  # the pool is drawn here, batches are labeled
    Options = SemiSupervisedOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, options: SemiSupervisedOptions | None = None,
                 unlabeled: IndexedTensorDataset | None = None, seed: int = 0, on_teacher_error: str = "stop"):
        super().__init__()
        if unlabeled is None or len(unlabeled) == 0:
            raise ConfigError("recipe 'semi_supervised' needs an unlabeled pool: set data.unlabeled (mnist1d) "
                              "or x_unlabeled (npz)")
        if aggregator.capabilities.adds_losses and (options or SemiSupervisedOptions()).labeled != "aggregator":
            # e.g. meta's form joint: its gate learns from the labeled samples the aggregator is shown
            raise ConfigError("an aggregator that trains through its own loss term (meta with form: joint) learns "
                              "from labeled samples, which recipe 'semi_supervised' only shows it with labeled: "
                              "aggregator; set that or use another form (meta: form: bilevel)")
        self.student, self.aggregator, self.teachers = student, aggregator, list(teachers)
        self.temperature, self.alpha = temperature, alpha
        self.options = options or SemiSupervisedOptions()
        self.unlabeled, self.seed = unlabeled, seed
        # teachers, aggregator, fault policy, the aggregator's view of the student (feature hook, look-ahead)
        self.targets = TeacherTargets(teachers, aggregator, student, temperature, on_teacher_error)
        self.events = self.targets.events  # teacher faults of the last step, written to metrics by the trainer
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
        teacher_logits, alive = teachers_out if teachers_out is not None else self.targets.teacher_logits(x, index)
        student_logits = self.student(x)  # [B, C]
        kd, weights = self.targets.kd(student_logits, teacher_logits, labels, alive, sample_weights=sample_weights)
        return student_logits, kd, weights

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        labeled_out = None  # teachers on the labeled batch, only when something needs them
        if self.targets.looks_ahead or self.options.labeled != "none":
            labeled_out = self.targets.teacher_logits(x, index)
        if self.targets.looks_ahead:  # e.g. the bilevel meta-weight update
            self.targets.before_step(x, y, *labeled_out, lambda logits, kd: (1 - self.alpha) * ce_loss(logits, y) + self.alpha * kd)
        device = x.device
        xu, iu, scores = self._unlabeled_batch()
        xu = xu.to(device)
        v = scores.to(device) if self.options.selection == "weight" else None  # per-sample KD weights
        yu = torch.full((len(xu),), UNLABELED, dtype=torch.long, device=device)
        _, kd_unlabeled, weights = self._kd(xu, yu, iu, v)
        if self.options.labeled == "uekd":
            logits = self.student(x)
            kd_labeled = uekd_labeled_kd(logits, labeled_out[0], y, self.temperature, labeled_out[1])
            kd = 0.5 * (kd_unlabeled + kd_labeled)
        elif self.options.labeled == "aggregator":
            logits, kd_labeled, _ = self._kd(x, y, index, teachers_out=labeled_out)
            kd = 0.5 * (kd_unlabeled + kd_labeled)
        else:
            logits, kd = self.student(x), kd_unlabeled
        ce = ce_loss(logits, y)
        self.steps_done += 1
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd,
                  "disagreement": scores.mean()}  # of the unlabeled samples drawn: selection at work
        return self.targets.log_terms(losses, weights)
