"""Tables from Parquet files (read with pyarrow): one label column, the other columns numeric
features (a column of fixed-length number lists is flattened into several features)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import DataSplits
from .tables import columns_to_array, make_splits


class ParquetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["parquet"] = "parquet"
    train: Path = Field(description="Parquet file of training rows")
    test: Path = Field(description="Parquet file of test rows")
    label: str = Field("label", description="name of the label column")
    features: list[str] | None = Field(None, description="feature columns (default: every other column)")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0


def _read(path: Path, cfg: ParquetConfig):
    from ..optional import require

    pq = require("pyarrow.parquet", "parquet", "data set 'parquet'")
    if not path.is_file():
        raise MtkdError(f"data: Parquet file not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types
        raise MtkdError(f"data: {path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    if cfg.label not in table.column_names:
        raise MtkdError(f"data.label: column {cfg.label!r} not in {path}; columns are {table.column_names}")
    features = cfg.features or [c for c in table.column_names if c != cfg.label]
    missing = [c for c in features if c not in table.column_names]
    if missing:
        raise MtkdError(f"data.features: columns {missing} not in {path}; columns are {table.column_names}")
    columns = {c: table.column(c).to_pylist() for c in features}
    labels = [str(v) for v in table.column(cfg.label).to_pylist()]
    return features, columns_to_array(columns, features, f"data ({path})"), labels


def load(cfg: ParquetConfig) -> DataSplits:
    feats_tr, x_tr, lab_tr = _read(cfg.train, cfg)
    feats_te, x_te, lab_te = _read(cfg.test, cfg)
    if feats_tr != feats_te or x_tr.shape[1] != x_te.shape[1]:
        raise MtkdError(f"data: train and test Parquet columns differ: {feats_tr} vs {feats_te}")
    return make_splits("parquet", x_tr, lab_tr, x_te, lab_te, cfg.val_fraction, cfg.seed)
