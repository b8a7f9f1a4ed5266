"""Tables from CSV files with a header row: one label column, the chosen feature columns
(``features``, or every other column but those in ``drop``), an optional unlabeled file, and
the missing-value and normalisation steps of :mod:`mtkd.data.preprocess`."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import DataSplits
from .preprocess import Missing, Normalize, refuse_missing
from .tables import make_splits, select_columns

MISSING_TEXT = {"", "na", "nan", "null", "none", "?"}  # cells read as missing (case-insensitive)


class CsvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["csv"] = "csv"
    train: Path = Field(description="CSV file of training rows")
    test: Path = Field(description="CSV file of test rows")
    unlabeled: Path | None = Field(None, description="CSV file of unlabeled rows (the label column may be absent)")
    label: str = Field("label", description="name of the label column")
    features: list[str] | None = Field(None, description="feature columns (default: every column but the label)")
    drop: list[str] = Field([], description="columns that are not features (an id, a date, ...)")
    normalize: Normalize = Field("standard", description="feature scaling, statistics from the training split")
    missing: Missing = Field("error", description="empty cells: an error, or the training split's mean/median")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0


def read_table(path: Path, label: str | None, features: list[str] | None, drop: list[str],
               label_required: bool = True) -> tuple[list[str], np.ndarray, list[str] | None]:
    """(feature columns, x [N, F] float32 with NaN for empty cells, label strings or None)."""
    if not path.is_file():
        raise MtkdError(f"data: CSV file not found: {path}")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise MtkdError(f"data: {path} is empty")
    header, body = rows[0], rows[1:]
    has_label = label is not None and label in header
    if label_required and not has_label:
        raise MtkdError(f"data.label: column {label!r} not in {path}; columns are {header}")
    cols = select_columns(header, label, features, drop, str(path))
    where = [header.index(c) for c in cols]
    x = np.empty((len(body), len(cols)), dtype=np.float32)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise MtkdError(f"data: {path} row {r + 1} (line {r + 2}) has {len(row)} cells, the header {len(header)}")
        for j, c in enumerate(where):
            text = row[c].strip()
            if text.lower() in MISSING_TEXT:
                x[r, j] = math.nan
                continue
            try:
                x[r, j] = float(text)
            except ValueError:
                raise MtkdError(f"data: {path} row {r + 1} (line {r + 2}), column {cols[j]!r}: {text!r} is not a "
                                "number; drop the column (data.drop) or fix the cell") from None
    labels = [row[header.index(label)] for row in body] if has_label else None
    return cols, x, labels


def load(cfg: CsvConfig) -> DataSplits:
    feats_tr, x_tr, lab_tr = read_table(cfg.train, cfg.label, cfg.features, cfg.drop)
    feats_te, x_te, lab_te = read_table(cfg.test, cfg.label, cfg.features, cfg.drop)
    if feats_tr != feats_te:
        raise MtkdError(f"data: train and test CSV columns differ: {feats_tr} vs {feats_te}")
    x_unl = None
    if cfg.unlabeled is not None:
        feats_un, x_unl, _ = read_table(cfg.unlabeled, cfg.label, cfg.features or feats_tr, [], label_required=False)
        if feats_un != feats_tr:
            raise MtkdError(f"data.unlabeled: its columns {feats_un} differ from the training file's {feats_tr}")
    if cfg.missing == "error":  # name the file, row and column of the first empty cell
        refuse_missing(feats_tr, [(cfg.train, x_tr), (cfg.test, x_te), (cfg.unlabeled, x_unl)], csv_lines=True)
    # integer labels keep their value; anything else is mapped in sorted order (tables.label_names)
    return make_splits("csv", x_tr, lab_tr, x_te, lab_te, cfg.val_fraction, cfg.seed, x_unl=x_unl,
                       prep=(feats_tr, cfg.normalize, cfg.missing))
