"""Mixed precision: one place that turns the ``amp`` setting into an autocast context.

bf16 autocast works on CPUs and GPUs (on CPUs it helps where the hardware has bf16 units);
fp16 needs CUDA and a gradient scaler, since its narrow exponent underflows small gradients.
"""
from __future__ import annotations

import torch

from .errors import ConfigError


def autocast(device: torch.device, amp: str):
    """bf16 / fp16 autocast on ``device`` (fp16 only on CUDA), or a disabled context for "off"."""
    device = torch.device(device)
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp: 'fp16' autocast needs a CUDA device; use 'bf16' on the CPU, or 'off'")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def grad_scaler(device: torch.device, amp: str):
    """A GradScaler for fp16 on CUDA; None otherwise (bf16 keeps float32's exponent range)."""
    if amp == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
