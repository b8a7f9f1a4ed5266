"""In-memory data sets whose samples carry their index, and a resumable batch loader."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from ..labels import UNLABELED  # noqa: F401 - re-exported: the data code reads it from here

if TYPE_CHECKING:
    from .rows import RowConcat

CONCAT_LIMIT = 64 * 2**20  # transfer-set inputs up to this many bytes are concatenated; larger ones are a view


class IndexedTensorDataset(torch.utils.data.Dataset):
    """Tensors ``x`` [N, *input_shape], ``y`` [N] (int64, -1 = unlabeled), ``index`` [N].

    ``index`` is the sample's position in the transfer set (labeled train samples
    first, then the unlabeled pool), so stored teacher outputs can be looked up by it.
    """

    def __init__(self, x: "torch.Tensor | RowConcat", y: torch.Tensor, index: torch.Tensor | None = None):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        # lazily decoded images (mtkd.data.lazy_images.LazyImages) stay encoded: x[rows] decodes them
        self.x = x if getattr(x, "decoded_on_read", False) else x.float().contiguous()
        self.y = y.long().contiguous()
        self.index = torch.arange(len(x)) if index is None else index.long().contiguous()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.index[i]

    def __getitems__(self, indices):  # batched fetch used by torch DataLoader
        i = torch.as_tensor(indices)
        return [(self.x[i], self.y[i], self.index[i])]

    @staticmethod
    def concat(*parts: "IndexedTensorDataset") -> "IndexedTensorDataset":
        xs = [p.x for p in parts]
        x = type(xs[0]).cat(xs) if getattr(xs[0], "decoded_on_read", False) else torch.cat(xs)
        return IndexedTensorDataset(x, torch.cat([p.y for p in parts]), torch.cat([p.index for p in parts]))

    def subset(self, rows: torch.Tensor) -> "IndexedTensorDataset":
        x = self.x.take(rows) if getattr(self.x, "decoded_on_read", False) else self.x[rows]
        return IndexedTensorDataset(x, self.y[rows], self.index[rows])


@dataclass
class DataSplits:
    """Everything a pipeline needs from a data set."""

    name: str
    train: IndexedTensorDataset  # labeled training samples
    test: IndexedTensorDataset  # held-out; only for final evaluation
    val: IndexedTensorDataset | None = None  # split off train; for checkpoint selection
    unlabeled: IndexedTensorDataset | None = None  # labels are UNLABELED
    num_classes: int = 0
    input_shape: tuple[int, ...] = ()
    class_names: list[str] = field(default_factory=list)
    augment: object | None = None  # data.augment (mtkd.data.augment.Augment): training batches only
    workers: int | None = None  # data.workers: DataLoader processes that decode and augment training batches
    # tables: feature columns, missing-value filling and normalisation (mtkd.data.preprocess), as a dict
    preprocess: dict | None = None

    def transfer_set(self) -> IndexedTensorDataset:
        """Samples the student is distilled on: labeled train plus the unlabeled pool. Inputs over
        ``CONCAT_LIMIT`` bytes are a :class:`~mtkd.data.rows.RowConcat` view of both (no copy:
        memory-mapped inputs stay mapped); smaller ones are concatenated (a gather from one tensor
        is about 0.1 ms a batch cheaper); labels and indices (8 bytes a sample each) are concatenated."""
        if self.unlabeled is None:
            return self.train
        from .rows import RowConcat

        parts = [self.train.x, self.unlabeled.x]
        if sum(p.numel() * p.element_size() for p in parts) <= CONCAT_LIMIT:
            return IndexedTensorDataset.concat(self.train, self.unlabeled)
        return IndexedTensorDataset(RowConcat(parts),
                                    torch.cat([self.train.y, self.unlabeled.y]),
                                    torch.cat([self.train.index, self.unlabeled.index]))


class BatchLoader:
    """Yields ``(x, y, index)`` batches from an :class:`IndexedTensorDataset`, fast and resumably.

    The order of epoch ``e`` is a permutation drawn from ``seed + e``, so the loader's
    whole state is ``(epoch, batch)`` and a resumed run sees exactly the same batches.
    Slicing tensors directly avoids a DataLoader's per-sample collate, which on the
    small models here costs more than the forward pass.

    ``workers`` > 0 (``data.workers``): the batches are read -- lazily decoded images decoded and
    augmented -- in that many ``torch.utils.data.DataLoader`` processes, ahead of the training step.
    A batch is a function of (seed, epoch, batch number) alone, and each sample's augmentation of
    (seed, epoch, index), so the batches are the same for any number of workers and after a
    resume. ``pin_memory`` (for a CUDA device only) pins each batch for a faster copy to the GPU.
    """

    def __init__(self, dataset: IndexedTensorDataset, batch_size: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, augment=None, workers: int = 0, pin_memory: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        # augment(x, index, seed, epoch): each sample's view from (seed, epoch, index) alone, so resumable
        self.augment = augment
        self.workers, self.pin_memory = int(workers or 0), bool(pin_memory)
        self.drop_last = drop_last and len(dataset) >= batch_size
        self.epoch, self.batch = 0, 0
        # (rank, world_size) under data parallelism: each process reads only its contiguous share
        # of every global batch (DistributedSampler's semantics, with the one-process batch order)
        self.share: tuple[int, int] | None = None
        self._stream = None  # with workers: (iterator over global batch numbers from `next`, next)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def _rows(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        rows = order[batch * self.batch_size:(batch + 1) * self.batch_size]
        if self.share is not None and len(rows) >= self.share[1]:
            r, world = self.share
            rows = rows[len(rows) * r // world:len(rows) * (r + 1) // world]
        return rows

    def _read(self, rows: torch.Tensor, epoch: int):
        d = self.dataset
        x = d.x[rows]  # lazily decoded images are decoded here
        if self.augment is not None:
            x = self.augment(x, d.index[rows], self.seed, epoch)
        return x, d.y[rows], d.index[rows]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch, starting where the state says (mid-epoch after a resume)."""
        if self.workers > 0:
            yield from self._from_workers()
            return
        order = self._order(self.epoch)
        while self.batch < len(self):
            rows = self._rows(order, self.batch)
            self.batch += 1
            x, y, index = self._read(rows, self.epoch)
            yield (x.pin_memory() if self.pin_memory else x), y, index
        self.epoch, self.batch = self.epoch + 1, 0

    def _from_workers(self):
        """The rest of this epoch from DataLoader worker processes. One DataLoader serves every
        epoch (its workers are started once), reading global batch numbers epoch * len + batch;
        after a resume (another state) it is started again from the state's batch."""
        start = self.epoch * len(self) + self.batch
        if self._stream is None or self._stream[1] != start:
            loader = torch.utils.data.DataLoader(_GlobalBatches(self), batch_size=None, sampler=_Count(start),
                                                 num_workers=self.workers, pin_memory=self.pin_memory)
            self._stream = [iter(loader), start]
        stream = self._stream
        while self.batch < len(self):
            x, y, index = next(stream[0])
            stream[1] += 1
            self.batch += 1
            remember = getattr(self.augment, "remember", None)
            if remember is not None:  # e.g. the view cache: which recorded views this batch holds
                remember(x, index, self.seed, self.epoch)
            yield x, y, index
        self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def __getstate__(self):  # a DataLoader's worker gets the loader without its running stream
        return {**self.__dict__, "_stream": None}


