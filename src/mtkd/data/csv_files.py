"""Tables from CSV files with a header row: one label column, every other column a numeric feature."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import DataSplits
from .tables import make_splits


class CsvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["csv"] = "csv"
    train: Path = Field(description="CSV file of training rows")
    test: Path = Field(description="CSV file of test rows")
    label: str = Field("label", description="name of the label column")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0


def _read(path: Path, label: str) -> tuple[list[str], np.ndarray, list[str]]:
    if not path.is_file():
        raise MtkdError(f"data: CSV file not found: {path}")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise MtkdError(f"data: {path} is empty")
    header, body = rows[0], rows[1:]
    if label not in header:
        raise MtkdError(f"data.label: column {label!r} not in {path}; columns are {header}")
    col = header.index(label)
    features = [h for i, h in enumerate(header) if i != col]
    try:
        x = np.array([[float(v) for i, v in enumerate(r) if i != col] for r in body], dtype=np.float32)
    except ValueError as exc:
        raise MtkdError(f"data: {path} has a non-numeric feature value ({exc})") from exc
    return features, x, [r[col] for r in body]


def load(cfg: CsvConfig) -> DataSplits:
    feats_tr, x_tr, lab_tr = _read(cfg.train, cfg.label)
    feats_te, x_te, lab_te = _read(cfg.test, cfg.label)
    if feats_tr != feats_te:
        raise MtkdError(f"data: train and test CSV columns differ: {feats_tr} vs {feats_te}")
    # integer labels keep their value; anything else is mapped in sorted order (tables.label_names)
    return make_splits("csv", x_tr, lab_tr, x_te, lab_te, cfg.val_fraction, cfg.seed)
