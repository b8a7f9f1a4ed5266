"""A Hugging Face ``datasets`` DatasetDict saved with ``save_to_disk``, read offline with
pyarrow alone (the ``datasets`` package is not needed to read it).

The directory holds ``dataset_dict.json`` and one folder per split with ``state.json``
(its Arrow files) and ``dataset_info.json`` (its features). A ``ClassLabel`` label column
gives the class names; any other label column is used by value. Feature columns are numbers
or fixed-length lists of numbers (flattened); ``shape`` reshapes each row (e.g. [1, 28, 28]).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import DataSplits
from .tables import columns_to_array, make_splits


class HfDiskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["hf_disk"] = "hf_disk"
    path: Path = Field(description="directory written by DatasetDict.save_to_disk")
    train_split: str = "train"
    test_split: str = "test"
    label: str = Field("label", description="name of the label column")
    features: list[str] | None = Field(None, description="feature columns (default: every other column)")
    shape: list[int] | None = Field(None, description="shape of one sample (default: flat)")
    text: str | None = Field(None, description="a text column to tokenize into token ids (with 'tokenizer')")
    tokenizer: Path | None = Field(None, description="directory of a saved Hugging Face tokenizer (extra: hf)")
    max_length: int = Field(64, gt=0, description="token ids per sample (padded or truncated)")
    image: str | None = Field(None, description="an image column (datasets' Image feature) decoded with Pillow "
                              "to [channels, H, W] in [0, 1] (extra: images)")
    size: tuple[int, int] | None = Field(None, description="[height, width] images are resized to "
                                         "(default: the first image's)")
    mode: Literal["L", "RGB"] = Field("RGB", description="image column: L grayscale, RGB 3 channels")
    augment: list[dict] | None = Field(None, description="torchvision.transforms.v2 transforms for training "
                                       "batches of an image column (extra: vision)")
    workers: int | None = Field(None, ge=0, le=64, description="image column: keep the images encoded and decode "
                                "them a batch at a time in this many DataLoader worker processes (0: in the "
                                "training process); null: decode all at load")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0


def _read_split(cfg: HfDiskConfig, split: str):
    from ..optional import require

    pa = require("pyarrow", "parquet", "data set 'hf_disk'")
    folder = cfg.path / split
    try:
        state = json.loads((folder / "state.json").read_text())
        info = json.loads((folder / "dataset_info.json").read_text())
    except (OSError, ValueError) as exc:
        splits = sorted(p.name for p in cfg.path.iterdir() if (p / "state.json").is_file()) if cfg.path.is_dir() else []
        raise MtkdError(f"data: {folder} is not a split saved by datasets' save_to_disk ({exc.__class__.__name__}); "
                        f"splits found in {cfg.path}: {splits}") from None
    tables = []
    for entry in state.get("_data_files", []):
        # the table's buffers point into the memory map, which stays open as long as they live
        tables.append(pa.ipc.open_stream(pa.memory_map(str(folder / entry["filename"]))).read_all())
    if not tables:
        raise MtkdError(f"data: {folder} lists no Arrow files in state.json")
    table = pa.concat_tables(tables)
    if cfg.label not in table.column_names:
        raise MtkdError(f"data.label: column {cfg.label!r} not in {folder}; columns are {table.column_names}")
    if cfg.text is not None:  # token ids [N, max_length] from the tokenizer of the Hugging Face teachers
        from .tokens import encode, load_tokenizer

        if cfg.text not in table.column_names or cfg.tokenizer is None:
            raise MtkdError(f"data.text: needs a text column of {folder} (columns: {table.column_names}) "
                            "and data.tokenizer, the directory of a saved tokenizer")
        x = encode(load_tokenizer(cfg.tokenizer, "data.tokenizer"), table.column(cfg.text).to_pylist(),
                   cfg.max_length).numpy()
    elif cfg.image is not None:  # datasets' Image feature: {"bytes": ..., "path": ...} per row
        import io

        from ..teachers.external import require
        from .lazy_images import decode

        if cfg.image not in table.column_names:
            raise MtkdError(f"data.image: column {cfg.image!r} not in {folder}; columns are {table.column_names}")
        image, size, rows, sources = require("PIL.Image", "images", "data.image"), cfg.size, [], []
        for cell in table.column(cfg.image).to_pylist():
            if not isinstance(cell, dict) or not (cell.get("bytes") or cell.get("path")):
                raise MtkdError(f"data.image: column {cfg.image!r} of {folder} is not an image column")
            sources.append(bytes(cell["bytes"]) if cell.get("bytes") else str(cell["path"]))
        if cfg.workers is not None:  # kept encoded: decoded a batch at a time by the training loader
            from .lazy_images import LazyImages, check_readable, first_size

            check_readable(sources, "data.image")
            x = LazyImages(sources, cfg.mode, first_size(sources, cfg.size))
        else:
            for src in sources:
                rows.append(decode(image, io.BytesIO(src) if isinstance(src, bytes) else src, cfg.mode, size))
                size = rows[-1].shape[1:]
            x = np.stack(rows)  # [N, C, H, W]
    else:
        features = cfg.features or [c for c in table.column_names if c != cfg.label]
        missing = [c for c in features if c not in table.column_names]
        if missing:
            raise MtkdError(f"data.features: columns {missing} not in {folder}; columns are {table.column_names}")
        x = columns_to_array({c: table.column(c).to_pylist() for c in features}, features, f"data ({folder})")
    label_info = info.get("features", {}).get(cfg.label, {})
    names = label_info.get("names") if label_info.get("_type") == "ClassLabel" else None
    raw = table.column(cfg.label).to_pylist()
    if names:
        # ClassLabel -1 means "no label" (e.g. GLUE test splits); names[-1] would silently be the last class
        bad = sorted({v for v in raw if not (isinstance(v, int) and 0 <= v < len(names))}, key=str)
        if bad:
            raise MtkdError(f"data: split {split!r} of {cfg.path} has labels {bad[:5]} outside its ClassLabel "
                            f"0..{len(names) - 1} (-1 marks an unlabeled row); use a labeled split for "
                            "data.train_split / data.test_split")
    labels = [names[v] for v in raw] if names else [str(v) for v in raw]
    return x, labels, names


def load(cfg: HfDiskConfig) -> DataSplits:
    x_tr, lab_tr, names = _read_split(cfg, cfg.train_split)
    x_te, lab_te, _ = _read_split(cfg, cfg.test_split)
    if cfg.image is not None:  # [N, C, H, W]; test images at the train images' size
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise MtkdError(f"data: train and test images differ ({list(x_tr.shape[1:])} vs {list(x_te.shape[1:])}); "
                            "set data.size")
        data = make_splits("hf_disk", x_tr, lab_tr, x_te, lab_te, cfg.val_fraction, cfg.seed, names=names)
        data.workers = cfg.workers
        return data
    if cfg.workers is not None:
        raise MtkdError("data.workers: lazily decoded batches need an image column (data.image)")
    if x_tr.shape[1] != x_te.shape[1]:
        raise MtkdError(f"data: train and test samples differ in size ({x_tr.shape[1]} vs {x_te.shape[1]} values)")
    if cfg.shape:
        import math

        if math.prod(cfg.shape) != x_tr.shape[1]:
            raise MtkdError(f"data.shape: {cfg.shape} holds {math.prod(cfg.shape)} values, a sample has {x_tr.shape[1]}")
        x_tr, x_te = x_tr.reshape(len(x_tr), *cfg.shape), x_te.reshape(len(x_te), *cfg.shape)
    return make_splits("hf_disk", x_tr, lab_tr, x_te, lab_te, cfg.val_fraction, cfg.seed, names=names)
