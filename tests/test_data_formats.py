"""Parquet tables, image folders and Hugging Face datasets saved to disk, from tiny files
made here; class names come from the labels, folder names or ClassLabel names."""
import sys

import numpy as np
import pytest
import torch

from mtkd.data import load_dataset
from mtkd.errors import MtkdError


def write_parquet(path, rows, labels):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = np.asarray(rows, dtype=np.float32)
    table = pa.table({"f0": rows[:, 0], "vec": [list(r[1:]) for r in rows], "y": labels})
    pq.write_table(table, path)


def test_parquet_reads_numbers_lists_and_string_labels(tmp_path):
    write_parquet(tmp_path / "train.parquet", [[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 2]], ["dog", "cat", "dog", "cat"])
    write_parquet(tmp_path / "test.parquet", [[9, 9, 9]], ["cat"])
    d = load_dataset("parquet", train=str(tmp_path / "train.parquet"), test=str(tmp_path / "test.parquet"),
                     label="y", val_fraction=0, normalize="none")
    assert d.class_names == ["cat", "dog"] and d.input_shape == (3,)
    assert torch.equal(d.train.x[0], torch.tensor([1.0, 2.0, 3.0]))  # the list column is flattened
    assert d.train.y.tolist() == [1, 0, 1, 0] and d.test.y.tolist() == [0]
    with pytest.raises(MtkdError, match="column 'label' not in"):
        load_dataset("parquet", train=str(tmp_path / "train.parquet"), test=str(tmp_path / "test.parquet"))


def test_parquet_integer_labels_sort_by_value(tmp_path):
    write_parquet(tmp_path / "t.parquet", [[0, 0, 0]] * 3, [10, 2, 1])
    d = load_dataset("parquet", train=str(tmp_path / "t.parquet"), test=str(tmp_path / "t.parquet"),
                     label="y", val_fraction=0)
    assert d.class_names == ["1", "2", "10"] and d.train.y.tolist() == [2, 1, 0]


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MtkdError, match=r"pip install 'mtkd\[parquet\]'"):
        load_dataset("parquet", train=str(tmp_path / "a.parquet"), test=str(tmp_path / "b.parquet"))


def test_image_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for split, per_class in [("train", 3), ("test", 1)]:
        for cls in ["10", "2"]:  # numeric folder names sort by value: "2" before "10"
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (4, 6), dtype=np.uint8)
                Image.fromarray(arr, mode="L").save(folder / f"{i}.png")
                pixels[(split, cls, i)] = arr
    d = load_dataset("images", root=str(tmp_path), val_fraction=0)
    assert d.class_names == ["2", "10"] and d.input_shape == (1, 4, 6)
    assert d.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(d.train.x[0, 0], torch.tensor(pixels[("train", "2", 0)] / 255.0, dtype=torch.float32))
    rgb = load_dataset("images", root=str(tmp_path), mode="RGB", size=[2, 3], val_fraction=0)
    assert rgb.input_shape == (3, 2, 3)
    with pytest.raises(MtkdError, match="folder not found"):
        load_dataset("images", root=str(tmp_path / "nowhere"))


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")  # only to write the fixture; mtkd reads it with pyarrow
    features = datasets.Features({"pixels": datasets.Sequence(datasets.Value("float32")),
                                  "label": datasets.ClassLabel(names=["cat", "dog", "bird"])})
    train = datasets.Dataset.from_dict({"pixels": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], "label": [2, 0, 1]},
                                       features=features)
    test = datasets.Dataset.from_dict({"pixels": [[1, 1, 1, 1]], "label": [1]}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "ds"))
    d = load_dataset("hf_disk", path=str(tmp_path / "ds"), shape=[1, 2, 2], val_fraction=0)
    assert d.class_names == ["cat", "dog", "bird"]  # the ClassLabel order, not sorted
    assert d.train.y.tolist() == [2, 0, 1] and d.test.y.tolist() == [1]
    assert d.input_shape == (1, 2, 2) and torch.equal(d.train.x[1].flatten(), torch.tensor([4.0, 5, 6, 7]))
    with pytest.raises(MtkdError, match="splits found.*test.*train"):
        load_dataset("hf_disk", path=str(tmp_path / "ds"), test_split="validation")
    # a split whose rows are unlabeled (ClassLabel -1, as in GLUE test splits) is refused, not read as 'bird'
    unlabeled = datasets.Dataset.from_dict({"pixels": [[1, 1, 1, 1]], "label": [-1]}, features=features)
    datasets.DatasetDict({"train": train, "test": unlabeled}).save_to_disk(str(tmp_path / "ds2"))
    with pytest.raises(MtkdError, match=r"labels \[-1\] outside its ClassLabel 0..2"):
        load_dataset("hf_disk", path=str(tmp_path / "ds2"), val_fraction=0)
