"""The one place a recipe is wired: teachers frozen (and cached), aggregator built, recipe
constructed with exactly the inputs it lists, teacher monitor attached.

The pipeline (``mtkd run``), the Python API (``mtkd.distill``), the assistant stages of
``assistant`` and ``mtkd bench`` all call :func:`build_recipe`, so they cannot drift apart.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel
from torch import nn

from .. import distributed
from ..aggregation import AggregatorContext, build_aggregator
from ..data import IndexedTensorDataset
from ..errors import ConfigError
from ..models.features import head_layer
from ..teachers import FrozenTeacher
from ..teachers.placement import place_teachers
from . import RECIPES
from .base import BUILD_INPUTS, Built, TrainedTeacher
from ..cache.build import cached_pool, options_from
from ..cache.views import ViewSource, view_cache
from ..monitoring import TeacherMonitor


def freeze(teachers: Sequence[TrainedTeacher | FrozenTeacher], device: torch.device, example: torch.Tensor | None,
           num_classes: int, on_device: int = 0) -> list[FrozenTeacher]:
    """FrozenTeachers placed for compute ``device`` (one given as a FrozenTeacher keeps its own name;
    a TrainedTeacher's ``device`` gives it a device of its own; ``on_device`` > 0: the others take
    turns, see :func:`mtkd.teachers.placement.place_teachers`), each checked to output
    ``num_classes`` logits on ``example`` [1, ...]."""
    frozen = [t if isinstance(t, FrozenTeacher) else FrozenTeacher(t.model, t.name, device=getattr(t, "device", None))
              for t in teachers]
    place_teachers(frozen, device, on_device)
    if example is not None:
        for f in frozen:
            f.check_classes(example, num_classes)
    return frozen


def build_recipe(name: str, student: nn.Module, teachers: Sequence[TrainedTeacher | FrozenTeacher],
                 settings: Any, *, recipe_options: BaseModel, aggregator_options: BaseModel, num_classes: int,
                 input_shape: tuple, example: torch.Tensor | None, device: torch.device, seed: int = 0,
                 val: IndexedTensorDataset | None = None, unlabeled: IndexedTensorDataset | None = None,
                 transfer: IndexedTensorDataset | None = None, views: "ViewSource | None" = None,
                 cache_dir: str | Path | None = None,
                 teacher_weights: Sequence[float] | None = None, student_config: BaseModel | None = None, inputs: dict | None = None,
                 log: Callable[[str], None] = print, monitor: bool = True) -> Built:
    """Build recipe ``name`` (a key of ``RECIPES``) around ``student`` and ``teachers``.

    settings: the ``distill`` section (a ``DistillConfig``): temperature, alpha, aggregator,
    cache, on_teacher_error, steps, monitor_every. transfer: the data the teachers see when
    their outputs are cached (``settings.cache`` not 'off'); views: with augmented batches, the
    recorded views (``mtkd.cache.views.ViewSource``) the cache stores the teachers' outputs on
    instead; cache_dir: where the cache lives.
    teacher_weights: per-teacher weights for the ``weighted`` aggregator (default: each TrainedTeacher's).
    inputs: extra constructor inputs (``prepare_teachers``' ``trajectories`` / ``live_teachers``).
    example: a few training inputs [n, ...] (class-count checks, shape probes); None skips the checks.
    """
    cls = RECIPES[name]
    frozen = freeze(teachers, device, example[:1].to(device) if example is not None else None, num_classes,
                    on_device=getattr(settings, "teachers_on_device", 0))
    if teacher_weights is None and teachers and all(isinstance(t, TrainedTeacher) for t in teachers):
        teacher_weights = [t.weight for t in teachers]
    if frozen and cls.traits.cacheable and settings.cache != "off":
        if transfer is None or cache_dir is None:
            raise ConfigError("distill.cache: caching teacher outputs needs a fixed transfer set (an mtkd.BatchLoader "
                              "over an IndexedTensorDataset) and a cache_dir; set cache='off' or pass both")

        if views is not None:  # augmented batches: the teachers' outputs on the recorded views
            frozen = view_cache(frozen, views, cache_dir, options_from(settings), device, log)
        else:
            frozen = cached_pool(frozen, transfer, cache_dir, settings, device, log)
    aggregator = None
    if frozen:
        ctx = AggregatorContext(frozen, num_classes, teacher_weights, val, head_layer(student).in_features, device)
        aggregator = build_aggregator(settings.aggregator, ctx, aggregator_options)
    available = {"teachers": frozen, "aggregator": aggregator, "temperature": settings.temperature,
                 "alpha": settings.alpha, "options": recipe_options, "on_teacher_error": settings.on_teacher_error,
                 "steps": settings.steps, "seed": seed, "unlabeled": unlabeled,
                 "example": example[:2] if example is not None else None, "input_shape": tuple(input_shape),
                 "num_classes": num_classes, "student_config": student_config, **(inputs or {})}
    unknown = set(inputs or {}) - set(BUILD_INPUTS)
    if unknown:
        raise TypeError(f"build_recipe: {sorted(unknown)} are not build inputs ({', '.join(BUILD_INPUTS)})")
    wanted = list(inspect.signature(cls.__init__).parameters)[2:]  # after self, student
    recipe = cls(student, **{k: available[k] for k in wanted if k in available})
    watch = None
    # only rank 0 logs, so only rank 0 monitors (the teachers' pass over the validation split)
    if monitor and settings.monitor_every and frozen and val is not None and distributed.is_main():

        watch = TeacherMonitor(student, frozen, val, device)
    return Built(recipe, watch)
