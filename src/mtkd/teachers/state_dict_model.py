"""A teacher from a plain state dict (``torch.save(model.state_dict(), path)``) whose
network is one of mtkd's built-in architectures, named in the config with its size keys.

The file is read with ``weights_only=True`` (tensors only; no code runs). A file that
wraps the weights in ``{"state_dict": ...}`` (mtkd model files, many trainers) also works.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MtkdError
from ..io import load_torch
from .external import ExternalTeacher
from ..models import build_model


class StateDictTeacher(ExternalTeacher):
    kind = "state_dict"

    def __init__(self, path: str | Path, arch_cfg, data_classes, input_shape, classes=None, name: str = "state_dict"):

        if not Path(path).is_file():
            raise MtkdError(f"teacher '{name}': state dict file not found: {path}")
        try:
            state = load_torch(path)
        except Exception as exc:  # noqa: BLE001 - torch.load raises many types
            raise MtkdError(f"teacher '{name}': {path} is not a weights-only torch file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise MtkdError(f"teacher '{name}': {path} does not hold a state dict (a mapping of names to tensors)")
        names = [str(c) for c in (classes or data_classes)]
        super().__init__(names, data_classes, name)
        self.module = build_model(arch_cfg, tuple(input_shape), len(names))
        try:
            self.module.load_state_dict(state)
        except RuntimeError as exc:
            raise MtkdError(f"teacher '{name}': the weights in {path} do not fit arch '{arch_cfg.arch}' with these "
                            f"size keys: {str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from None

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
