"""Data parallelism with torch's own engine: ``DistributedDataParallel`` around a recipe's step.

A recipe is an ``nn.Module`` whose unit of work is ``step(x, y, index) -> {name: loss}``, not
``forward``. DDP hooks into ``forward`` (to prepare its gradient buckets for the backward that
follows), so :class:`RecipeStep` makes the step the forward of a thin module that holds the
recipe; the trainer calls it, backpropagates ``"loss"``, and DDP all-reduces the gradients in
buckets while the backward still runs (overlap), writing the mean over processes straight into
``.grad`` (no extra copies). The recipe itself stays unwrapped, so its ``state_dict`` (and every
checkpoint) has the same keys as in a one-process run.

Left out of DDP (``ignored``): parameters nobody trains (frozen teachers: no broadcast of their
weights, no buckets) and parameters a recipe or aggregator updates with its own optimizer inside
the step (AFD's discriminators, the meta aggregator's weight net): their backward runs inside
the forward, where DDP's hooks must not fire; each process updates its own copy of them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RecipeStep(nn.Module):
    """``forward(x, y, index)`` = ``recipe.step(x, y, index)``: the call DDP wraps."""

    def __init__(self, recipe: nn.Module):
        super().__init__()
        self.recipe = recipe

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.recipe.step(x, y, index)


def self_optimized(module: nn.Module) -> set[int]:
    """ids of the parameters that an optimizer held by ``module`` or a submodule steps itself."""
    owned: set[int] = set()
    for m in module.modules():
        for value in vars(m).values():
            if isinstance(value, torch.optim.Optimizer):
                owned.update(id(p) for group in value.param_groups for p in group["params"])
    return owned


def ignored(root: nn.Module) -> list[str]:
    """Names (as DDP sees them, under ``root``) of parameters and buffers DDP must leave alone:
    frozen or self-optimized parameters, and the buffers of submodules with nothing DDP trains."""
    owned = self_optimized(root)
    names = [n for n, p in root.named_parameters() if not p.requires_grad or id(p) in owned]
    skip = set(names)
    for prefix, m in root.named_modules():
        full = lambda n: f"{prefix}.{n}" if prefix else n  # noqa: E731
        if all(full(n) in skip for n, _ in m.named_parameters()):  # nothing DDP trains in this subtree
            names += [full(n) for n, _ in m.named_buffers(recurse=False)]
    return sorted(set(names))


def data_parallel(recipe: nn.Module, device: torch.device, *, sync_batchnorm: bool = False) -> nn.Module:
    """``DistributedDataParallel(RecipeStep(recipe))`` for the process group this process is in.

    ``find_unused_parameters``: a recipe may leave some trainable parameter out of one step's loss
    (an auxiliary head, a peer dropped for a batch); DDP then marks it ready instead of waiting for
    its gradient. A parameter no process used keeps no gradient, as in a one-process run.
    sync_batchnorm: the student's BatchNorm layers normalize with the statistics of the whole
    global batch (``nn.SyncBatchNorm``), as one process would; otherwise each process uses its share.
    """
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm and device.type != "cuda":
        from .errors import ConfigError

        raise ConfigError("distill.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); "
                          "set distill.sync_batchnorm: false on CPU")
    if sync_batchnorm:
        # the converted layers keep the same Parameter objects, so the optimizer still steps them
        recipe.student = nn.SyncBatchNorm.convert_sync_batchnorm(recipe.student)
    wrapper = RecipeStep(recipe)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapper, ignored(wrapper))
    return DistributedDataParallel(wrapper, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


class FullyShardedStudent:
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) for a student too large for one device.

    A copy of ``recipe.student`` is sharded (each child module with parameters, then the whole
    student: every process holds 1/W of the parameters, gradients and optimizer state, and
    all-gathers a layer's parameters just before it runs) and takes the student's place in the
    recipe while training; :meth:`finish` gathers the trained weights back into the original
    module, so the caller's student object ends trained and plain, on every process.
    Checkpoints are consolidated (full tensors, the one-process format): a run resumes with any
    number of processes. Only the student is sharded: a recipe that trains anything else
    (peers, projectors, ...) is refused; use ``distill.parallel: ddp`` for it.
    """

    def __init__(self, recipe: nn.Module, device: torch.device, amp: str = "off"):
        import copy

        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from .errors import ConfigError

        self.recipe, self.original = recipe, recipe.student
        others = [n for n, p in recipe.named_parameters()
                  if p.requires_grad and not n.startswith("student.")]
        if others:
            raise ConfigError(f"distill.parallel: 'fsdp' shards the student only, but this recipe also trains "
                              f"{others[0]}{' and more' if len(others) > 1 else ''}; use distill.parallel: ddp")
        # bf16 compute and fp32 gradient reduction on GPUs; fp32 throughout on the CPU
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if amp == "bf16" and device.type == "cuda" else MixedPrecisionPolicy()
        sharded = copy.deepcopy(self.original)
        for child in sharded.children():
            if any(p.requires_grad for p in child.parameters()):
                fully_shard(child, mp_policy=policy)
        fully_shard(sharded, mp_policy=policy)
        recipe.student = sharded
        if any(p is q for p in recipe.parameters() for q in self.original.parameters()):
            recipe.student = self.original
            raise ConfigError("distill.parallel: 'fsdp' cannot shard this recipe's student (the recipe keeps "
                              "references to the student's layers); use distill.parallel: ddp")
        self.names = [n for n, p in recipe.named_parameters() if p.requires_grad]  # optimizer order

    def model_state(self) -> dict:
        """The recipe's state_dict with the student's full tensors (a collective: every process calls it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.recipe, options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's full state in ``torch.optim``'s own format (parameters numbered in order)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(self.recipe, optimizer, options=StateDictOptions(full_state_dict=True))
        number = {name: i for i, name in enumerate(self.names)}
        return {"state": {number[k]: v for k, v in full["state"].items()},
                "param_groups": [{**g, "params": [number[k] for k in g["params"]]} for g in full["param_groups"]]}

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        named = {"state": {self.names[i]: v for i, v in state["state"].items()},
                 "param_groups": [{**g, "params": [self.names[i] for i in g["params"]]}
                                  for g in state["param_groups"]]}
        set_optimizer_state_dict(self.recipe, optimizer, named, options=StateDictOptions(full_state_dict=True))

    def finish(self) -> None:
        """Gather the trained student into the original module and put it back in the recipe."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.recipe.student, options=StateDictOptions(full_state_dict=True))
        self.original.load_state_dict({k: v.to(self.original.state_dict()[k].device) for k, v in full.items()})
        self.recipe.student = self.original


