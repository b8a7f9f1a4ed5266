"""The aggregator interface: what every aggregator is, receives and returns.

An aggregator is an ``nn.Module`` built once per run from an :class:`AggregatorContext`
and its options (keys of the ``distill`` section), and called every step::

    aggregate = aggregator(teacher_logits, labels, temperature, student_logits=..., features=...)

teacher_logits [K, B, C]; labels [B] (-1 = unlabeled); student_logits [B, C] (always given) and
the student's penultimate features [B, F] (given when ``capabilities.needs_features``).

Every aggregator class states, in a frozen :class:`Capabilities` record named ``capabilities``
(a class attribute, or set in ``__init__`` when it depends on the options), what it needs and
gives beyond that call; the teacher-targets component (``mtkd.recipes.offline.TeacherTargets``)
branches on the record, never on ``hasattr``. A capability that declares a hook requires it,
with the signature below (:func:`check_aggregator`, run by ``build_aggregator`` and over the
``AGGREGATORS`` table by the tests):

- ``needs_features``: ``forward`` also gets ``features=`` [B, F], the student's penultimate
  features (a forward hook on the student's head reads them);
- ``per_teacher_temperatures``: ``Aggregate.temperatures`` is [B, K]; the KD term becomes the
  weighted sum of per-teacher terms, each at its own temperature;
- ``looks_ahead``: ``before_step(student, features, x, y, teacher_logits, alive, temperature,
  loss) -> None``, an update before the student's forward, given the student itself and
  ``loss(student_logits, kd)``, the recipe's own loss;
- ``adds_losses``: ``auxiliary_losses() -> dict[str, Tensor]``, terms added to the step's
  ``"loss"`` (a gate trained end to end);
- ``logs``: ``logged() -> dict[str, Tensor]``, values written to ``metrics.jsonl``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar, NamedTuple, Protocol, Sequence

import torch

from ..data import IndexedTensorDataset
from ..data.base import UNLABELED


class Aggregate(NamedTuple):
    target: torch.Tensor  # [B, C] soft target for the student; rows sum to 1
    weights: torch.Tensor  # [B, K] weight each teacher got for each sample; rows sum to 1
    # [B, K] per-teacher, per-sample temperatures, for methods that soften each teacher
    # differently (the KD loss is then a weighted sum of per-teacher KL terms); None = one T
    temperatures: torch.Tensor | None = None


@dataclass(frozen=True)
class Capabilities:
    """What an aggregator needs and gives beyond ``forward``'s outputs (see the module docstring)."""

    needs_features: bool = False  # forward(..., features=[B, F]): the student's penultimate features
    per_teacher_temperatures: bool = False  # Aggregate.temperatures [B, K]: one temperature per teacher and sample
    looks_ahead: bool = False  # before_step(...): an update before the student's forward
    adds_losses: bool = False  # auxiliary_losses(): terms added to the step's loss
    logs: bool = False  # logged(): values written to metrics.jsonl


HOOKS = {"looks_ahead": "before_step", "adds_losses": "auxiliary_losses", "logs": "logged"}


class Aggregator(Protocol):
    """What every aggregator class provides (optional hooks: see the module docstring)."""

    description: ClassVar[str]
    Options: ClassVar[type]  # a pydantic model of its options (mtkd.options.NoOptions when none)
    capabilities: Capabilities

    def __init__(self, ctx: "AggregatorContext", options=None) -> None: ...

    def __call__(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, *,
                 student_logits: torch.Tensor | None = None, features: torch.Tensor | None = None) -> "Aggregate":
        """The target [B, C] and the weights [B, K] (``nn.Module.__call__`` runs ``forward``)."""


def check_aggregator(aggregator) -> None:
    """Raise ``TypeError`` where an aggregator breaks the interface: no ``description``, ``Options`` or
    ``forward``, no :class:`Capabilities`, or a declared hook missing. ``aggregator``: a class, or a
    built one (whose capabilities may depend on its options)."""
    name = aggregator.__name__ if isinstance(aggregator, type) else type(aggregator).__name__
    for attr in ("description", "Options", "forward"):
        if not hasattr(aggregator, attr):
            raise TypeError(f"{name}: missing {attr!r}")
    caps = getattr(aggregator, "capabilities", None)
    if not isinstance(caps, Capabilities):
        raise TypeError(f"{name}.capabilities: an aggregation.base.Capabilities, got {type(caps).__name__} "
                        "(write capabilities = Capabilities() when it needs nothing more)")
    for flag in fields(Capabilities):
        hook = HOOKS.get(flag.name)
        if hook and getattr(caps, flag.name) and not callable(getattr(aggregator, hook, None)):
            raise TypeError(f"{name}: capability {flag.name}=True but hook {hook}() is missing")


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
