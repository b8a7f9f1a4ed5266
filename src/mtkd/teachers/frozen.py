"""A frozen teacher: any ``nn.Module`` in eval mode, without gradients, invisible to optimizers.

As in timm's ``DistillationTeacher``, the wrapper owns the model but does not register it
as a submodule, so ``student_or_recipe.parameters()`` never yields teacher weights and an
optimizer can never step them. Every output is checked: shape [B, num_classes] and finite,
with the teacher's name and the offending sample indices in the error.

Where it runs (see :mod:`mtkd.teachers.placement`): on the device its weights are on (beside the
student, by default); on a device of its own (``device=``: inputs move there, logits come back);
or in turns with other teachers (:meth:`FrozenTeacher.take_turns`: weights in CPU memory, brought
onto the compute device just before the forward).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import TeacherError
from .placement import DeviceTurns


class FrozenTeacher:
    def __init__(self, model: nn.Module, name: str, num_classes: int | None = None,
                 device: torch.device | str | None = None):
        model.eval()  # a model handed over in train mode: dropout off, batch-norm statistics frozen
        for p in model.parameters():  # not model.requires_grad_: a ScriptModule (torch.jit.load) lacks it
            p.requires_grad_(False)
        self._model = model  # deliberately a plain attribute, not a registered submodule
        self.name = name
        self.num_classes = num_classes
        # a device of its own ("cuda:1"): the weights stay there whatever the compute device
        self.placement = torch.device(device) if device is not None else None
        self.turns: DeviceTurns | None = None  # set by take_turns: weights in CPU memory between forwards
        if self.placement is not None:
            model.to(self.placement)

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def device(self) -> torch.device:
        """Where the teacher's weights live (the CPU for a model without parameters)."""
        return next(self._model.parameters(), torch.zeros(())).device

    def to(self, device) -> "FrozenTeacher":
        """Move the weights to the compute ``device``; a teacher with a device of its own stays there,
        one that takes turns goes (or stays) home to CPU memory until its next forward."""
        if self.placement is not None:
            self._model.to(self.placement)
        elif self.turns is not None:
            self.turns.release(self._model)
        else:
            self._model.to(device)
        return self

    def take_turns(self, turns: "DeviceTurns") -> "FrozenTeacher":
        """Keep the weights in CPU memory and borrow one of ``turns``' device slots for each forward."""
        turns.add(self._model)
        self.turns = turns
        return self

    def check_classes(self, example: torch.Tensor, num_classes: int) -> None:
        """Run one example through the teacher; raise if its class count differs from the student's."""
        out = self(example[:1], indices=None, check=False)
        if out.dim() != 2 or out.shape[1] != num_classes:
            raise TeacherError(f"teacher '{self.name}' outputs shape {list(out.shape)} per batch of 1, "
                               f"but the student has {num_classes} classes")
        self.num_classes = num_classes

    def __call__(self, x: torch.Tensor, indices: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
        """Logits [B, C] for inputs x [B, ...]; ``indices`` [B] name the samples in errors.

        The forward runs in inference mode (no autograd bookkeeping at all, cheaper than
        no_grad); the output is cloned out of it, so losses may save it for their backward."""
        if self._model.training:  # in case someone switched it back to train mode (eval() walks every module)
            self._model.eval()
        source = x.device
        run_on = self.turns.acquire(self._model) if self.turns is not None else self.placement
        with torch.inference_mode():
            out = logits_of(self._model(x if run_on is None else x.to(run_on, non_blocking=True)), self.name)
        # [B, C] back beside the inputs, an ordinary tensor outside inference mode (one copy either way)
        out = out.to(source, copy=True)
        if check:
            self.validate(out, len(x), indices)
        return out

    def validate(self, out: torch.Tensor, batch: int, indices: torch.Tensor | None) -> None:
        if out.dim() != 2 or out.shape[0] != batch or (self.num_classes and out.shape[1] != self.num_classes):
            raise TeacherError(f"teacher '{self.name}' returned shape {list(out.shape)}, "
                               f"expected [{batch}, {self.num_classes}], on samples {sample_list(indices)}")
        if bool(torch.isfinite(out).all()):  # the common case: one reduction, one sync
            return
        bad = ~torch.isfinite(out).all(dim=1)
        if bad.any():
            rows = bad.nonzero().flatten().cpu()  # indices may live on another device than the outputs
            ids = (indices.cpu()[rows] if indices is not None else rows).tolist()
            raise TeacherError(f"teacher '{self.name}' returned NaN or infinite logits for "
                               f"{len(ids)} sample(s), indices {ids[:10]}{' ...' if len(ids) > 10 else ''}")


def logits_of(out, name: str) -> torch.Tensor:
    """The logits in a model's output: a tensor, a mapping with ``logits`` (a dict, or a Hugging Face
    ``ModelOutput``, which is one), an object with a ``logits`` attribute, or a tuple's first item."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if "logits" not in out:
            raise TeacherError(f"teacher '{name}' returned a mapping without 'logits' (keys {sorted(out)[:10]}); "
                               "wrap it in a module whose forward returns the logits tensor")
        return out["logits"]
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TeacherError(f"teacher '{name}' returned {type(out).__name__}, not logits; "
                       "wrap it in a module whose forward returns the logits tensor [batch, classes]")


def sample_list(indices: torch.Tensor | None, most: int = 10) -> str:
    if indices is None:
        return "(no indices given)"
    ids = indices.flatten().tolist()
    return f"{ids[:most]}{' ...' if len(ids) > most else ''}"


def run_teachers(teachers, x: torch.Tensor, index: torch.Tensor | None, policy: str = "stop",
                 events: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every teacher's logits on a batch: ([K, B, C], alive [K] bool).

    A teacher that fails (non-finite or misshapen output, or an exception from its forward):
    ``policy="stop"`` raises a TeacherError naming it; ``policy="drop"`` leaves it out of this
    batch (its logits are a uniform placeholder and ``alive`` is False), and appends an event
    to ``events`` so the run records it. If every teacher fails, the batch cannot be used.
    """
    pool = getattr(teachers[0], "pool", None) if len(teachers) else None
    if pool is not None:  # cached teachers: the whole pool in one gather (see teachers/cached.py)
        stacked = pool.lookup_all(teachers, x, index)
        if stacked is not None:
            return stacked, torch.ones(len(teachers), dtype=torch.bool, device=stacked.device)
    outs: list[torch.Tensor | None] = [None] * len(teachers)
    for i in run_order(teachers):
        t = teachers[i]
        try:
            outs[i] = t(x, index)
        except Exception as exc:  # noqa: BLE001 - any failure of a teacher is handled by the policy
            error = exc if isinstance(exc, TeacherError) else TeacherError(
                f"teacher '{t.name}' raised {type(exc).__name__}: {exc}, on samples {sample_list(index)}")
            if policy == "stop":
                raise error from exc
            if events is not None:
                events.append({"event": "teacher_dropped", "teacher": t.name, "error": str(error)})
    if all(o is not None for o in outs):  # the common case: no bookkeeping tensors to build and test
        logits = torch.stack(outs)
        return logits, torch.ones(len(outs), dtype=torch.bool, device=logits.device)
    alive = torch.tensor([o is not None for o in outs])
    if not alive.any():
        raise TeacherError("every teacher failed on this batch: " + "; ".join(e["error"] for e in (events or [])[-len(outs):]))
    shape = next(o for o in outs if o is not None)
    logits = torch.stack([o if o is not None else torch.zeros_like(shape) for o in outs])
    return logits, alive.to(logits.device)


def run_order(teachers) -> list[int]:
    """Positions of ``teachers`` in the order to run them: as given, except that teachers taking turns
    on the device (one shared :class:`~mtkd.teachers.placement.DeviceTurns`) start with those already
    there, which saves a move per batch and slot; their outputs keep the given order."""
    turns = getattr(teachers[0], "turns", None) if len(teachers) else None
    if turns is None or any(getattr(t, "turns", None) is not turns for t in teachers):
        return list(range(len(teachers)))
    return turns.order([t.model for t in teachers])
