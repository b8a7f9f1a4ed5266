import torch

from mtkd import distributed


def test_single_process_run_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init(torch.device("cpu")) is False
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    distributed.barrier()  # no group: must not block or raise
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
