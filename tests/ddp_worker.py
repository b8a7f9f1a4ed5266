"""Run by tests/test_ddp.py, as one process or under torchrun: ``mtkd.distill`` of a tiny MLP from a
fixed linear teacher, then rank 0 saves the student's weights.

usage: ddp_worker.py OUT_DIR LOADER [SLEEP_S]
LOADER: ``batch`` (mtkd's BatchLoader) or ``sampler`` (a torch DataLoader; under torchrun with a
DistributedSampler that gives each process its half of every global batch).
SLEEP_S: pause after each step (so the test can kill the run mid-way).
MTKD_TEST_PARALLEL (environment): distill.parallel, ddp (default) or fsdp; MTKD_TEST_SHARDED=1:
distill.sharded_checkpoints (torch.distributed.checkpoint shards under fsdp).
"""
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

import mtkd
from mtkd import distributed
from mtkd.data import BatchLoader, IndexedTensorDataset

out, kind = Path(sys.argv[1]), sys.argv[2]
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
torch.manual_seed(0)
x = torch.randn(64, 6)
teacher = nn.Linear(6, 3)
y = teacher(x).argmax(1)
student = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
data = IndexedTensorDataset(x, y)
if kind == "batch":
    loader = BatchLoader(data, batch_size=16, shuffle=True, seed=3)
else:  # index order 0..63; with 2 processes: even rows on rank 0, odd on rank 1, 8 each per step
    data = torch.utils.data.TensorDataset(x, y)

    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        torch.distributed.init_process_group("gloo")  # the user's own setup, before mtkd is called
        sampler = torch.utils.data.distributed.DistributedSampler(data, shuffle=False)
        loader = torch.utils.data.DataLoader(data, batch_size=16 // world, sampler=sampler)
    else:
        loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=False)

if pause:
    student.register_forward_hook(lambda *_: time.sleep(pause))
mtkd.distill(student, [teacher], loader, steps=int(os.environ.get("STEPS", 24)), lr=0.05, optimizer=os.environ.get("OPT", "adam"), parallel=os.environ.get("MTKD_TEST_PARALLEL", "ddp"),
             sharded_checkpoints=os.environ.get("MTKD_TEST_SHARDED") == "1", checkpoint=out / "ckpt.pt", checkpoint_every=4,
             log_every=4, eval_every=100, progress=False, metrics_path=out / "metrics.jsonl")
if distributed.is_main():
    torch.save(student.state_dict(), out / f"student.world{distributed.world_size()}.pt")
distributed.shutdown()
