"""Checks every data set passes once, after loading and before a run directory exists: inputs
finite (NaN or infinity left after a missing-value policy is refused), labels inside the class
range, every split non-empty. Done once per run, in chunks so a memory-mapped data set larger
than memory is read once and never copied whole."""
from __future__ import annotations

import torch

from ..errors import MtkdError
from .base import UNLABELED, DataSplits

CHUNK = 1 << 16  # rows per finite check


def check_splits(data: DataSplits, what: str) -> None:
    if data.num_classes < 1:
        raise MtkdError(f"{what}: no classes found; does the label column hold the labels?")
    splits = [("train", data.train, False), ("test", data.test, False), ("val", data.val, False),
              ("unlabeled", data.unlabeled, True)]
    for split, ds, unlabeled in splits:
        if ds is None:
            continue
        if len(ds) == 0 and split in ("train", "test"):
            raise MtkdError(f"{what}: the {split} split has no samples")
        # lazily decoded images are pixels / 255, always finite: checking them would decode them all
        for start in range(0, 0 if getattr(ds.x, "decoded_on_read", False) else len(ds), CHUNK):
            x = ds.x[start:start + CHUNK]
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                bad = start + int((~torch.isfinite(x.reshape(len(x), -1))).any(1).nonzero()[0, 0])
                raise MtkdError(f"{what}: the {split} split has NaN or infinite inputs (first at sample {bad}); "
                                "fill or drop them (tabular data: data.missing: mean or median)")
        if len(ds) and not unlabeled:
            low, high = int(ds.y.min()), int(ds.y.max())
            if low < 0 or high >= data.num_classes:
                raise MtkdError(f"{what}: the {split} split has labels {low} .. {high}, outside the "
                                f"{data.num_classes} classes 0 .. {data.num_classes - 1}")
        if unlabeled and len(ds) and bool((ds.y != UNLABELED).any()):
            raise MtkdError(f"{what}: the unlabeled pool carries labels")
