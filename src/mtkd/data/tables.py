"""Shared by the table readers (Parquet, Hugging Face ``datasets`` on disk): label values to
class indices, and train/test arrays to :class:`DataSplits`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import MtkdError
from .base import UNLABELED, DataSplits, IndexedTensorDataset, split_off


def label_names(values: Sequence[str]) -> list[str]:
    """Sorted class names: integers by value (so "10" follows "9"), then other strings."""
    def key(s: str):
        digits = s.lstrip("-").isdigit()
        return (not digits, int(s) if digits else 0, s)

    return sorted(set(values), key=key)


def _inputs(x):
    """An array [N, ...] as a float32 tensor; lazily decoded images (``LazyImages``) as they are."""
    return x if getattr(x, "decoded_on_read", False) else torch.as_tensor(np.asarray(x, dtype=np.float32))


def make_splits(name: str, x_tr: np.ndarray, lab_tr: list[str], x_te: np.ndarray, lab_te: list[str],
                val_fraction: float, seed: int, names: list[str] | None = None, x_unl: np.ndarray | None = None,
                prep: tuple[list[str], str, str] | None = None) -> DataSplits:
    """Arrays [N, ...] and label strings -> splits; ``names`` fixes the class order (else sorted).

    x_unl: an unlabeled pool [M, ...]. prep: (feature columns, normalize, missing) of a table: the
    statistics are fitted on the training split (after the validation rows are split off) and
    applied to every split; missing cells are NaN until then."""
    if not names:  # the classes are the training labels: only test labels can be unknown
        names = label_names(lab_tr)
        unknown = sorted(set(lab_te) - set(names))
        if unknown:
            raise MtkdError(f"data: test labels {unknown[:5]} never occur in the training rows")
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(lab_te) - set(lookup)) + sorted(set(lab_tr) - set(lookup))
    if unknown:
        raise MtkdError(f"data: labels {unknown[:5]} are not among the classes {names[:10]}")
    train = IndexedTensorDataset(_inputs(x_tr), torch.tensor([lookup[v] for v in lab_tr], dtype=torch.long))
    test = IndexedTensorDataset(_inputs(x_te), torch.tensor([lookup[v] for v in lab_te], dtype=torch.long))
    train, val = split_off(train, val_fraction, seed)
    unlabeled = None
    if x_unl is not None:
        xu = torch.as_tensor(np.asarray(x_unl, dtype=np.float32))
        unlabeled = IndexedTensorDataset(xu, torch.full((len(xu),), UNLABELED),
                                         torch.arange(len(train), len(train) + len(xu)))
    stored = None
    if prep is not None:  # statistics from the training split only; then the same steps everywhere
        from .preprocess import fit

        p = fit(train.x.numpy(), *prep)
        for part in (train, val, test, unlabeled):
            if part is not None:
                part.x = torch.as_tensor(p.transform(part.x.numpy(), f"data ({name})"))
        stored = p.to_dict()
    return DataSplits(name, train, test, val, unlabeled, num_classes=len(names), input_shape=tuple(train.x.shape[1:]),
                      class_names=list(names), preprocess=stored)


def columns_to_array(columns: dict, names: list[str], where: str) -> np.ndarray:
    """Numeric columns (numbers, or fixed-length lists of numbers, flattened) -> [N, features]."""
    parts = []
    for name in names:
        try:  # a null cell (None) is a missing value, NaN until the missing-value policy
            col = np.asarray([np.nan if v is None else v for v in columns[name]], dtype=np.float32)
        except (ValueError, TypeError):
            raise MtkdError(f"{where}: column {name!r} is not numeric (or its lists differ in length); "
                            "choose numeric feature columns") from None
        parts.append(col.reshape(len(col), -1))
    if not parts:
        raise MtkdError(f"{where}: no feature columns")
    return np.concatenate(parts, axis=1)


def select_columns(header: list[str], label: str | None, features: list[str] | None, drop: list[str],
                   where: str) -> list[str]:
    """The feature columns of a table: ``features`` (in that order), else every column but the
    label and ``drop``. Unknown names are errors with the closest column named."""
    from ..schema import did_you_mean

    for key, names in (("features", features or []), ("drop", drop)):
        unknown = [c for c in names if c not in header]
        if unknown:
            raise MtkdError(f"data.{key}: column {unknown[0]!r} is not in {where}{did_you_mean(unknown[0], header)}; "
                            f"columns are {header}")
    if features:
        if label in features:
            raise MtkdError(f"data.features: {label!r} is the label column; it cannot be a feature")
        return list(features)
    cols = [h for h in header if h != label and h not in drop]
    if not cols:
        raise MtkdError(f"data: {where} has no feature columns left (label {label!r}, drop {drop})")
    return cols
