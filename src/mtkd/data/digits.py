"""scikit-learn's bundled `digits` (8x8 handwritten digits, 1,797 samples, 10 classes); no download."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import MtkdError
from .base import DataSplits, IndexedTensorDataset, as_tensors, split_off


class DigitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Literal["digits"] = "digits"
    seed: int = Field(0, description="seed of the train/test split")
    test_fraction: float = Field(0.25, gt=0, lt=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    shape: Literal["image", "flat"] = Field("image", description="image: [1, 8, 8]; flat: [64]")
    size: tuple[int, int] | None = Field(None, description="[height, width] to resize the images to (bilinear)")
    augment: list[dict] | None = Field(None, description="torchvision.transforms.v2 transforms for training batches "
                                       "(shape: image; extra: vision)")


def load(cfg: DigitsConfig) -> DataSplits:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MtkdError("data set 'digits' needs scikit-learn: pip install 'mtkd[sklearn]'") from exc
    bunch = load_digits()
    x, y = as_tensors(bunch.data / 16.0, bunch.target)
    if cfg.shape == "image":
        x = x.reshape(-1, 1, 8, 8)
        if cfg.size is not None and tuple(cfg.size) != (8, 8):
            x = torch.nn.functional.interpolate(x, size=tuple(cfg.size), mode="bilinear", align_corners=False)
    elif cfg.size is not None or cfg.augment:
        raise MtkdError("data.size and data.augment need shape: image")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))
    n_test = int(round(len(y) * cfg.test_fraction))
    test = IndexedTensorDataset(x[perm[:n_test]], y[perm[:n_test]])
    train = IndexedTensorDataset(x[perm[n_test:]], y[perm[n_test:]])
    train, val = split_off(train, cfg.val_fraction, cfg.seed)
    return DataSplits("digits", train, test, val, None, num_classes=10, input_shape=tuple(x.shape[1:]),
                      class_names=[str(i) for i in range(10)])
