"""The Python API: any ``torch.nn.Module`` teachers and student, any data loader.

    import mtkd
    student = mtkd.distill(student, [teacher_a, teacher_b], train_loader, steps=3000)

Defaults are the CLI's (``mtkd.config.DistillConfig``), so the same settings give the same run.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from . import distributed
from .pipeline import resolve_device
from .data import BatchLoader, IndexedTensorDataset
from .data.text import TokenDataset
from .errors import ConfigError
from .recipes import RECIPES
from .recipes.base import TrainedTeacher
from .recipes.build import build_recipe
from .teachers import FrozenTeacher
from .trainer import MetricsLog, Trainer, unpack_batch
from .config import parse_distill


def _settings(**kwargs: Any):
    """(DistillConfig, aggregator options, recipe options) from keyword arguments, validated
    exactly as the config's distill section."""

    return parse_distill({k: v for k, v in kwargs.items() if v is not None})


# settings of the distill section that only `mtkd run` acts on: refused here rather than ignored
PIPELINE_ONLY = {"baseline": "the from-scratch baseline is a pipeline stage; call mtkd.train for it"}


def _refuse_unsupported(settings: dict, train_loader: Iterable) -> None:
    """A ConfigError for every accepted setting this call could not honour."""
    for key, why in PIPELINE_ONLY.items():
        if settings.get(key):
            raise ConfigError(f"distill.{key}: not a setting of mtkd.distill ({why}); use `mtkd run` for it")
    size = settings.get("batch_size")
    if size is not None and getattr(train_loader, "batch_size", size) != size:
        raise ConfigError(f"distill.batch_size={size}: the batches come from train_loader (batch size "
                          f"{train_loader.batch_size}); set the batch size there")
    if size is not None and not hasattr(train_loader, "batch_size"):
        raise ConfigError(f"distill.batch_size={size}: the batches come from train_loader; set the batch size there")


def _as_dataset(val_data: Any) -> IndexedTensorDataset | None:
    if val_data is None or isinstance(val_data, IndexedTensorDataset):
        return val_data
    x, y = val_data
    return IndexedTensorDataset(torch.as_tensor(x), torch.as_tensor(y))


def distill(student: nn.Module, teachers: Sequence[nn.Module] | Mapping[str, nn.Module], train_loader: Iterable,
            *, recipe: str = "offline", aggregator: str = "mean", teacher_weights: Sequence[float] | None = None,
            val_data: Any = None, unlabeled: Any = None, checkpoint: str | Path | None = None,
            metrics_path: str | Path | None = None, progress: bool = True, seed: int = 0,
            trajectories: Mapping[str, Sequence[nn.Module]] | None = None, snapshot_dir: str | Path | None = None,
            trackers: Sequence[Any] | None = None, **settings: Any) -> nn.Module:
    """Distill ``teachers`` into ``student`` (trained in place and returned).

    teachers: modules (named teacher0, teacher1, ...) or a name -> module mapping; they are frozen
    (a ``FrozenTeacher``, e.g. a ``PrecomputedTeacher``, is used as it is, with its own name).
    train_loader: yields ``(x, y)``, ``(x, y, index)`` or dicts; label -1 marks an unlabeled sample.
    val_data: optional ``(x, y)``, held out from training: validation accuracy in the metrics, and
    the labeled data that the ``accuracy`` and ``meta`` aggregators learn teacher weights from.
    unlabeled: an unlabeled pool ``x`` (or IndexedTensorDataset) for recipe ``semi_supervised``.
    For recipe ``local_targets`` the teachers are trained here, alongside the student (not frozen).
    trajectories: for recipe ``progressive``, each teacher's checkpoints in training order (name ->
    modules, the last one the trained teacher); see :func:`mtkd.recipes.progressive.load_trajectory`.
    checkpoint: file for a resumable checkpoint; if it exists, training resumes from it.
    snapshot_dir: with ``save_every=N``, the student's weights every N steps go to
    ``snapshot_dir/step-NNNNNN.pt`` (e.g. ``mtkd.train(teacher, ..., save_every=100, snapshot_dir=d)``
    keeps a teacher's trajectory for recipe ``progressive``).
    trackers: experiment trackers that receive every metrics record, e.g.
    ``[mtkd.tracking.TensorBoardTracker("runs/tb")]`` (the caller closes them).
    settings: any key of the CLI's ``distill`` section: steps, lr, temperature, alpha, optimizer,
    schedule, warmup_steps, weight_decay, eval_every, log_every, checkpoint_every, device, amp,
    threads (torch CPU threads while this call runs; default 1, as the CLI; 0 = leave torch's
    setting), monitor_every, cache (with an ``mtkd.BatchLoader`` and ``cache_dir=``), ... A setting
    this call cannot honour (``baseline``, a ``batch_size`` other than the loader's) is a ConfigError.
    """
    _refuse_unsupported(settings, train_loader)
    cfg, aggregator_options, recipe_options = _settings(recipe=recipe, aggregator=aggregator, **settings)
    with torch_threads(cfg.threads):
        return _distill(student, teachers, train_loader, cfg, aggregator_options, recipe_options,
                        teacher_weights=teacher_weights, val_data=val_data, unlabeled=unlabeled,
                        checkpoint=checkpoint, metrics_path=metrics_path, progress=progress, seed=seed,
                        trajectories=trajectories, snapshot_dir=snapshot_dir, trackers=trackers)


