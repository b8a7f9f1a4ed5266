"""MNIST-1D (Greydanus, 2020, arXiv:2011.14439), generated offline with the `mnist1d` package.

Signals of length 40, 10 classes. ``num_samples`` are split 80/20 into train and
test as in the reference; ``unlabeled`` extra samples are generated from another
seed of the same process and used as an unlabeled transfer pool.
"""
from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .base import UNLABELED, DataSplits, IndexedTensorDataset, as_tensors, split_off


class Mnist1dConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["mnist1d"] = "mnist1d"
    num_samples: int = Field(5000, ge=20, description="labeled samples, split 80/20 into train/test")
    seed: int = Field(0, description="seed of the generator (data, not training)")
    unlabeled: int = Field(0, ge=0, description="size of an extra unlabeled pool")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="fraction of train held out for validation")


def _generate(num_samples: int, seed: int, train_split: float) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_split
    # make_dataset reseeds numpy's and python's global generators; keep the caller's.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def load(cfg: Mnist1dConfig) -> DataSplits:
    data = _generate(cfg.num_samples, cfg.seed, 0.8)
    train = IndexedTensorDataset(*as_tensors(data["x"], data["y"]))
    test = IndexedTensorDataset(*as_tensors(data["x_test"], data["y_test"]))
    train, val = split_off(train, cfg.val_fraction, cfg.seed)
    unlabeled = None
    if cfg.unlabeled:
        # a different seed gives new samples from the same distribution
        pool = _generate(cfg.unlabeled, cfg.seed + 1_000_003, 1.0)
        x = torch.as_tensor(pool["x"], dtype=torch.float32)
        y = torch.full((len(x),), UNLABELED, dtype=torch.long)
        unlabeled = IndexedTensorDataset(x, y, torch.arange(len(train), len(train) + len(x)))
    return DataSplits("mnist1d", train, test, val, unlabeled, num_classes=10, input_shape=(40,),
                      class_names=[str(i) for i in range(10)])
