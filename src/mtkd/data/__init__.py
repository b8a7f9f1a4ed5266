"""Built-in data sets: name -> (config schema, loader, one-line description)."""
from __future__ import annotations

from typing import Callable, NamedTuple

from pydantic import BaseModel

from . import csv_files, digits, mnist1d, npz_file
from .base import UNLABELED, BatchLoader, DataSplits, IndexedTensorDataset


class DataEntry(NamedTuple):
    config: type[BaseModel]
    load: Callable[..., DataSplits]
    description: str


DATASETS: dict[str, DataEntry] = {
    "mnist1d": DataEntry(mnist1d.Mnist1dConfig, mnist1d.load,
                         "MNIST-1D signals (length 40, 10 classes), generated offline; optional unlabeled pool"),
    "digits": DataEntry(digits.DigitsConfig, digits.load, "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)"),
    "npz": DataEntry(npz_file.NpzConfig, npz_file.load, "arrays x_train/y_train/x_test/y_test (+x_unlabeled) from a .npz file"),
    "csv": DataEntry(csv_files.CsvConfig, csv_files.load, "train/test CSV files with a header and one label column"),
}


def load_data(cfg: BaseModel) -> DataSplits:
    return DATASETS[cfg.name].load(cfg)


__all__ = ["DATASETS", "UNLABELED", "BatchLoader", "DataSplits", "IndexedTensorDataset", "load_data"]
