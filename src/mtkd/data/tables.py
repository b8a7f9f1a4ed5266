"""Shared by the table readers (Parquet, Hugging Face ``datasets`` on disk): label values to
class indices, and train/test arrays to :class:`DataSplits`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import MtkdError
from .base import DataSplits, IndexedTensorDataset, split_off


def label_names(values: Sequence[str]) -> list[str]:
    """Sorted class names: integers by value (so "10" follows "9"), then other strings."""
    def key(s: str):
        digits = s.lstrip("-").isdigit()
        return (not digits, int(s) if digits else 0, s)

    return sorted(set(values), key=key)


def make_splits(name: str, x_tr: np.ndarray, lab_tr: list[str], x_te: np.ndarray, lab_te: list[str],
                val_fraction: float, seed: int, names: list[str] | None = None) -> DataSplits:
    """Arrays [N, ...] and label strings -> splits; ``names`` fixes the class order (else sorted)."""
    if not names:  # the classes are the training labels: only test labels can be unknown
        names = label_names(lab_tr)
        unknown = sorted(set(lab_te) - set(names))
        if unknown:
            raise MtkdError(f"data: test labels {unknown[:5]} never occur in the training rows")
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(lab_te) - set(lookup)) + sorted(set(lab_tr) - set(lookup))
    if unknown:
        raise MtkdError(f"data: labels {unknown[:5]} are not among the classes {names[:10]}")
    train = IndexedTensorDataset(torch.as_tensor(np.asarray(x_tr, dtype=np.float32)),
                                 torch.tensor([lookup[v] for v in lab_tr], dtype=torch.long))
    test = IndexedTensorDataset(torch.as_tensor(np.asarray(x_te, dtype=np.float32)),
                                torch.tensor([lookup[v] for v in lab_te], dtype=torch.long))
    train, val = split_off(train, val_fraction, seed)
    return DataSplits(name, train, test, val, None, num_classes=len(names), input_shape=tuple(train.x.shape[1:]),
                      class_names=list(names))


def columns_to_array(columns: dict, names: list[str], where: str) -> np.ndarray:
    """Numeric columns (numbers, or fixed-length lists of numbers, flattened) -> [N, features]."""
    parts = []
    for name in names:
        try:
            col = np.asarray(columns[name], dtype=np.float32)
        except (ValueError, TypeError):
            raise MtkdError(f"{where}: column {name!r} is not numeric (or its lists differ in length); "
                            "choose numeric feature columns") from None
        parts.append(col.reshape(len(col), -1))
    if not parts:
        raise MtkdError(f"{where}: no feature columns")
    return np.concatenate(parts, axis=1)
