"""Data parallelism through torch's engines (DistributedDataParallel, FSDP2): two CPU processes
(gloo, torchrun) train the same model a one-process run trains, resume after SIGKILL, and split
batches once."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from mtkd.data import BatchLoader, IndexedTensorDataset
from mtkd.errors import ConfigError
from mtkd.parallel import RecipeStep, ignored, split_loader

WORKER = Path(__file__).with_name("ddp_worker.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _torchrun(out, kind, *extra, wait=True, parallel="ddp", sharded=False):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(out), kind, *extra]
    env = dict(ENV, MTKD_TEST_PARALLEL=parallel, MTKD_TEST_SHARDED="1" if sharded else "0")
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_tree(pid):
    """SIGKILL a torchrun launcher and every process below it: its workers run in sessions of their own,
    so killing the launcher's process group would leave them training (and writing checkpoints)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _one(out, kind):
    proc = subprocess.run([sys.executable, str(WORKER), str(out), kind], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "student.world1.pt")


def _close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    return _one(out, "batch")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_train_the_one_process_model_and_resume_after_sigkill(tmp_path, one_process, parallel):
    """DDP (a whole student per process) and FSDP2 (the student sharded over the processes)."""
    first = tmp_path / "killed"
    first.mkdir()
    proc = _torchrun(first, "batch", "0.15", wait=False, parallel=parallel)
    deadline = time.time() + 120
    while not (first / "ckpt.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    _kill_tree(proc.pid)  # the launcher and both workers, mid-run
    proc.wait()
    assert (first / "ckpt.pt").exists() and not (first / "student.world2.pt").exists()
    step = torch.load(first / "ckpt.pt", weights_only=False)["step"]
    assert 4 <= step < 24
    # checkpoints are interchangeable: one process resumes what two processes wrote
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ckpt.pt").write_bytes((first / "ckpt.pt").read_bytes())
    _close(_one(mixed, "batch"), one_process)
    _torchrun(first, "batch", parallel=parallel)  # two processes resume from the checkpoint the killed run left
    _close(torch.load(first / "student.world2.pt"), one_process)


def test_fsdp_sharded_checkpoints_resume_in_two_processes_or_one(tmp_path, one_process):
    """distill.sharded_checkpoints: each process writes its shards (torch.distributed.checkpoint); a run
    killed mid-way resumes from them with two processes, or with one (DCP reshards on load)."""
    import shutil

    first = tmp_path / "killed"
    first.mkdir()
    proc = _torchrun(first, "batch", "0.15", wait=False, parallel="fsdp", sharded=True)
    deadline = time.time() + 120
    while not (first / "ckpt.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    _kill_tree(proc.pid)
    proc.wait()
    state = torch.load(first / "ckpt.pt", weights_only=False)
    assert state["recipe"] is None and state["optimizer"] is None  # the weights are in the shards, not here
    shards = first / "ckpt.pt.shards" / state["shards"]
    assert (shards / ".metadata").is_file() and len(list(shards.glob("*.distcp"))) == 2  # one file per process
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(first / "ckpt.pt", mixed / "ckpt.pt")
    shutil.copytree(first / "ckpt.pt.shards", mixed / "ckpt.pt.shards")
    _close(_one(mixed, "batch"), one_process)  # one process resumes what two sharded processes wrote
    _torchrun(first, "batch", parallel="fsdp", sharded=True)
    _close(torch.load(first / "student.world2.pt"), one_process)


def test_user_distributed_sampler_is_not_split_again(tmp_path):
    """The user's DistributedSampler already gives each process its half: mtkd uses it as it is,
    so two processes train the model one process trains on the whole batches."""
    one = tmp_path / "one"
    one.mkdir()
    two = tmp_path / "two"
    two.mkdir()
    expected = _one(one, "sampler")
    _torchrun(two, "sampler")
    _close(torch.load(two / "student.world2.pt"), expected)


def test_a_sampler_for_another_world_size_is_refused():
    data = IndexedTensorDataset(torch.randn(8, 2), torch.zeros(8))
    sampler = torch.utils.data.distributed.DistributedSampler(data, num_replicas=2, rank=0)
    loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=sampler)
    with pytest.raises(ConfigError, match="num_replicas=2, rank=0, but this is one process"):
        split_loader(loader, data_parallel=False)


def test_batch_loader_reads_only_its_share_of_each_global_batch():
    data = IndexedTensorDataset(torch.arange(10.0).unsqueeze(1), torch.zeros(10))
    whole = [b[2].tolist() for b in BatchLoader(data, 4, shuffle=True, seed=1)]
    halves = []
    for rank in range(2):
        loader = BatchLoader(data, 4, shuffle=True, seed=1)
        loader.share = (rank, 2)
        halves.append([b[2].tolist() for b in loader])
    assert [a + b for a, b in zip(*halves)] == whole  # rank 0 the first half, rank 1 the rest
    assert [len(h) for h in halves[0]] == [2, 2, 1]


def test_ddp_leaves_frozen_and_self_optimized_parameters_alone():
    class Recipe(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
            self.teacher = nn.BatchNorm1d(2).requires_grad_(False)
            self.disc = nn.Linear(2, 1)
            self.disc_optimizer = torch.optim.SGD(self.disc.parameters(), lr=0.1)

    names = ignored(RecipeStep(Recipe()))
    assert names == sorted(["recipe.teacher.weight", "recipe.teacher.bias", "recipe.teacher.running_mean",
                            "recipe.teacher.running_var", "recipe.teacher.num_batches_tracked",
                            "recipe.disc.weight", "recipe.disc.bias"])
