"""A teacher from a TorchScript file (``torch.jit.save`` of a scripted or traced model).

The file holds the model's graph and weights; ``torch.jit.load`` rebuilds it without
unpickling Python objects. Its outputs are taken as logits, mapped by class name.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MtkdError
from .external import ExternalTeacher, teacher_class_names


class TorchScriptTeacher(ExternalTeacher):
    kind = "torchscript"

    def __init__(self, path: str | Path, data_classes, input_shape, classes=None, name: str = "torchscript"):
        if not Path(path).is_file():
            raise MtkdError(f"teacher '{name}': TorchScript file not found: {path}")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError or its own types
            raise MtkdError(f"teacher '{name}': {path} is not a TorchScript file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None
        module.eval()
        with torch.no_grad():
            width = module(torch.zeros(1, *input_shape)).shape[-1]
        super().__init__(teacher_class_names(classes, None, width, data_classes, name), data_classes, name)
        self.module = module  # a submodule: moves with .to(device), counted in the parameters

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(next(self.module.parameters(), x).device))
