"""mtkd's data-parallel step against a DistributedDataParallel hand loop, on CPU processes (gloo).

    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/ddp.py
    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/ddp.py --sizes 8 --repeats 2

A: ``mtkd.train(student, BatchLoader(...), steps=S)`` (recipe scratch: cross-entropy; the trainer
wraps the step in DistributedDataParallel; each process reads its half of every global batch).
B: the hand loop a user would write: ``DDP(student)``, Adam, cross-entropy on this process's half
of the same global batches, ``backward``, ``step``. Both build their DDP wrapper and optimizer per
repeat. A and B alternate (A B A B ...); each repeat's cost is the CPU time of both processes
(``time.process_time``, summed over ranks), so other load on the machine counts less than in wall
time. Prints one row per student size: median seconds per step and the median of the paired
ratios A/B. MLP students on MNIST-1D-shaped inputs (40 features, 10 classes).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn

import mtkd
from mtkd.data import BatchLoader, IndexedTensorDataset

HIDDEN = {8: [2000, 2000, 2000], 50: [5000, 5000, 5000]}  # ~8.1M and ~50.3M parameters


def student(hidden: list[int]) -> nn.Module:
    torch.manual_seed(0)
    layers, width = [], 40
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cpu_seconds(fn) -> float:
    """CPU seconds of ``fn()``, summed over every process."""
    dist.barrier()
    start = time.process_time()
    fn()
    spent = torch.tensor([time.process_time() - start], dtype=torch.float64)
    dist.all_reduce(spent)
    return float(spent)


def run_mtkd(model: nn.Module, data: IndexedTensorDataset, steps: int, batch: int) -> None:
    mtkd.train(model, BatchLoader(data, batch, shuffle=True, seed=0), steps=steps, lr=1e-4, progress=False,
               log_every=steps, eval_every=10**6, checkpoint_every=10**6, schedule="constant")


def run_hand(model: nn.Module, data: IndexedTensorDataset, steps: int, batch: int) -> None:
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    rank, world = dist.get_rank(), dist.get_world_size()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for i in range(steps):
        rows = order[i * batch:(i + 1) * batch]
        rows = rows[len(rows) * rank // world:len(rows) * (rank + 1) // world]
        loss = nn.functional.cross_entropy(ddp(data.x[rows]), data.y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 50], choices=sorted(HIDDEN), help="million parameters")
    p.add_argument("--steps", type=int, default=10, help="steps per repeat")
    p.add_argument("--repeats", type=int, default=4, help="A B pairs")
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    args = p.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    g = torch.Generator().manual_seed(1)
    data = IndexedTensorDataset(torch.randn(args.batch_size * args.steps, 40, generator=g),
                                torch.randint(0, 10, (args.batch_size * args.steps,), generator=g))
    rows = []
    for size in args.sizes:
        model = student(HIDDEN[size])
        params = sum(p.numel() for p in model.parameters())
        run_hand(model, data, 2, args.batch_size)  # warm-up: allocator, gloo buffers
        a, b = [], []
        for _ in range(args.repeats):
            a.append(cpu_seconds(lambda: run_mtkd(model, data, args.steps, args.batch_size)) / args.steps)
            b.append(cpu_seconds(lambda: run_hand(model, data, args.steps, args.batch_size)) / args.steps)
        ratios = [x / y for x, y in zip(a, b)]
        rows.append(f"| {params / 1e6:.1f}M | {dist.get_world_size()} | {statistics.median(a):.3f} | "
                    f"{statistics.median(b):.3f} | {statistics.median(ratios):.3f} "
                    f"({min(ratios):.3f}-{max(ratios):.3f}) |")
    if dist.get_rank() == 0:
        print("| student | processes | mtkd CPU s/step | DDP hand loop CPU s/step | ratio, median (range) |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
