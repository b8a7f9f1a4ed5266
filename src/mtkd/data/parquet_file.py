"""Tables from Parquet files (read with pyarrow): one label column, the other columns numeric
features (a column of fixed-length number lists is flattened into several features)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import DataSplits
from .preprocess import Missing, Normalize, refuse_missing
from .tables import columns_to_array, make_splits, select_columns


class ParquetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["parquet"] = "parquet"
    train: Path = Field(description="Parquet file of training rows")
    test: Path = Field(description="Parquet file of test rows")
    unlabeled: Path | None = Field(None, description="Parquet file of unlabeled rows (the label column may be absent)")
    label: str = Field("label", description="name of the label column")
    features: list[str] | None = Field(None, description="feature columns (default: every other column)")
    drop: list[str] = Field([], description="columns that are not features (an id, a date, ...)")
    normalize: Normalize = Field("standard", description="feature scaling, statistics from the training split")
    missing: Missing = Field("error", description="empty cells: an error, or the training split's mean/median")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0


def _read(path: Path, cfg: ParquetConfig, label_required: bool = True):
    from ..optional import require

    pq = require("pyarrow.parquet", "parquet", "data set 'parquet'")
    if not path.is_file():
        raise MtkdError(f"data: Parquet file not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types
        raise MtkdError(f"data: {path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    has_label = cfg.label in table.column_names
    if label_required and not has_label:
        raise MtkdError(f"data.label: column {cfg.label!r} not in {path}; columns are {table.column_names}")
    features = select_columns(table.column_names, cfg.label, cfg.features, cfg.drop, str(path))
    columns = {c: table.column(c).to_pylist() for c in features}
    labels = [str(v) for v in table.column(cfg.label).to_pylist()] if has_label else None
    return features, columns_to_array(columns, features, f"data ({path})"), labels


def load(cfg: ParquetConfig) -> DataSplits:
    feats_tr, x_tr, lab_tr = _read(cfg.train, cfg)
    feats_te, x_te, lab_te = _read(cfg.test, cfg)
    if feats_tr != feats_te or x_tr.shape[1] != x_te.shape[1]:
        raise MtkdError(f"data: train and test Parquet columns differ: {feats_tr} vs {feats_te}")
    x_unl = None
    if cfg.unlabeled is not None:
        feats_un, x_unl, _ = _read(cfg.unlabeled, cfg, label_required=False)
        if feats_un != feats_tr or x_unl.shape[1] != x_tr.shape[1]:
            raise MtkdError(f"data.unlabeled: its columns {feats_un} differ from the training file's {feats_tr}")
    # a column of number lists becomes several features: statistics are per flattened feature
    columns = feats_tr if x_tr.shape[1] == len(feats_tr) else [f"f{j}" for j in range(x_tr.shape[1])]
    if cfg.missing == "error":
        refuse_missing(columns, [(cfg.train, x_tr), (cfg.test, x_te), (cfg.unlabeled, x_unl)])
    return make_splits("parquet", x_tr, lab_tr, x_te, lab_te, cfg.val_fraction, cfg.seed, x_unl=x_unl,
                       prep=(columns, cfg.normalize, cfg.missing))
