"""Where teachers run when they do not all fit beside the student.

Three placements (see docs/tasks/many-gpus.md, "Teachers that do not fit beside the student"):

- **beside the student** (the default): the teacher's weights sit on the compute device.
- **a device of its own**: ``FrozenTeacher(model, name, device="cuda:1")`` (config:
  ``teachers[i].device``). The weights stay there; each batch's inputs move to that device and
  the logits come back.
- **in turns**: the weights live in CPU memory and a shared :class:`DeviceTurns` lets at most
  ``slots`` teachers onto the compute device at once (config: ``distill.teachers_on_device``).
  A teacher is brought in just before its forward; when the slots are full the one used least
  recently leaves. Leaving costs nothing: a frozen teacher's weights never change, so the CPU
  copy kept at :meth:`DeviceTurns.add` is still exact and the device copy is simply dropped
  (no device-to-host copy). Coming in is one host-to-device copy of the weights, from pinned
  memory on CUDA.

The interface, for any frozen ``nn.Module`` (a classifier teacher here; a language-model teacher
over token batches elsewhere)::

    turns = DeviceTurns(slots=1, device=torch.device("cuda"))
    for m in models:
        turns.add(m)                       # m's weights -> CPU (pinned on CUDA), kept as its home copy
    for i in turns.order(models):          # resident models first: fewer moves per batch
        with turns.use(models[i]) as dev:  # m's weights on `dev` inside, at most `slots` models there
            out[i] = models[i](x.to(dev))
    turns.release_all()                    # every model back to its CPU copy

``turns.moves`` counts the loads onto the device (tests and benchmarks read it).
:class:`~mtkd.teachers.frozen.FrozenTeacher` does this itself once :meth:`take_turns
<mtkd.teachers.frozen.FrozenTeacher.take_turns>` attached it, and ``run_teachers`` asks
:meth:`DeviceTurns.order` for the order; :func:`place_teachers` sets up a teacher list from the
two settings.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """Where a module's weights live (the CPU for one without parameters or buffers)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


class _Home:
    """A module's weights as CPU tensors, and where each belongs (parameter data or buffer slot)."""

    def __init__(self, model: nn.Module, pin: bool):
        self.slots: list[tuple[nn.Module, str, bool, torch.Tensor]] = []  # (owner, name, is_parameter, cpu tensor)
        for owner in model.modules():
            for name, p in owner._parameters.items():
                if p is not None:
                    self.slots.append((owner, name, True, _cpu(p.data, pin)))
            for name, b in owner._buffers.items():
                if b is not None:
                    self.slots.append((owner, name, False, _cpu(b, pin)))

    def load(self, device: torch.device) -> None:
        """Every weight onto ``device`` (one host-to-device copy each; asynchronous from pinned memory)."""
        for owner, name, is_param, cpu in self.slots:
            moved = cpu.to(device, non_blocking=True)
            if is_param:
                owner._parameters[name].data = moved  # the Parameter object stays: nothing holding it breaks
            else:
                owner._buffers[name] = moved

    def restore(self) -> None:
        """Every weight back to its CPU copy; the device copies are dropped (frozen: still identical)."""
        for owner, name, is_param, cpu in self.slots:
            if is_param:
                owner._parameters[name].data = cpu
            else:
                owner._buffers[name] = cpu


def _cpu(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    tensor = tensor.detach().to("cpu")
    return tensor.pin_memory() if pin else tensor


class DeviceTurns:
    """At most ``slots`` frozen modules on ``device`` at once; the others wait in CPU memory.

    Not thread-safe; one per group of modules that share the device's room (a process's teachers)."""

    def __init__(self, slots: int, device: torch.device | str):
        if slots < 1:
            raise ValueError(f"DeviceTurns: slots must be at least 1, got {slots}")
        self.slots, self.device = slots, torch.device(device)
        self.homes: dict[int, _Home] = {}  # id(module) -> its CPU copy
        self.resident: list[nn.Module] = []  # on the device now, least recently used first
        self.moves = 0  # loads onto the device so far

    def add(self, model: nn.Module) -> None:
        """Take ``model`` in: its weights move to CPU memory (pinned when the device is a GPU) and stay there
        until its turn. Adding a module twice does nothing."""
        if id(model) in self.homes:
            return
        home = _Home(model, pin=self.device.type == "cuda")
        home.restore()
        self.homes[id(model)] = home

    def acquire(self, model: nn.Module) -> torch.device:
        """Bring ``model`` onto the device (sending the least recently used one home if the slots are
        full); returns the device its forward must run on."""
        if any(m is model for m in self.resident):
            self.resident = [m for m in self.resident if m is not model] + [model]
            return self.device
        while len(self.resident) >= self.slots:
            self.release(self.resident[0])
        self.homes[id(model)].load(self.device)
        self.resident.append(model)
        self.moves += 1
        return self.device

    def release(self, model: nn.Module) -> None:
        """Send ``model`` home: its weights back to the CPU copy (also after something else, e.g. the
        cache build, moved it with ``.to``)."""
        self.homes[id(model)].restore()
        self.resident = [m for m in self.resident if m is not model]

    def release_all(self) -> None:
        for model in list(self.resident):
            self.release(model)

    def order(self, models: Sequence[nn.Module]) -> list[int]:
        """Positions of ``models`` in the order to run them: the ones on the device first (most recently
        used first), then the rest as given. With K models and one slot this saves one move per batch."""
        resident = {id(m): rank for rank, m in enumerate(reversed(self.resident))}
        inside = sorted((i for i, m in enumerate(models) if id(m) in resident), key=lambda i: resident[id(models[i])])
        return inside + [i for i, m in enumerate(models) if id(m) not in resident]

    @contextmanager
    def use(self, model: nn.Module) -> Iterator[torch.device]:
        """``model`` on the device for the block (it stays there afterwards until another needs its slot)."""
        yield self.acquire(model)


@contextmanager
def visiting(model: nn.Module, device: torch.device | str) -> Iterator[torch.device]:
    """The device to run ``model`` on for a block: its own when its weights sit on an accelerator of
    their own (or already on ``device``); otherwise, for a model kept in CPU memory while ``device`` is
    an accelerator, ``device``, with the weights brought there for the block and dropped after."""
    device = torch.device(device)
    where = model_device(model)
    if where.type != "cpu" or device.type == "cpu":
        yield where if where.type != "cpu" else device
        return
    turns = DeviceTurns(1, device)
    turns.add(model)
    try:
        yield turns.acquire(model)
    finally:
        turns.release_all()


def place_teachers(teachers: Sequence, device: torch.device, on_device: int = 0) -> "DeviceTurns | None":
    """Put each FrozenTeacher where it will run, given the compute ``device``.

    A teacher with a device of its own (``FrozenTeacher(..., device=...)``) stays there. Of the others,
    with ``0 < on_device < their number``, all live in CPU memory and take turns on ``device``, at
    most ``on_device`` at once (the returned :class:`DeviceTurns`); otherwise (``on_device`` 0, or
    room for all) they move to ``device``. On a CPU ``device`` taking turns moves nothing (every
    weight is already in CPU memory) but keeps the same bookkeeping."""
    movable = [t for t in teachers if getattr(t, "placement", None) is None]
    if 0 < on_device < len(movable):
        turns = DeviceTurns(on_device, device)
        for t in movable:
            t.take_turns(turns)
        return turns
    for t in teachers:
        t.to(device)
    return None


__all__ = ["DeviceTurns", "model_device", "place_teachers", "visiting"]