class _Count(torch.utils.data.Sampler):
    """start, start + 1, ... (global batch numbers), without end."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        n = self.start
        while True:
            yield n
            n += 1


class _GlobalBatches(torch.utils.data.Dataset):
    """Global batch number g -> the batch (x, y, index) of epoch g // len, number g % len; run in
    the DataLoader's worker processes."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader
        self.orders: dict[int, torch.Tensor] = {}  # the epochs' permutations, one or two at a time

    def __getitem__(self, g: int):
        epoch, batch = divmod(int(g), len(self.loader))
        if epoch not in self.orders:
            self.orders = {e: o for e, o in self.orders.items() if e >= epoch - 1}
            self.orders[epoch] = self.loader._order(epoch)
        return self.loader._read(self.loader._rows(self.orders[epoch], batch), epoch)


def split_off(dataset: IndexedTensorDataset, fraction: float, seed: int):
    """Split a random ``fraction`` off ``dataset`` (stratification is not needed at these sizes)."""
    if fraction <= 0:
        return dataset, None
    n = len(dataset)
    n_val = max(1, int(round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_rows, train_rows = perm[:n_val].sort().values, perm[n_val:].sort().values
    train, val = dataset.subset(train_rows), dataset.subset(val_rows)
    # re-number so the transfer set's indices stay 0..N-1 for labeled samples
    train.index = torch.arange(len(train))
    val.index = torch.arange(len(val))
    return train, val


def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(np.asarray(y, dtype=np.int64))
