"""Built-in data sets: name -> (config schema, loader, one-line description)."""
from __future__ import annotations

from typing import Callable, NamedTuple

from pydantic import BaseModel

from . import arrays, csv_files, digits, hf_disk, image_folder, mnist1d, npz_file, parquet_file, text
from .base import UNLABELED, BatchLoader, DataSplits, IndexedTensorDataset
from ..schema import pick, validate


class DataEntry(NamedTuple):
    config: type[BaseModel]
    load: Callable[..., DataSplits]
    description: str


DATASETS: dict[str, DataEntry] = {
    "mnist1d": DataEntry(mnist1d.Mnist1dConfig, mnist1d.load,
                         "MNIST-1D signals (length 40, 10 classes), generated offline; optional unlabeled pool"),
    "digits": DataEntry(digits.DigitsConfig, digits.load, "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)"),
    "npz": DataEntry(npz_file.NpzConfig, npz_file.load, "arrays x_train/y_train/x_test/y_test (+x_unlabeled) from a .npz file"),
    "arrays": DataEntry(arrays.ArraysConfig, arrays.load,
                        "a directory of .npy files (x_train, y_train, x_test, y_test), memory-mapped: data larger than memory"),
    "csv": DataEntry(csv_files.CsvConfig, csv_files.load, "train/test CSV files with a header and one label column"),
    "parquet": DataEntry(parquet_file.ParquetConfig, parquet_file.load,
                         "train/test Parquet files with one label column (extra: parquet)"),
    "images": DataEntry(image_folder.ImageFolderConfig, image_folder.load,
                        "image folders root/{train,test}/<class>/*.png, read with Pillow (extra: images)"),
    "hf_disk": DataEntry(hf_disk.HfDiskConfig, hf_disk.load,
                         "a Hugging Face DatasetDict saved with save_to_disk, read with pyarrow (extra: parquet)"),
    "text": DataEntry(text.TextConfig, text.load,
                      "plain-text or code files by glob in named domains, tokenized and packed for language models "
                      "(extra: hf)"),
}


def load_data(cfg: BaseModel) -> DataSplits:
    """Load the data set ``cfg`` names and check it (finite inputs, labels in range). A file that
    cannot be read -- random bytes, a truncated archive, a ragged table -- is one line, never a traceback."""
    from ..errors import MtkdError
    from .checks import check_splits

    what = f"data set '{cfg.name}'"
    try:
        data = DATASETS[cfg.name].load(cfg)
    except (MtkdError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - readers of many formats raise many types on bad bytes
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise MtkdError(f"{what}: cannot read its files ({type(exc).__name__}: {(lines[0] if lines else '')[:160]})"
                        "; check that they are the format the data set expects") from None
    if getattr(cfg, "augment", None):  # image data sets: random views of training batches
        from .augment import Augment

        data.augment = Augment(cfg.augment, data.input_shape)
    check_splits(data, what)
    return data


def load_dataset(name: str, **options) -> DataSplits:
    """Load a built-in data set by name with the options its config section takes::

        data = load_dataset("mnist1d", num_samples=5000, unlabeled=20000)
    """
    pick(DATASETS, {"name": name}, "name", "data", "data set")
    return load_data(validate(DATASETS[name].config, {"name": name, **options}, "data", f"data set '{name}'"))


__all__ = ["DATASETS", "UNLABELED", "BatchLoader", "DataSplits", "IndexedTensorDataset", "load_data", "load_dataset"]
