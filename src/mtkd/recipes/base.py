"""The recipe contract: what the pipeline, the Python API, ``mtkd cache`` and ``mtkd bench``
may assume about a recipe, written down once.

A recipe is an ``nn.Module`` holding what it trains (the student, plus anything learnable of
its own); ``step(x, y, index)`` returns a dict of named losses, the trainer backpropagates
``"loss"`` and logs every term. Each recipe class states what it is in one frozen
:class:`Traits` record; the code around it branches on those traits, never on ``hasattr``.

Optional hooks are declared by a trait and then must exist with the signature below
(``tests/test_recipes.py`` checks both directions over the ``RECIPES`` table):

=====================  ==========================================================================
trait                  hook (signature)
=====================  ==========================================================================
``prepares_teachers``  ``@staticmethod prepare_teachers(stage: TeacherStage) -> PreparedTeachers``
                       the recipe's own teachers (trained on task subsets, with trajectories, a
                       trained copy of the student, ...) through the narrow :class:`TeacherStage`
``checks_models``      ``@staticmethod check_models(cfg, student, teachers, input_shape, num_classes)``
                       teachers: ``[(name, nn.Module)]``; raise ``ConfigError`` before any training
``checks_config``      ``@staticmethod check_config(prep) -> None``: checks against the prepared run
                       (``prep.cfg``, ``prep.teachers`` plans, ``prep.num_classes``)
``online``             ``extra_models() -> list[dict]``: models trained beside the student
                       (``{"name", "role", "module", "config" | "arch"}``), evaluated and saved
``reports_results``    ``results(data, device) -> dict``: extra numbers for ``summary.json``
``finishes``           ``finish() -> None``: last work after training, on every process
=====================  ==========================================================================

Constructors take keyword arguments by name from :data:`BUILD_INPUTS` (the recipe builder,
``mtkd.recipes.build.build_recipe``, passes exactly the ones a constructor lists) and nothing
else: no ``**kwargs``, so a misspelt argument is a ``TypeError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Protocol

import torch
from pydantic import BaseModel
from torch import nn


@dataclass(frozen=True)
class Traits:
    """What a recipe is, for the code that builds and drives it."""

    needs_teachers: bool = False  # the config must name at least one teacher
    uses_aggregator: bool = False  # distills from an aggregate of teachers: takes any aggregator of the table
    uses_unlabeled: bool = False  # trains on the transfer set (labeled split + unlabeled pool)
    needs_unlabeled: bool = False  # refuses to run without an unlabeled pool (draws it itself)
    cacheable: bool = False  # teachers only see the fixed transfer set, unaugmented: outputs may be cached
    shards_data: bool = False  # under torchrun each process trains on its own shard, with its own checkpoint
    trains_teachers: bool = False  # the teachers are trained alongside the student (not frozen)
    trains_assistants: bool = False  # a chain of assistant stages runs before the student's stage
    # declared hooks (see the table in the module docstring)
    prepares_teachers: bool = False
    checks_models: bool = False
    checks_config: bool = False
    online: bool = False
    reports_results: bool = False
    finishes: bool = False


HOOKS = {"prepares_teachers": "prepare_teachers", "checks_models": "check_models",
         "checks_config": "check_config", "online": "extra_models", "reports_results": "results",
         "finishes": "finish"}

# every keyword a recipe constructor may ask for, and what the builder passes for it
BUILD_INPUTS = {
    "student": "the student nn.Module (positional, always first)",
    "teachers": "list of FrozenTeacher (possibly cached), in config order",
    "aggregator": "the built aggregator (nn.Module) or None without teachers",
    "temperature": "distill.temperature",
    "alpha": "distill.alpha",
    "options": "the recipe's validated Options",
    "on_teacher_error": "distill.on_teacher_error: 'stop' or 'drop'",
    "steps": "distill.steps",
    "seed": "the run's seed",
    "unlabeled": "the unlabeled pool (IndexedTensorDataset) or None",
    "example": "a few training inputs [2, ...] (shape probes)",
    "input_shape": "shape of one input sample",
    "num_classes": "number of classes",
    "student_config": "the student's model config (to build peers like it)",
    "trajectories": "from prepare_teachers: name -> the teacher's checkpoints in training order",
    "live_teachers": "from prepare_teachers (or the API): name -> teacher trained with the student",
    "peers": "online recipes, Python API: the peer modules themselves instead of specs",
}


class TrainedTeacher(NamedTuple):
    """A teacher ready for distillation: what the summary calls it, and its weight."""

    name: str
    arch: str
    model: nn.Module
    weight: float = 1.0
    device: str | None = None  # a device of its own ('cuda:1'); None: beside the student (or in turns)


@dataclass
class TeacherPlan:
    spec: Any  # mtkd.config.TeacherSpec
    arch: Any  # the model config (from the YAML, or read from the checkpoint)
    num_classes: int
    model: nn.Module | None = None  # loaded from the checkpoint; None until trained


class PreparedTeachers(NamedTuple):
    """What ``prepare_teachers`` returns: the teachers to distil from, and extra constructor
    inputs (keys of :data:`BUILD_INPUTS`, e.g. ``trajectories`` or ``live_teachers``)."""

    teachers: list[TrainedTeacher]
    inputs: dict[str, Any] = {}


class TeacherStage(Protocol):
    """The narrow part of a pipeline run that ``prepare_teachers`` may use."""

    cfg: Any  # mtkd.config.Config (read only)
    data: Any  # mtkd.data.DataSplits
    num_classes: int
    plans: list[TeacherPlan]  # the configured teachers, in order
    out: Path  # the run directory

    def log(self, message: str) -> None: ...

    def teacher(self, i: int, plan: TeacherPlan, dataset: Any = None) -> nn.Module:
        """Load or train teacher ``plan`` (seed cfg.seed + 1 + i) on ``dataset`` (default: the labeled split)."""

    def train_stage(self, stage: str, recipe: nn.Module, dataset: Any, settings: Any, seed: int, path: Path,
                    model: nn.Module, arch: Any, monitor: Callable[[], dict] | None = None) -> None:
        """Train ``recipe`` (checkpointed, resumable) and save ``model`` to ``path`` when done."""

    def build(self, recipe_name: str, student: nn.Module, teachers: list[TrainedTeacher]) -> "Built":
        """A recipe over ``teachers`` wired as the student's (cache, aggregator, monitor)."""


