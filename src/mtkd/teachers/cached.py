"""A teacher read from the on-disk output cache (mtkd.cache), with a live teacher's interface.

``CachedTeacher(x, indices)`` returns the stored logits [B, C] of the samples named by
``indices`` when the batch's inputs are exactly the cached transfer set's inputs at those
indices; any other input (a validation batch, another data set, an augmented view) goes to
the live model if one was given, and is refused with a TeacherError otherwise, so a stored
output is never served for an input it was not computed on.

The data set is checked once, by its fingerprint, when the cache is opened; per batch, a spot
check of a few elements of each input (shared by every teacher opened together, through one
:class:`TransferSet`) tells cached inputs from others. A lookup is one ``index_select`` on a
memory-mapped array: no per-sample Python, and no copy of the transfer set.
"""
from __future__ import annotations

import torch
from torch import nn

from ..cache.store import STACK_LIMIT, Entry
from ..cache.topk import expand_topk
from ..errors import TeacherError
from .frozen import FrozenTeacher, sample_list


PROBES = 8  # elements of each input compared per batch


class TransferSet:
    """What a batch is checked against: a few elements of every cached input, and the map
    sample index -> cache row.

    inputs: [N, ...] in cache-row order (read once here, in chunks: a memory map is never copied
    whole); index: [N] the sample index of each row. The data as a whole is checked once, by its
    fingerprint, when the cache is opened; per batch, ``PROBES`` fixed elements of each input are
    compared with the cached input at the sample's index, which tells the transfer set's batches
    from any other input that carries indices (a validation batch, another data set) at the cost of
    B x 8 comparisons instead of the whole batch.
    """

    def __init__(self, inputs: torch.Tensor, index: torch.Tensor, chunk: int = 4096):
        n = len(inputs)
        self.width = width = inputs[0].numel() if n else 0
        # [P] positions spread over the flattened sample
        self.columns = torch.linspace(0, max(width - 1, 0), min(PROBES, width)).round().long()
        self.probes = torch.cat([inputs[i:i + chunk].reshape(-1, width)[:, self.columns]
                                 for i in range(0, n, chunk)]) if n else torch.zeros(0, len(self.columns))  # [N, P]
        index = index.long().cpu()
        self.identity = bool(torch.equal(index, torch.arange(len(index))))  # rows are the indices
        size = int(index.max()) + 1 if len(index) else 0
        self.row_of = torch.full((size,), -1, dtype=torch.long)  # [max index + 1], -1 = not cached
        self.row_of[index] = torch.arange(len(index))
        self._last: tuple | None = None  # (x, indices, versions, rows) of the last verified batch

    def to(self, device: torch.device) -> "TransferSet":
        if self.probes.device != torch.device(device):
            self.probes = self.probes.to(device)
            self.columns = self.columns.to(device)
            self.row_of = self.row_of.to(device)
            self._last = None
        return self

    def rows(self, x: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor | None:
        """Cache rows [B] of the batch, or None if any sample is not the cached input at its index."""
        if indices is None or len(indices) == 0 or len(indices) != len(x):
            return None
        last = self._last  # K teachers are asked about the same batch in a row: verify it once
        if last is not None and last[0] is x and last[1] is indices and last[2] == (x._version, indices._version):
            return last[3]
        idx = indices.to(self.row_of.device).long()
        if int(idx.min()) < 0 or int(idx.max()) >= len(self.row_of):
            return None
        rows = idx if self.identity else self.row_of[idx]
        if not self.identity and bool((rows < 0).any()):
            return None
        seen = x.detach().reshape(len(x), -1).to(self.probes.device)
        if seen.shape[1] != self.width:
            return None  # inputs of another shape
        if not torch.equal(self.probes[rows], seen[:, self.columns].to(self.probes.dtype)):
            return None
        self._last = (x, indices, (x._version, indices._version), rows)
        return rows


class CachedTeacher(FrozenTeacher):
    def __init__(self, entry: Entry, transfer: TransferSet, model: "nn.Module | FrozenTeacher | None" = None):
        # a FrozenTeacher as the fallback keeps its placement (a device of its own, or turns on the device)
        self.placement = model.placement if isinstance(model, FrozenTeacher) else None
        self.turns = model.turns if isinstance(model, FrozenTeacher) else None
        model = model.model if isinstance(model, FrozenTeacher) else model
        if model is not None:
            model.eval()
            model.requires_grad_(False)
        self._model = model  # the live fallback for inputs outside the cache; may be None
        self.name = entry.teacher
        self.num_classes = entry.num_classes
        self.entry = entry
        self.transfer = transfer
        self.storage = entry.manifest["storage"]
        # torch views of the memory-mapped arrays (copy-on-write maps: writable, never written back)
        self.arrays = {k: torch.from_numpy(v) for k, v in entry.arrays.items() if k != "index"}
        self._device = torch.device("cpu")
        self.pool: "CachedPool | None" = None  # set when opened as part of a stacked pool

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device) -> "CachedTeacher":
        """On a GPU the stored outputs move into device memory once, so lookups are device gathers;
        an entry over ``STACK_LIMIT`` bytes stays in its memory map and each batch's rows move."""

        device = torch.device(device)
        if self._model is not None:
            FrozenTeacher.to(self, device)  # the live fallback: beside the student, on its own device, or home
        if device != self._device:
            if self.entry.bytes <= STACK_LIMIT or device.type == "cpu":
                self.arrays = {k: v.to(device) for k, v in self.arrays.items()}
            self.transfer.to(device)
            if self.pool is not None and self.pool.stacked.device != device:
                self.pool.to(device)
            self._device = device
        return self

    def check_classes(self, example: torch.Tensor, num_classes: int) -> None:
        if self.num_classes != num_classes:
            raise TeacherError(f"cached teacher '{self.name}' stores {self.num_classes} classes, "
                               f"but the student has {num_classes}")

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        """Stored logits [B, C] (float32) of cache rows [B]."""
        rows = rows.to(self.arrays["tail" if self.storage == "topk" else "logits"].device)
        if self.storage == "topk":
            a = self.arrays
            return expand_topk(a["values"].index_select(0, rows), a["classes"].index_select(0, rows),
                               a["tail"].index_select(0, rows), self.num_classes)
        return self.arrays["logits"].index_select(0, rows).float()  # [B, C]

    def __call__(self, x: torch.Tensor, indices: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
        rows = self.transfer.rows(x, indices)
        if rows is not None:
            return self.lookup(rows).to(x.device, non_blocking=True)
        if self._model is None:
            raise TeacherError(f"teacher '{self.name}' is only available from the cache, which does not hold "
                               f"these inputs (samples {sample_list(indices)}: other data, or an augmented "
                               "view); give the live model as a fallback or rebuild the cache on this data")
        return super().__call__(x, indices, check)


class CachedPool:
    """Every teacher of a pool read with one gather: their stored logits stacked as [K, N, C].

    ``run_teachers`` uses it when it is asked for exactly this pool's teachers in order and the
    batch is from the cached transfer set: one input check and one ``index_select`` per step
    instead of K. Anything else goes through the teachers one by one, as usual.
    """

    def __init__(self, teachers: list[CachedTeacher]):
        self.teachers = list(teachers)
        self.transfer = teachers[0].transfer
        # [K, N, C] in the stored dtype (float32 or float16)
        self.stacked = torch.stack([t.arrays["logits"] for t in teachers])
        for t in teachers:
            t.pool = self

    def to(self, device: torch.device) -> "CachedPool":
        self.stacked = self.stacked.to(device)
        return self

    def lookup_all(self, teachers, x: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor | None:
        """[K, B, C] float32 logits, or None if ``teachers`` is not this pool or the batch is not cached."""
        if len(teachers) != len(self.teachers) or any(a is not b for a, b in zip(teachers, self.teachers)):
            return None
        rows = self.transfer.rows(x, indices)
        if rows is None:
            return None
        return self.stacked.index_select(1, rows.to(self.stacked.device)).float().to(x.device, non_blocking=True)
