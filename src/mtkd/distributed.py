"""The few ``torch.distributed`` helpers every distributed recipe needs.

A run launched with ``torchrun`` carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its
environment; a run launched any other way is a single process, and every helper here then
behaves as the identity (rank 0 of 1), so the same code path serves one CPU, one GPU and many
nodes. The backend is gloo on CPU and NCCL on CUDA.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import ConfigError


def launched_by_torchrun() -> bool:
    """True when this process was started by ``torchrun`` (or another launcher setting RANK/WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Only the main process writes shared outputs (summary, reports, final models)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Each process of a CUDA run takes the GPU of its LOCAL_RANK; CPU processes share the CPU."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def init(device: torch.device, timeout_s: float = 300.0) -> bool:
    """Join the process group torchrun describes; return True if this run is distributed.

    Does nothing (and returns False) outside torchrun or when the group already exists.
    """
    if not launched_by_torchrun():
        return False
    if is_initialized():
        return True
    if not dist.is_available():
        raise ConfigError("this run was launched by torchrun, but this PyTorch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def shard(dataset):
    """This process's shard of an indexed data set: the samples whose index % world_size == rank
    (the whole set in a single process)."""
    if world_size() == 1:
        return dataset
    return dataset.subset(torch.nonzero(dataset.index % world_size() == rank()).squeeze(1))


def batch_rows(batch_size: int) -> slice | None:
    """This process's rows of a global batch under torchrun: a contiguous, near-equal share
    (None: the whole batch, outside torchrun or when the batch has fewer rows than processes)."""
    world = world_size()
    if world == 1 or batch_size < world:
        return None
    bounds = [batch_size * r // world for r in range(world + 1)]
    return slice(bounds[rank()], bounds[rank() + 1])


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over every process (``values`` itself in a single process)."""
    if world_size() == 1:
        return values
    dist.all_reduce(values)
    return values / world_size()