class Built(NamedTuple):
    """What the builder returns: the recipe, and the teacher monitor for the trainer (or None)."""

    recipe: nn.Module
    monitor: Callable[[], dict] | None


class Recipe(Protocol):
    """What every recipe class provides (optional hooks: see the module docstring)."""

    description: ClassVar[str]
    traits: ClassVar[Traits]
    Options: ClassVar[type[BaseModel]]
    events: list[dict]  # things that happened in the last step (a teacher dropped, a task began), logged

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One training step: named losses; ``"loss"`` is backpropagated."""


def check_recipe(cls: type) -> None:
    """Raise ``TypeError`` where ``cls`` breaks the contract (tests run this over the table)."""
    import inspect

    for attr in ("description", "traits", "Options", "step"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__}: missing {attr!r}")
    if not isinstance(cls.traits, Traits):
        raise TypeError(f"{cls.__name__}.traits: a recipes.base.Traits, got {type(cls.traits).__name__}")
    for trait, hook in HOOKS.items():
        declared, present = getattr(cls.traits, trait), callable(getattr(cls, hook, None))
        if declared != present:
            raise TypeError(f"{cls.__name__}: trait {trait}={declared} but hook {hook}() is "
                            f"{'present' if present else 'missing'}")
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            raise TypeError(f"{cls.__name__}.__init__ takes *{p.name}: list the inputs it uses instead")
        if p.name not in BUILD_INPUTS:
            raise TypeError(f"{cls.__name__}.__init__({p.name}=...): not a build input; "
                            f"choose from {', '.join(BUILD_INPUTS)}")
