"""Augmentation-aware teacher cache: V recorded views per sample, every teacher's output on each.

With random augmentation a per-sample cache is wrong: the student would see one view and the
teachers' outputs on another. As in FKD (Shen & Xing, *A Fast Knowledge Distillation Framework
for Visual Recognition*, ECCV 2022), which stores the crop parameters of each view with the
teacher's soft label of that crop, we record, for every sample i and view v < V, what regenerates
the view exactly (here the seed of the whole ``torchvision.transforms.v2`` pipeline,
``sample_seed(seed, VIEW, v, index_i)``, so any transform list is covered, not only crops) and
every teacher's output on that view, at cache row ``i * V + v`` ([N * V, C]).

During training each step picks, for each sample, one recorded view from (seed, epoch, index)
(so a resumed run picks the same), regenerates it from its seed and reads all teachers' outputs
at its row. The loader hands the batch it generated and its rows to the teachers
(:class:`ViewSource`), so inputs are never compared on a step on the CPU; any other input
(validation batches) goes to the live teacher. When an entry is opened, a few recorded views are
regenerated and compared bitwise with the sha256 stored at build time (a changed torchvision
could change what a seed gives), so a stale entry is refused rather than served.

Entries are ordinary cache entries (manifest, checksums, atomic commit, one teacher in memory at
a time); the key adds V, the seed and the transform list.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.augment import CHOICE, VIEW, Augment, sample_seed
from .build import BuildReport, CacheOptions, build_cache
from .store import CacheError

CHECKED_VIEWS = 4  # rows regenerated and compared when an entry is opened


class ViewSource:
    """The recorded views of a transfer set (x [N, ...], index [N]): generates them for the cache
    build and the training loader, and tells the teachers which cache rows a batch holds."""

    def __init__(self, x: torch.Tensor, index: torch.Tensor, augment: Augment, seed: int, views: int):
        self.x, self.index, self.augment, self.seed, self.views = x, index.long(), augment, seed, views
        self.row_of = torch.full((int(self.index.max()) + 1,), -1, dtype=torch.long)  # sample index -> position
        self.row_of[self.index] = torch.arange(len(self.index))
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch the loader yielded, its cache rows)

    def __len__(self) -> int:
        return len(self.index) * self.views

    def generate(self, rows: torch.Tensor) -> torch.Tensor:
        """Views of cache rows [R] (row = position * V + view), each from its recorded seed."""
        pos, view = rows // self.views, rows % self.views
        return self.augment(self.x[pos], self.index[pos], self.seed, view, kind=VIEW)

    def _chosen(self, index: torch.Tensor, loader_seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(view [B], cache row [B]) each sample of a batch reads: one recorded view per sample,
        chosen from (loader seed, epoch, index)."""
        pos = self.row_of[index.long()]
        if bool((pos < 0).any()):
            raise CacheError("view cache: the training batch holds samples that are not in the cached transfer set")
        view = torch.tensor([sample_seed(loader_seed, CHOICE, epoch, int(i)) % self.views for i in index])
        return view, pos * self.views + view

    def draw(self, x: torch.Tensor, index: torch.Tensor, loader_seed: int, epoch: int) -> torch.Tensor:
        """A training batch: per sample one recorded view, chosen from (loader seed, epoch, index)."""
        view, rows = self._chosen(index, loader_seed, epoch)
        out = self.augment(x, index, self.seed, view, kind=VIEW)
        self.last = (out, rows)
        return out

    __call__ = draw  # the training loader's augment

    def remember(self, x: torch.Tensor, index: torch.Tensor, loader_seed: int, epoch: int) -> None:
        """Record that ``x`` is the batch of ``index`` drawn in ``epoch`` -- called by the training
        loader when a worker process drew it (the worker's own ``last`` is lost with it)."""
        self.last = (x, self._chosen(index, loader_seed, epoch)[1])

    def rows(self, x: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor | None:
        """Cache rows of the batch the loader yielded last, or None for any other input. On the CPU
        the batch is the same tensor object; on another device it is compared once (bitwise)."""
        if self.last is None or indices is None:
            return None
        made, rows = self.last
        if x is made or (x.shape == made.shape and x.device != made.device and torch.equal(x, made.to(x.device))):
            return rows
        return None

    def to(self, device) -> "ViewSource":
        return self  # rows live on the CPU; lookups move them

    def digest(self, rows: Sequence[int]) -> list[str]:
        views = self.generate(torch.as_tensor(list(rows), dtype=torch.long))
        return [hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for v in views]


class _ViewData:
    """The N * V views as a data set for the cache builder: generated a batch at a time, so the
    build's memory is one batch of views, whatever V."""

    def __init__(self, source: ViewSource):
        self.source = source
        self.index = torch.arange(len(source))  # the cache row of each view

    def __len__(self) -> int:
        return len(self.source)

    @property
    def x(self):
        source = self.source

        class _Rows:
            def __getitem__(self, sl: slice) -> torch.Tensor:
                return source.generate(torch.arange(len(source))[sl])

        return _Rows()


def build_view_entries(loaders, source: ViewSource, root: str | Path, opts: CacheOptions, device: torch.device,
                       log: Callable[[str], None] = lambda m: None) -> BuildReport:
    """Build (or verify and reuse) one entry per (name, model loader) over the recorded views."""
    check_rows = list(range(min(CHECKED_VIEWS, len(source))))
    preprocessing = f"views={source.views} seed={source.seed} augment={source.augment.description} " \
                    f"data={_data_fp(source)}"
    report = build_cache(loaders, _ViewData(source), root, opts, device, preprocessing=preprocessing, log=log,
                         fingerprint_data=lambda d: hashlib.sha256(preprocessing.encode()).hexdigest(),
                         extra_manifest={"views": source.views,
                                         "view_check": dict(zip(map(str, check_rows), source.digest(check_rows)))})
    _check_views(report, source)
    return report


def view_cache(teachers: Sequence, source: ViewSource, root: str | Path, opts: CacheOptions,
               device: torch.device, log: Callable[[str], None] = lambda m: None) -> list:
    """FrozenTeachers -> CachedTeachers reading their outputs on the recorded views (built or reused);
    each keeps its live model for other inputs (validation batches)."""
    from .. import distributed
    from ..teachers.cached import CachedTeacher

    loaders = [(t.name, (lambda m=t.model: m)) for t in teachers]
    if distributed.is_main():  # under torchrun one process builds, the others wait and then open what it built
        report = build_view_entries(loaders, source, root, opts, device, log)
    distributed.barrier()
    if not distributed.is_main():
        report = build_view_entries(loaders, source, root, opts, device)
    return [CachedTeacher(e, source, t).to(device) for e, t in zip(report.entries, teachers)]


def _data_fp(source: ViewSource) -> str:
    from .store import data_fingerprint

    return data_fingerprint(source.x, source.index)


def _check_views(report: BuildReport, source: ViewSource) -> None:
    """Regenerate the few views each entry recorded digests of; refuse the entry if any differs."""
    for e in report.entries:
        recorded = e.manifest.get("view_check") or {}
        rows = [int(r) for r in recorded]
        if e.manifest.get("views") != source.views or not rows:
            raise CacheError(f"teacher cache entry {e.path} holds no recorded views; rebuild it with `mtkd cache`")
        if source.digest(rows) != [recorded[str(r)] for r in rows]:
            raise CacheError(f"teacher cache entry {e.path}: regenerated views differ from the recorded ones "
                             "(another torchvision version?); delete the entry or rebuild it with `mtkd cache --force`")
