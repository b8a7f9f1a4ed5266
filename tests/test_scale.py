"""Scale in one process: the deferred finiteness check, data set `arrays` (memory-mapped .npy
files), the chunked data fingerprint and the cache's per-batch spot check."""
import hashlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from mtkd.cache.store import data_fingerprint
from mtkd.config import TrainConfig
from mtkd.data import DATASETS, BatchLoader, IndexedTensorDataset, load_dataset
from mtkd.errors import MtkdError
from mtkd.recipes import ScratchRecipe
from mtkd.teachers import TransferSet
from mtkd.trainer import Trainer, TrainingDiverged


def _data(n=64):
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
    return IndexedTensorDataset(x, (x[:, 0] > 0).long())


class Exploding(ScratchRecipe):
    """NaN loss from the 6th step on."""

    calls = 0

    def step(self, x, y, index):
        out = super().step(x, y, index)
        self.calls += 1
        if self.calls >= 6:
            out["loss"] = out["loss"] * math.nan
        return out


def test_deferred_finiteness_check_names_the_step_range_and_the_last_good_checkpoint(tmp_path):
    """Off a single CPU process the loss's finiteness stays on the device and is read when the
    trainer logs or saves: steps 5-8 here (log_every 4), and the checkpoint of step 4 is good."""
    cfg = TrainConfig(steps=20, log_every=4, checkpoint_every=4, eval_every=100)
    trainer = Trainer(Exploding(nn.Linear(6, 2)), BatchLoader(_data(), 8), cfg, checkpoint=tmp_path / "c.pt",
                      progress=False)
    trainer.check_every_step = False
    with pytest.raises(TrainingDiverged, match=r"loss became non-finite between step 5 and step 8 .*"
                                               r"last good checkpoint: .*c\.pt"):
        trainer.fit()
    saved = torch.load(tmp_path / "c.pt", weights_only=False)
    assert saved["step"] == 4 and all(torch.isfinite(v).all() for v in saved["recipe"].values())


def test_per_step_check_on_one_cpu_process_names_the_exact_step(tmp_path):
    cfg = TrainConfig(steps=20, log_every=4, checkpoint_every=4, eval_every=100)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 6 "):
        Trainer(Exploding(nn.Linear(6, 2)), BatchLoader(_data(), 8), cfg, progress=False).fit()


def _write_arrays(root, n=50, unlabeled=0):
    rng = np.random.default_rng(0)
    root.mkdir()
    x = rng.standard_normal((n, 3, 4), dtype=np.float32)
    np.save(root / "x_train.npy", x)
    np.save(root / "y_train.npy", np.arange(n) % 3)
    np.save(root / "x_test.npy", x[:7])
    np.save(root / "y_test.npy", np.arange(7) % 3)
    if unlabeled:
        np.save(root / "x_unlabeled.npy", rng.standard_normal((unlabeled, 3, 4), dtype=np.float32))
    return x


def test_arrays_data_set_is_memory_mapped_and_split_without_copies(tmp_path):
    x = _write_arrays(tmp_path / "d", unlabeled=5)
    data = load_dataset("arrays", path=str(tmp_path / "d"), val_fraction=0.2)
    assert "arrays" in DATASETS
    assert (len(data.train), len(data.val), len(data.test), len(data.unlabeled)) == (40, 10, 7, 5)
    assert data.num_classes == 3 and data.input_shape == (3, 4)
    # train and validation rows are views of one read-only memory map, not copies
    mapped = np.load(tmp_path / "d" / "x_train.npy", mmap_mode="r")
    assert not data.train.x.numpy().flags.owndata
    assert data.val.x.data_ptr() == data.train.x.data_ptr() + 40 * 12 * 4
    np.testing.assert_array_equal(data.val.x.numpy(), mapped[40:])
    np.testing.assert_array_equal(data.train.x.numpy(), x[:40])
    assert data.unlabeled.index.tolist() == [40, 41, 42, 43, 44]


def test_arrays_data_set_refuses_inputs_it_cannot_map(tmp_path):
    _write_arrays(tmp_path / "d")
    np.save(tmp_path / "d" / "x_train.npy", np.zeros((50, 12), np.float64))
    with pytest.raises(MtkdError, match=r"x_train.npy holds float64 \[50, 12\]; inputs must be float32"):
        load_dataset("arrays", path=str(tmp_path / "d"))
    (tmp_path / "d" / "y_test.npy").unlink()
    with pytest.raises(MtkdError, match=r"lacks \['y_test.npy'\]"):
        load_dataset("arrays", path=str(tmp_path / "d"))


def test_data_fingerprint_is_the_digest_of_all_bytes_read_in_chunks():
    x, index = torch.randn(300, 5), torch.arange(300)
    h = hashlib.sha256()
    for t in (x, index):
        h.update(f"{tuple(t.shape)}{t.dtype}".encode() + t.numpy().tobytes())
    assert data_fingerprint(x, index) == h.hexdigest()


def test_transfer_set_tells_cached_inputs_from_others():
    x = torch.randn(20, 3, 5)
    transfer = TransferSet(x, torch.arange(20))
    assert transfer.probes.shape == (20, 8)  # 8 elements of each input, not the inputs
    idx = torch.tensor([3, 7, 1])
    assert transfer.rows(x[idx], idx).tolist() == [3, 7, 1]
    other = x[idx].clone()
    other[1, 2, 4] += 1  # the last element: a probe position
    assert transfer.rows(other, idx) is None
    assert transfer.rows(x[idx], torch.tensor([3, 8, 1])) is None  # another sample under index 8
    assert transfer.rows(x[idx, :2], idx) is None  # inputs of another shape
