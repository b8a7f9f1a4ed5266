"""Data larger than memory: a directory of ``.npy`` files opened memory-mapped.

    data: {name: arrays, path: data/big}

``DIR/x_train.npy`` [N, ...] float32, ``y_train.npy`` [N] integer labels, ``x_test.npy``,
``y_test.npy``, optionally ``x_val.npy`` + ``y_val.npy`` (else the last ``val_fraction`` of the
training rows are the validation split) and ``x_unlabeled.npy``. Inputs are opened with
``numpy.load(mmap_mode="r")``: the operating system reads the pages a batch touches and keeps
them in its page cache; nothing copies a whole array into the process's memory (labels, 8 bytes
a sample, are read whole). Train and validation rows are views of the same map.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import UNLABELED, DataSplits, IndexedTensorDataset


class ArraysConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["arrays"] = "arrays"
    path: Path = Field(description="directory holding x_train.npy y_train.npy x_test.npy y_test.npy")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="the last rows of x_train held out for validation "
                                "(when there is no x_val.npy)")


def open_inputs(file: Path) -> torch.Tensor:
    """A float32 ``.npy`` file as a tensor over its read-only memory map (no copy)."""
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MtkdError(f"data.path: {file} cannot be read as a .npy array ({exc})") from None
    if array.dtype != np.float32 or array.ndim < 2:
        raise MtkdError(f"data.path: {file} holds {array.dtype} {list(array.shape)}; inputs must be float32 "
                        "[N, ...] so they can be read memory-mapped (convert with np.save(path, x.astype('float32')))")
    with warnings.catch_warnings():  # the map is read-only; mtkd never writes to its inputs
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _labels(file: Path, n: int) -> torch.Tensor:
    y = np.load(file, allow_pickle=False)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise MtkdError(f"data.path: {file} holds {y.dtype} {list(y.shape)}; expected {n} integer labels")
    return torch.from_numpy(y.astype(np.int64))


def load(cfg: ArraysConfig) -> DataSplits:
    d = cfg.path
    missing = [f for f in ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy") if not (d / f).is_file()]
    if missing:
        raise MtkdError(f"data.path: {d} lacks {missing}; an arrays data set is a directory of "
                        "x_train.npy y_train.npy x_test.npy y_test.npy [x_val.npy y_val.npy] [x_unlabeled.npy]")
    x, x_test = open_inputs(d / "x_train.npy"), open_inputs(d / "x_test.npy")
    y, y_test = _labels(d / "y_train.npy", len(x)), _labels(d / "y_test.npy", len(x_test))
    if x.shape[1:] != x_test.shape[1:]:
        raise MtkdError(f"data.path: x_train samples have shape {tuple(x.shape[1:])}, x_test samples "
                        f"{tuple(x_test.shape[1:])}; they must match")
    if (d / "x_val.npy").is_file():
        x_val = open_inputs(d / "x_val.npy")
        val = IndexedTensorDataset(x_val, _labels(d / "y_val.npy", len(x_val)))
        train = IndexedTensorDataset(x, y)
    else:  # slices of the map are views: no copy (a random split would gather, i.e. copy, the rows)
        n_val = int(round(len(x) * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
        cut = len(x) - n_val
        train = IndexedTensorDataset(x[:cut], y[:cut])
        val = IndexedTensorDataset(x[cut:], y[cut:]) if n_val else None
    labels = torch.cat([train.y, y_test] + ([val.y] if val is not None else []))
    if int(labels.min()) < 0:
        raise MtkdError("data.path: labels must be integers 0..C-1")
    num_classes = int(labels.max()) + 1
    unlabeled = None
    if (d / "x_unlabeled.npy").is_file():
        x_unl = open_inputs(d / "x_unlabeled.npy")
        unlabeled = IndexedTensorDataset(x_unl, torch.full((len(x_unl),), UNLABELED),
                                         torch.arange(len(train), len(train) + len(x_unl)))
    return DataSplits("arrays", train, IndexedTensorDataset(x_test, y_test), val, unlabeled,
                      num_classes=num_classes, input_shape=tuple(x.shape[1:]),
                      class_names=[str(i) for i in range(num_classes)])
