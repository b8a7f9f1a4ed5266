"""A teacher from a TorchScript file (``torch.jit.save`` of a scripted or traced model).

The file holds the model's graph and weights; ``torch.jit.load`` rebuilds it without
unpickling Python objects, but the graph is a program: TorchScript has operators that read and
write files, so a scripted module can do so when it runs. Loading one therefore needs the same
opt-in as a pickle (``allow_code: true`` on the teacher, or ``--allow-code``). Its outputs are
taken as logits, mapped by class name.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MtkdError
from .external import ExternalTeacher, teacher_class_names


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:200]


class TorchScriptTeacher(ExternalTeacher):
    kind = "torchscript"

    def __init__(self, path: str | Path, data_classes, input_shape, classes=None, name: str = "torchscript",
                 allow_code: bool = False):
        if not Path(path).is_file():
            raise MtkdError(f"teacher '{name}': TorchScript file not found: {path}")
        if not allow_code:
            raise MtkdError(f"teacher '{name}': {path} is a TorchScript program, which can read and write files when "
                            "it runs; if you trust it, set allow_code: true on this teacher (or pass --allow-code)")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError or its own types
            raise MtkdError(f"teacher '{name}': {path} is not a TorchScript file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None
        module.eval()
        try:  # one small probe batch: a model made for other inputs fails here with one line
            with torch.no_grad():
                width = module(torch.zeros(2, *input_shape)).shape[-1]
        except Exception as exc:  # noqa: BLE001 - the scripted graph raises torch's own types
            raise MtkdError(f"teacher '{name}': the TorchScript model does not accept the data's inputs "
                            f"[batch, {', '.join(map(str, input_shape))}] float32 ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
        super().__init__(teacher_class_names(classes, None, width, data_classes, name), data_classes, name)
        self.module = module  # a submodule: moves with .to(device), counted in the parameters

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(next(self.module.parameters(), x).device))
