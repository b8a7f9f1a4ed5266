"""Arrays from a NumPy ``.npz`` file: ``x_train``, ``y_train``, ``x_test``, ``y_test``
(optionally ``x_unlabeled`` and ``class_names``)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import UNLABELED, DataSplits, IndexedTensorDataset, as_tensors, split_off

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


class NpzConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["npz"] = "npz"
    path: Path = Field(description="the .npz file")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = Field(0, description="seed of the validation split")


def load(cfg: NpzConfig) -> DataSplits:
    if not cfg.path.is_file():
        raise MtkdError(f"data.path: file not found: {cfg.path}")
    # allow_pickle=False: an .npz with object arrays could run code when loaded
    with np.load(cfg.path, allow_pickle=False) as arrays:
        missing = [k for k in REQUIRED if k not in arrays]
        if missing:
            raise MtkdError(f"data.path: {cfg.path} lacks arrays {missing}; it holds {sorted(arrays.keys())}")
        train = IndexedTensorDataset(*as_tensors(arrays["x_train"], arrays["y_train"]))
        test = IndexedTensorDataset(*as_tensors(arrays["x_test"], arrays["y_test"]))
        x_unl = arrays["x_unlabeled"] if "x_unlabeled" in arrays else None
        names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    if train.x.shape[1:] != test.x.shape[1:]:
        raise MtkdError(f"data.path: x_train samples have shape {tuple(train.x.shape[1:])}, "
                        f"x_test samples {tuple(test.x.shape[1:])}; they must match")
    num_classes = int(max(train.y.max(), test.y.max())) + 1
    if int(min(train.y.min(), test.y.min())) < 0:
        raise MtkdError("data.path: labels must be integers 0..C-1")
    train, val = split_off(train, cfg.val_fraction, cfg.seed)
    unlabeled = None
    if x_unl is not None:
        x = torch.as_tensor(np.asarray(x_unl, dtype=np.float32))
        unlabeled = IndexedTensorDataset(x, torch.full((len(x),), UNLABELED), torch.arange(len(train), len(train) + len(x)))
    return DataSplits("npz", train, test, val, unlabeled, num_classes=len(names) if names else num_classes,
                      input_shape=tuple(train.x.shape[1:]), class_names=names or [str(i) for i in range(num_classes)])
