"""Images in class folders, read with Pillow: ``ROOT/train/<class>/*.png`` and
``ROOT/test/<class>/*.png`` (any format Pillow opens). The class of an image is the name of
its folder; images are resized to ``size`` and scaled to [0, 1], as [channels, H, W]."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import DataSplits
from .lazy_images import decode
from .tables import label_names, make_splits

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageFolderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["images"] = "images"
    root: Path = Field(description="folder with train/ and test/, each holding one folder per class")
    size: tuple[int, int] | None = Field(None, description="[height, width] to resize to (default: the first image's)")
    mode: Literal["L", "RGB"] = Field("L", description="L: grayscale, 1 channel; RGB: 3 channels")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    augment: list[dict] | None = Field(None, description="torchvision.transforms.v2 transforms for training batches, "
                                       "e.g. [{RandomHorizontalFlip: {}}] (extra: vision)")
    workers: int | None = Field(None, ge=0, le=64, description="decode images lazily, a batch at a time, in this many "
                                "DataLoader worker processes (0: in the training process); null: decode all at load")
    seed: int = 0


def _files(folder: Path, root: Path) -> tuple[list[Path], list[str], list[str]]:
    """Image files, their labels (folder names) and the sorted class names of one split."""
    if not folder.is_dir():
        raise MtkdError(f"data.root: folder not found: {folder} (expected {root}/train and {root}/test)")
    classes = label_names([p.name for p in folder.iterdir() if p.is_dir()])  # "2" before "10"
    files, labels = [], []
    for name in classes:
        for path in sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in EXTENSIONS):
            files.append(path)
            labels.append(name)
    if not files:
        raise MtkdError(f"data: no images in the class folders of {folder}")
    return files, labels, classes


def _read(folder: Path, cfg: ImageFolderConfig, size):
    from ..optional import require

    image = require("PIL.Image", "images", "data set 'images'")
    files, labels, classes = _files(folder, cfg.root)
    if cfg.workers is not None:  # kept encoded: decoded a batch at a time by the training loader
        from .lazy_images import LazyImages, check_readable, first_size

        check_readable(files, "data")
        size = first_size(files, size)
        return LazyImages([str(f) for f in files], cfg.mode, size), labels, classes, size
    arrays = []
    for path in files:
        arrays.append(decode(image, path, cfg.mode, size))
        size = arrays[-1].shape[1:]
    return np.stack(arrays), labels, classes, size


def load(cfg: ImageFolderConfig) -> DataSplits:
    x_tr, lab_tr, classes, size = _read(cfg.root / "train", cfg, cfg.size)
    x_te, lab_te, _, _ = _read(cfg.root / "test", cfg, size)
    data = make_splits("images", x_tr, lab_tr, x_te, lab_te, cfg.val_fraction, cfg.seed, names=classes)
    data.workers = cfg.workers
    return data
