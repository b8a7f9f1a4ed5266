"""The transfer set's inputs as a view over the labeled and unlabeled blocks (data/rows.py): every
read the data path makes equals the same read of the concatenated tensor, and nothing is copied."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from mtkd.cache.store import data_fingerprint
from mtkd.data import load_dataset
from mtkd.data.rows import RowConcat


def _blocks(sizes, width=3):
    return [torch.arange(n * width, dtype=torch.float32).reshape(n, width) + 1000 * i for i, n in enumerate(sizes)]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 7), min_size=1, max_size=4).filter(lambda s: sum(s) > 0), data=st.data())
def test_reads_equal_the_concatenated_tensor(sizes, data):
    blocks = _blocks(sizes)
    whole, view = torch.cat(blocks), RowConcat(blocks)
    n = len(whole)
    assert len(view) == n and view.shape == whole.shape and view.numel() == whole.numel()
    i = data.draw(st.integers(-n, n - 1))
    assert torch.equal(view[i], whole[i])
    a, b = data.draw(st.integers(-n - 2, n + 2)), data.draw(st.integers(-n - 2, n + 2))
    step = data.draw(st.sampled_from([None, 1, 2]))
    assert torch.equal(view[a:b:step], whole[a:b:step])
    rows = data.draw(st.lists(st.integers(-n, n - 1), max_size=12))
    assert torch.equal(view[torch.tensor(rows, dtype=torch.long)], whole[torch.tensor(rows, dtype=torch.long)])
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    assert torch.equal(view[mask], whole[mask])


def test_a_slice_inside_one_block_is_a_view_and_the_fingerprint_is_the_concatenations():
    blocks = _blocks([5, 4])
    view = RowConcat(blocks)
    assert view[1:4].data_ptr() == blocks[0][1:4].data_ptr()  # no copy
    index = torch.arange(9)
    assert data_fingerprint(view, index) == data_fingerprint(torch.cat(blocks), index)


def test_transfer_set_keeps_the_unlabeled_pool_mapped(monkeypatch):
    from mtkd.data import base

    data = load_dataset("mnist1d", num_samples=200, seed=0, unlabeled=50)
    assert not isinstance(data.transfer_set().x, RowConcat)  # small: concatenated
    monkeypatch.setattr(base, "CONCAT_LIMIT", 0)  # as if the inputs were larger than the limit
    transfer = data.transfer_set()
    assert isinstance(transfer.x, RowConcat)
    assert transfer.x.parts[0] is data.train.x and transfer.x.parts[1] is data.unlabeled.x
    assert torch.equal(transfer.x[torch.arange(len(transfer))], torch.cat([data.train.x, data.unlabeled.x]))
    assert torch.equal(transfer.index, torch.cat([data.train.index, data.unlabeled.index]))
