"""Preprocessing of table features: missing-value filling and normalisation, with statistics
from the training split only, stored with the student so prediction applies the same steps.

    x_filled = x where present, else fill[j]          (missing: mean | median of the training split)
    x_input  = (x_filled - shift[j]) / scale[j]        (normalize: standard -> shift = mean, scale = std;
                                                         minmax -> shift = min, scale = max - min)

A column that is constant in the training split gets scale 1 (it becomes 0, or stays constant).
``Preprocessing.module()`` is the same computation as an ``nn.Module`` (``isnan``/``where``, a
subtraction, a division): it exports to ONNX and TorchScript with the student.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import MtkdError

Normalize = Literal["standard", "minmax", "none"]
Missing = Literal["error", "mean", "median"]


@dataclass
class Preprocessing:
    columns: list[str]  # feature columns, in the order the model sees them
    normalize: str = "none"
    missing: str = "error"
    fill: list[float] | None = None  # per column; None when missing values are an error
    shift: list[float] | None = None  # per column; None when normalize is none
    scale: list[float] | None = None

    @property
    def active(self) -> bool:
        """Whether it changes anything (a run without it stores None)."""
        return self.fill is not None or self.shift is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Preprocessing | None":
        return cls(**d) if d else None

    def check_missing(self, x: np.ndarray, where: str, csv_lines: bool = False) -> None:
        """With ``missing: error``: refuse a missing cell, naming its row (1 = the first data row;
        ``csv_lines``: also the file's line, the header being line 1) and column."""
        if self.fill is not None:
            return
        bad = np.argwhere(np.isnan(x))
        if len(bad):
            row, col = int(bad[0][0]) + 1, int(bad[0][1])
            line = f" (line {row + 1})" if csv_lines else ""
            raise MtkdError(f"{where}: row {row}{line}, column {self.columns[col]!r} is empty "
                            f"({len(bad)} empty cell(s) in all); fill it, or set data.missing: mean or median")

    def transform(self, x: np.ndarray, where: str, csv_lines: bool = False) -> np.ndarray:
        """Raw feature rows [N, F] (NaN = missing) -> the model's inputs [N, F] (float32)."""
        x = np.asarray(x, dtype=np.float32)
        self.check_missing(x, where, csv_lines)
        if self.fill is not None:
            x = np.where(np.isnan(x), np.asarray(self.fill, dtype=np.float32), x)
        if self.shift is not None:
            x = (x - np.asarray(self.shift, dtype=np.float32)) / np.asarray(self.scale, dtype=np.float32)
        return x.astype(np.float32)

    def module(self) -> "PreprocessModule":
        return PreprocessModule(self)


def refuse_missing(columns: Sequence[str], files, csv_lines: bool = False) -> None:
    """``missing: error``: the first empty cell of any of ``files`` [(path, x [N, F] or None)], named."""
    check = Preprocessing(list(columns))
    for path, x in files:
        if x is not None:
            check.check_missing(x, f"data: {path}", csv_lines)


def fit(x_train: np.ndarray, columns: Sequence[str], normalize: str, missing: str) -> Preprocessing:
    """Statistics from the training rows ``x_train`` [N, F] (NaN = missing)."""
    x = np.asarray(x_train, dtype=np.float64)
    prep = Preprocessing(list(columns), normalize, missing)
    if missing != "error":
        with np.errstate(all="ignore"):
            fill = np.nanmean(x, axis=0) if missing == "mean" else np.nanmedian(x, axis=0)
        empty = [c for c, v in zip(columns, fill) if np.isnan(v)]
        if empty:
            raise MtkdError(f"data.missing: column {empty[0]!r} has no value in any training row; "
                            "drop it (data.drop) or fill it")
        prep.fill = [float(v) for v in fill]
        x = np.where(np.isnan(x), fill, x)
    if normalize != "none" and not np.isnan(x).any():
        if normalize == "standard":
            shift, scale = x.mean(axis=0), x.std(axis=0)
        else:
            shift, scale = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
        scale = np.where(scale > 0, scale, 1.0)  # a constant column: no division by zero
        prep.shift, prep.scale = [float(v) for v in shift], [float(v) for v in scale]
    return prep


class PreprocessModule(nn.Module):
    """``Preprocessing`` in torch: raw rows [B, F] -> model inputs [B, F]; exportable."""

    def __init__(self, prep: Preprocessing):
        super().__init__()
        f = len(prep.columns)
        self.has_fill = prep.fill is not None
        self.register_buffer("fill", torch.tensor(prep.fill if prep.fill is not None else [0.0] * f))
        self.register_buffer("shift", torch.tensor(prep.shift if prep.shift is not None else [0.0] * f))
        self.register_buffer("scale", torch.tensor(prep.scale if prep.scale is not None else [1.0] * f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_fill:
            x = torch.where(torch.isnan(x), self.fill, x)
        return (x - self.shift) / self.scale


class RawInputs(nn.Module):
    """The inverse of the normalisation: model inputs [B, F] -> the raw columns (missing cells
    filled) for a teacher that was trained on raw columns (a ``kind:`` teacher, see the docs)."""

    def __init__(self, prep: Preprocessing):
        super().__init__()
        f = len(prep.columns)
        self.register_buffer("shift", torch.tensor(prep.shift if prep.shift is not None else [0.0] * f))
        self.register_buffer("scale", torch.tensor(prep.scale if prep.scale is not None else [1.0] * f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.device) + self.shift.to(x.device)
