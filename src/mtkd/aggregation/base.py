"""What every aggregator receives and returns.

An aggregator is an ``nn.Module`` built once per run from an :class:`AggregatorContext`
and its options (keys of the ``distill`` section), and called every step::

    aggregate = aggregator(teacher_logits, labels, temperature, student_logits=..., features=...)

teacher_logits [K, B, C]; labels [B] (-1 = unlabeled); student_logits [B, C] and the
student's penultimate features [B, F] are given for methods that look at the student.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch

from ..data import IndexedTensorDataset
from ..data.base import UNLABELED
from .coverage import coverage_mix
from ..losses import kd_loss, multi_temperature_kd_loss


class Aggregate(NamedTuple):
    target: torch.Tensor  # [B, C] soft target for the student; rows sum to 1
    weights: torch.Tensor  # [B, K] weight each teacher got for each sample; rows sum to 1
    # [B, K] per-teacher, per-sample temperatures, for methods that soften each teacher
    # differently (the KD loss is then a weighted sum of per-teacher KL terms); None = one T
    temperatures: torch.Tensor | None = None


@dataclass
class AggregatorContext:
    """What an aggregator may need to know when it is built."""

    teachers: Sequence = ()  # FrozenTeacher objects, in order
    num_classes: int = 0
    teacher_weights: Sequence[float] | None = None  # teachers[i].weight from the config
    val_data: IndexedTensorDataset | None = None  # labeled, held out from training (never test)
    feature_dim: int | None = None  # width of the student's penultimate features
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # names of the teachers, in order (default: each teacher's .name), and of the data's domains
    # (samples then carry domains= [B], indices into this tuple; empty: the data has no domains)
    teacher_names: tuple[str, ...] = ()
    domain_names: tuple[str, ...] = ()

    @property
    def num_teachers(self) -> int:
        return len(self.teachers)


def softened(teacher_logits: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """[K, B, C] logits -> [K, B, C] probabilities at temperature T (a number, or [K, B, 1])."""
    return torch.softmax(teacher_logits / temperature, dim=-1)


def mix(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted mixture: probs [K, B, C], weights [B, K] -> [B, C]."""
    return torch.einsum("bk,kbc->bc", weights, probs)


def labeled_mask(labels: torch.Tensor) -> torch.Tensor:
    return labels != UNLABELED


def pseudo_labels(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True labels where known; for unlabeled samples the ensemble's vote (argmax of the mean
    probability), so label-based weightings also work on an unlabeled transfer pool."""
    vote = torch.softmax(teacher_logits, dim=-1).mean(0).argmax(-1)  # [B]
    return torch.where(labeled_mask(labels), labels, vote)


def mask_weights(weights: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Zero the weights [B, K] of teachers left out of a batch (alive [K] False) and renormalise."""
    w = weights * alive.to(weights.dtype)
    total = w.sum(1, keepdim=True)
    uniform = alive.to(weights.dtype).expand_as(w) / alive.sum()
    return torch.where(total > 0, w / total.clamp_min(1e-12), uniform)


def aggregated_kd(aggregator, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  temperature: float, features: torch.Tensor | None = None,
                  sample_weights: torch.Tensor | None = None,
                  alive: torch.Tensor | None = None,
                  domains: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The KD term against what ``aggregator`` makes of the teachers, and the weights [B, K] it used.

    With one temperature: KD to the aggregated target (optionally weighted per sample,
    sample_weights [B]). With per-teacher temperatures (ATMKD): the weighted sum of
    per-teacher terms, each at its own temperature. Teachers dropped from the batch
    (alive [K] False, see ``run_teachers``) get weight 0 and the others are renormalised.
    domains [B]: each sample's domain index, for aggregators that route by domain.
    """

    agg = aggregator(teacher_logits, labels, temperature, student_logits=student_logits, features=features,
                     domains=domains)
    masks = getattr(aggregator, "class_masks", None)  # [K, C] when some teacher covers only some classes
    some_dropped = alive is not None and not bool(alive.all())  # one check (a device sync on a GPU)
    if some_dropped or masks is not None:
        weights = mask_weights(agg.weights, alive) if some_dropped else agg.weights
        probs = softened(teacher_logits, temperature if agg.temperatures is None else agg.temperatures.t().unsqueeze(-1))
        target = mix(probs, weights) if masks is None else coverage_mix(probs, weights, masks)
        agg = agg._replace(target=target, weights=weights)
    if agg.temperatures is None:
        return kd_loss(student_logits, agg.target, temperature, sample_weights), agg.weights
    weights = agg.weights
    if sample_weights is not None:  # [B, K] * [B, 1], normalised so the mean sample weight is 1
        weights = weights * (sample_weights / sample_weights.mean()).unsqueeze(1)
    return multi_temperature_kd_loss(student_logits, teacher_logits, agg.temperatures, weights), agg.weights


def add_aggregator_terms(losses: dict, aggregator, teachers, weights: torch.Tensor) -> dict:
    """Finish a step's losses: add the aggregator's own training terms to ``"loss"`` (the joint
    meta-weight network), record what it wants logged, and the mean weight of each teacher."""
    for name, value in getattr(aggregator, "auxiliary_losses", dict)().items():
        losses["loss"] = losses["loss"] + value
        losses[name] = value
    losses.update(getattr(aggregator, "logged", dict)())
    for k, teacher in enumerate(teachers):
        losses[f"weight/{teacher.name}"] = weights[:, k].mean().detach()
    return losses
