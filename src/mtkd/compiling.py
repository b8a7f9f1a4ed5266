"""Faster student steps: ``torch.compile`` of the student (``distill.compile``) and the channels-last
memory format for convolutional students on images (``distill.channels_last``).

Both change how the student's forward is computed, not what: the compiled forward and the
channels-last convolutions give the same outputs up to float rounding. The student is compiled in
place (``nn.Module.compile``), so its ``state_dict`` keys, checkpoints and ``student.pt`` are those of
an uncompiled run; the compiled forward is dropped when training ends, so the module handed back
is plain.
"""
from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from .errors import ConfigError

# keyword arguments of torch.compile for the student (torch's defaults: the inductor backend)
COMPILE_OPTIONS: dict = {}


def check_compile(device: torch.device) -> None:
    """Raise a one-line ConfigError when ``torch.compile`` cannot work on ``device`` here."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise ConfigError("distill.compile: torch.compile does not support this Python or platform; "
                          "set distill.compile: false")
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError("distill.compile: torch.compile on CUDA needs Triton (pip install triton); "
                              "set distill.compile: false")
        return
    from torch._inductor import config

    compilers = [c for c in ([os.environ.get("CXX")] + list(config.cpp.cxx)) if c]
    if not any(shutil.which(c) for c in compilers):
        raise ConfigError(f"distill.compile: torch.compile on the CPU needs a C++ compiler ({' or '.join(compilers)}) "
                          "on the PATH; install one (e.g. apt install g++) or set distill.compile: false")


def speed_up(student: nn.Module, compile: bool, channels_last: bool, device: torch.device) -> None:
    """Compile ``student``'s forward in place and/or put its 4-D weights in channels-last format."""
    if channels_last:
        # parameters keep their identity (``.data`` changes), so an optimizer built over them still steps them
        student.to(memory_format=torch.channels_last)
    if compile:
        check_compile(device)
        student.compile(**COMPILE_OPTIONS)


def slow_down(student: nn.Module) -> None:
    """Drop the compiled forward that :func:`speed_up` installed (the module is plain again)."""
    if getattr(student, "_compiled_call_impl", None) is not None:
        student._compiled_call_impl = None  # nn.Module.compile's slot; no public way to undo it


def channels_last_batch(x: torch.Tensor) -> torch.Tensor:
    """An image batch [B, C, H, W] in channels-last memory format (other shapes as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


__all__ = ["channels_last_batch", "check_compile", "slow_down", "speed_up"]