def save_shards(directory, recipe: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The recipe's and optimizer's state as ``torch.distributed.checkpoint`` (DCP) files in ``directory``:
    each process writes the shards it holds (nothing is gathered), rank 0 the metadata. A collective
    under torchrun; in one process it writes the whole state. Keys are the recipe's parameter names,
    so the files load into a sharded or a plain recipe alike (DCP reshards on load)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(recipe, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(directory))


def load_shards(directory, recipe: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load what :func:`save_shards` wrote into ``recipe`` and ``optimizer``, sharded (FSDP2, any number
    of processes) or not (one process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(recipe, optimizer)  # also creates the optimizer's state slots
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(recipe, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def distributed_sampler(loader: Any) -> Any:
    """The loader's ``DistributedSampler`` (as its sampler or its batch sampler's), or None."""
    from torch.utils.data.distributed import DistributedSampler

    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if isinstance(sampler, DistributedSampler):
            return sampler
    return None


def split_loader(loader: Any, data_parallel: bool) -> bool:
    """Give each process its share of every global batch; True if the trainer must still cut each
    batch itself (a loader of the user's with no ``DistributedSampler``: every process then loads
    the whole batch and keeps its rows).

    A :class:`~mtkd.data.BatchLoader` reads only this process's rows; a loader whose
    ``DistributedSampler`` already splits the data is used as it is (no second split), after a
    check that it splits for this process group.
    """
    from . import distributed
    from .data import BatchLoader
    from .errors import ConfigError

    world, rank = distributed.world_size(), distributed.rank()
    sampler = distributed_sampler(loader)
    if sampler is not None:
        if (sampler.num_replicas, sampler.rank) != (world if data_parallel else 1, rank if data_parallel else 0):
            where = (f"process {rank} of {world}" if data_parallel else
                     "one process (not launched by torchrun)" if world == 1 else
                     f"process {rank} of {world}, each training its own copy on its own shard")
            raise ConfigError(f"the training loader's DistributedSampler has num_replicas={sampler.num_replicas}, "
                              f"rank={sampler.rank}, but this is {where}: build it inside the torchrun "
                              "launch with DistributedSampler(dataset) (or drop the sampler)")
        return False
    if not data_parallel:
        return False
    if isinstance(loader, BatchLoader):
        loader.share = (rank, world)
        return False
    return True


__all__ = ["FullyShardedStudent", "RecipeStep", "data_parallel", "distributed_sampler", "ignored", "load_shards",
           "save_shards", "self_optimized", "split_loader"]
