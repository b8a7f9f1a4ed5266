"""Several row blocks read as one, without copying them: the transfer set (labeled train rows, then
the unlabeled pool) over two memory maps, so its size never adds to the process's own memory.

:class:`RowConcat` answers the reads the data path makes of an input tensor ``x`` [N, ...]: its
``len``/``shape``/``dtype``, one row, a slice of rows, and a gather of rows by index (a batch). A
slice inside one block is a view of it; anything else is a new tensor of just the rows asked for.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class RowConcat:
    """``torch.cat(parts)`` [sum N_i, *S] for reading rows, without the concatenation.

    parts: tensors [N_i, *S] of one dtype and sample shape S (e.g. memory-mapped inputs)."""

    def __init__(self, parts: Sequence[torch.Tensor]):
        if not parts:
            raise ValueError("RowConcat needs at least one block of rows")
        if len({(tuple(p.shape[1:]), p.dtype, p.device) for p in parts}) != 1:
            raise ValueError("RowConcat: blocks must share sample shape, dtype and device, got "
                             + ", ".join(f"{p.dtype} {list(p.shape)} on {p.device}" for p in parts))
        self.parts = list(parts)
        sizes = torch.tensor([len(p) for p in parts])
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])  # [P + 1]: first row of each block
        self.shape = torch.Size([int(self.starts[-1]), *parts[0].shape[1:]])
        self.dtype, self.device = parts[0].dtype, parts[0].device
        self._bounds = [(int(a), int(b)) for a, b in zip(self.starts[:-1], self.starts[1:])]  # [lo, hi) per block

    # ---- what a tensor of inputs is asked about
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def element_size(self) -> int:
        return self.parts[0].element_size()

    def float(self) -> "RowConcat":
        return self if self.dtype == torch.float32 else RowConcat([p.float() for p in self.parts])

    def contiguous(self) -> "RowConcat":  # each block is read as it is stored
        return self

    def detach(self) -> "RowConcat":
        return self

    def cpu(self) -> "RowConcat":
        return self if self.device.type == "cpu" else RowConcat([p.cpu() for p in self.parts])

    def __repr__(self) -> str:
        return f"RowConcat({self.dtype} {list(self.shape)} over {len(self.parts)} blocks)"

    # ---- reading rows
    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            part = int(torch.searchsorted(self.starts[1:], torch.tensor(i), right=True))
            return self.parts[part][i - int(self.starts[part])]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[torch.tensor(range(start, stop, step), dtype=torch.long)]
            pieces = []
            for part, block in enumerate(self.parts):
                lo, hi = int(self.starts[part]), int(self.starts[part + 1])
                a, b = max(start, lo), min(stop, hi)
                if a < b:
                    pieces.append(block[a - lo:b - lo])
            if len(pieces) == 1:
                return pieces[0]  # inside one block: a view
            return torch.cat(pieces) if pieces else self.parts[0][:0]
        if isinstance(key, tuple):
            raise TypeError("RowConcat reads whole rows: index it with one row, a slice or a list of rows")
        rows = torch.as_tensor(key)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        rows = rows.long().reshape(-1)  # [B]
        if len(rows) == 0:
            return self.parts[0][:0]
        low, high = (int(v) for v in torch.aminmax(rows))
        if low < -len(self) or high >= len(self):
            raise IndexError(f"rows out of range for {len(self)} rows")
        if low < 0:
            rows = torch.where(rows < 0, rows + len(self), rows)
            low, high = (int(v) for v in torch.aminmax(rows))
        bounds = self._bounds
        for part, (lo, hi) in enumerate(bounds):  # the common cases: every row in one block
            if lo <= low and high < hi:
                return self.parts[part].index_select(0, rows - lo) if lo else self.parts[part].index_select(0, rows)
        out = torch.empty((len(rows), *self.shape[1:]), dtype=self.dtype, device=self.device)
        for part, (lo, hi) in enumerate(bounds):
            if hi <= low or lo > high:
                continue
            where = ((rows >= lo) & (rows < hi)).nonzero().squeeze(1)  # [b] positions in the batch
            if len(where):
                out.index_copy_(0, where, self.parts[part].index_select(0, rows.index_select(0, where) - lo))
        return out


__all__ = ["RowConcat"]