@contextmanager
def torch_threads(threads: int):
    """Run with ``threads`` torch CPU threads (0: leave torch's setting), then restore the caller's."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _distill(student, teachers, train_loader, cfg, aggregator_options, recipe_options, *, teacher_weights,
             val_data, unlabeled, checkpoint, metrics_path, progress, seed, trajectories, snapshot_dir,
             trackers) -> nn.Module:
    named = dict(teachers) if isinstance(teachers, Mapping) else {f"teacher{i}": t for i, t in enumerate(teachers)}
    if isinstance(train_loader, BatchLoader) and isinstance(train_loader.dataset, TokenDataset):
        return _distill_lm(student, named, train_loader, cfg, aggregator_options, teacher_weights=teacher_weights,
                           checkpoint=checkpoint, metrics_path=metrics_path, progress=progress, trackers=trackers,
                           seed=seed)
    traits = RECIPES[cfg.recipe].traits
    if traits.needs_teachers and not named:
        raise ConfigError(f"recipe {cfg.recipe!r} needs at least one teacher")
    if traits.trains_assistants:  # a chain of stages: the pipeline's job
        raise ConfigError(f"recipe {cfg.recipe!r} trains a chain of stages; use `mtkd run` / run_pipeline, or call "
                          "distill once per stage (teachers -> assistant, then assistant -> student)")
    val = _as_dataset(val_data)
    device = resolve_device(cfg.device)
    distributed.init(device)  # under torchrun: join its process group, so the processes train one model
    device = distributed.local_device(device)
    student.to(device)
    inputs: dict[str, Any] = {}
    if traits.trains_teachers:  # recipe local_targets trains its teachers with the student: they are not frozen
        inputs["live_teachers"], named = {name: m.to(device) for name, m in named.items()}, {}
    if trajectories is not None:
        inputs["trajectories"] = trajectories
    # an example input to check class counts; peeking must not advance a BatchLoader's state
    x = train_loader.dataset.x if isinstance(train_loader, BatchLoader) else unpack_batch(next(iter(train_loader)))[0]
    example = x[:2].to(device)
    with torch.no_grad():
        num_classes = student(example[:1]).shape[-1]
    if unlabeled is not None and not isinstance(unlabeled, IndexedTensorDataset):
        x_unl = torch.as_tensor(unlabeled)
        unlabeled = IndexedTensorDataset(x_unl, torch.full((len(x_unl),), -1))
    teacher_list = [m if isinstance(m, FrozenTeacher) else TrainedTeacher(name, type(m).__name__, m)
                    for name, m in named.items()]
    transfer = train_loader.dataset if isinstance(train_loader, BatchLoader) else None
    rec, monitor = build_recipe(cfg.recipe, student, teacher_list, cfg, recipe_options=recipe_options,
                                aggregator_options=aggregator_options, num_classes=num_classes,
                                input_shape=tuple(example.shape[1:]), example=example, device=device, seed=seed,
                                val=val, unlabeled=unlabeled, transfer=transfer, cache_dir=cfg.cache_dir,
                                teacher_weights=teacher_weights, inputs=inputs, log=lambda m: None)
    Trainer(rec, train_loader, cfg, stage="scratch" if cfg.recipe == "scratch" else "distill", val_data=val,
            checkpoint=checkpoint, metrics=MetricsLog(metrics_path, trackers), device=device, progress=progress,
            monitor=monitor, snapshot_dir=snapshot_dir).fit()
    return student


def _distill_lm(student, named, train_loader, cfg, aggregator_options, *, teacher_weights, checkpoint, metrics_path,
                progress, trackers, seed) -> nn.Module:
    """Causal language models on packed token rows (a BatchLoader over ``mtkd.data.text.TokenDataset``):
    the token-level recipes of ``mtkd run`` with ``data.name: text`` (see :mod:`mtkd.lm_pipeline`)."""
    from .lm_pipeline import build_lm_recipe

    data = train_loader.dataset
    device = resolve_device(cfg.device)
    student.to(device)
    with torch.no_grad():
        out = student(data.x[:1].long().to(device))
    vocab = getattr(out, "logits", out).shape[-1]  # [1, T, V]
    teachers = [(name, m.to(device)) for name, m in named.items()]
    recipe = build_lm_recipe(cfg.recipe, student, teachers, cfg, aggregator_options, vocab, data.eos_id, data.pad_id,
                             data.domain_names, teacher_weights, device, seed=seed)
    Trainer(recipe, train_loader, cfg, stage="scratch" if cfg.recipe == "scratch" else "distill", val_data=None,
            checkpoint=checkpoint, metrics=MetricsLog(metrics_path, trackers), device=device, progress=progress).fit()
    return student


def train(model: nn.Module, train_loader: Iterable, **kwargs: Any) -> nn.Module:
    """Train ``model`` on labels alone (recipe ``scratch``); same keywords as :func:`distill`."""
    return distill(model, [], train_loader, recipe="scratch", **kwargs)
