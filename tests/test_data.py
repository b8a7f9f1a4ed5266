import numpy as np
import pytest
import torch

from mtkd.config import parse_config
from mtkd.data import DATASETS, UNLABELED, BatchLoader, IndexedTensorDataset, load_data
from mtkd.errors import MtkdError


def _load(raw):
    return load_data(parse_config({"data": raw, "distill": {"recipe": "scratch"}}).data)


def test_mnist1d_splits_pool_and_indices():
    d = _load({"name": "mnist1d", "num_samples": 500, "unlabeled": 100, "val_fraction": 0.1})
    assert (len(d.train), len(d.val), len(d.test), len(d.unlabeled)) == (360, 40, 100, 100)
    assert d.input_shape == (40,) and d.num_classes == 10
    assert (d.unlabeled.y == UNLABELED).all()
    transfer = d.transfer_set()
    # every sample carries its index in the transfer set: labeled first, then the pool
    assert torch.equal(transfer.index, torch.arange(460))
    x, y, idx = transfer[365]
    assert idx.item() == 365 and y.item() == UNLABELED


def test_mnist1d_is_reproducible_and_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = _load({"name": "mnist1d", "num_samples": 200, "seed": 3})
    assert np.array_equal(np.random.get_state()[1], before)
    b = _load({"name": "mnist1d", "num_samples": 200, "seed": 3})
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)


def test_digits_shapes():
    pytest.importorskip("sklearn")
    d = _load({"name": "digits"})
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert float(d.train.x.max()) <= 1.0
    assert _load({"name": "digits", "shape": "flat"}).input_shape == (64,)


def test_npz_reader(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(50, 6)), y_train=rng.integers(0, 3, 50),
             x_test=rng.normal(size=(20, 6)), y_test=rng.integers(0, 3, 20), x_unlabeled=rng.normal(size=(7, 6)))
    d = _load({"name": "npz", "path": str(path), "val_fraction": 0.2})
    assert (len(d.train), len(d.val), len(d.test), len(d.unlabeled)) == (40, 10, 20, 7)
    assert d.num_classes == 3 and d.input_shape == (6,)
    assert d.transfer_set().index.tolist() == list(range(47))


def test_npz_missing_arrays_are_named(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((3, 2)), y_train=np.zeros(3))
    with pytest.raises(MtkdError, match=r"lacks arrays \['x_test', 'y_test'\]"):
        _load({"name": "npz", "path": str(path)})


def test_csv_reader_maps_string_labels(tmp_path):
    (tmp_path / "train.csv").write_text("a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,dog\n")
    (tmp_path / "test.csv").write_text("a,b,label\n1,1,dog\n")
    d = _load({"name": "csv", "train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv"),
               "val_fraction": 0, "normalize": "none"})
    assert d.class_names == ["cat", "dog"] and d.num_classes == 2
    assert d.train.y.tolist() == [0, 1, 0, 1] and d.test.y.tolist() == [1]
    assert d.train.x[1].tolist() == [3.0, 4.0]


def test_csv_unknown_label_column(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,0\n")
    with pytest.raises(MtkdError, match="column 'label' not in"):
        _load({"name": "csv", "train": str(tmp_path / "t.csv"), "test": str(tmp_path / "t.csv")})


def test_every_dataset_is_listed_with_a_description():
    for name, entry in DATASETS.items():
        assert entry.description and entry.config.model_fields["name"].default == name


def test_batch_loader_resumes_mid_epoch_with_the_same_batches():
    ds = IndexedTensorDataset(torch.randn(23, 2), torch.zeros(23))
    ref = BatchLoader(ds, 5, seed=7)
    stream = [b[2].tolist() for _ in range(3) for b in ref]  # 3 epochs of indices
    loader = BatchLoader(ds, 5, seed=7)
    def endless():
        while True:
            yield from loader

    it = endless()
    first = [next(it)[2].tolist() for _ in range(7)]  # stop in the middle of epoch 2
    resumed = BatchLoader(ds, 5, seed=7)
    resumed.load_state_dict(loader.state_dict())
    rest = [b[2].tolist() for b in resumed] + [b[2].tolist() for b in resumed]
    assert first + rest == stream
    assert sorted(sum(stream[:5], [])) == list(range(23))  # an epoch covers every sample once
