"""Model files: weights plus the built-in arch config that rebuilds the network.

A file is a dict ``{"format", "arch", "input_shape", "num_classes", "state_dict"}`` of
plain types and tensors, loaded with ``weights_only=True`` so opening it cannot run code.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError
from torch import nn

from ..errors import MtkdError, one_line
from ..io import load_torch, save_torch
from . import MODELS
from . import build_model

MODEL_FORMAT = "mtkd.model/1"


def save_model_file(path: str | Path, model: nn.Module, arch: BaseModel, input_shape, num_classes: int,
                    class_names: list[str] | None = None, preprocess: dict | None = None) -> None:
    """class_names: the output order's class names; preprocess: the input steps
    (:class:`mtkd.data.preprocess.Preprocessing` as a dict) that ``mtkd.load_student`` applies."""
    save_torch(path, {
        "format": MODEL_FORMAT,
        "arch": arch.model_dump(mode="json"),
        "input_shape": list(input_shape),
        "num_classes": int(num_classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **({"class_names": [str(c) for c in class_names]} if class_names else {}),
        **({"preprocess": preprocess} if preprocess else {}),
    })


def read_model_file(path: str | Path) -> dict:
    """The file's contents, checked to be an mtkd model file."""
    try:
        blob = load_torch(path)
    except FileNotFoundError:
        raise MtkdError(f"model file not found: {path}") from None
    except Exception as exc:
        import pickle

        if isinstance(exc, pickle.UnpicklingError):  # weights_only refused a Python object: it would run code
            raise MtkdError(f"{path} is not a readable mtkd model file: it holds Python objects besides tensors, "
                            "and loading them could run code; "
                            "mtkd model files hold only tensors and plain values (save with mtkd.save_model_file)") \
                from None
        raise MtkdError(f"{path} is not a readable mtkd model file ({one_line(exc)})") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise MtkdError(f"{path} is not an mtkd model file (format {MODEL_FORMAT}); "
                        "save models with mtkd.save_model_file or let `mtkd run` train them")
    return blob


def arch_config(blob: dict, where: str) -> BaseModel:

    arch = blob["arch"].get("arch")
    if isinstance(arch, str) and ":" in arch:  # a library model (models/sources.py)
        from .sources import LibraryModelConfig

        return LibraryModelConfig.model_validate(blob["arch"])
    if arch not in MODELS:
        raise MtkdError(f"{where}: the file's arch {arch!r} is not a built-in model ({', '.join(MODELS)})")
    try:
        return MODELS[arch].config.model_validate(blob["arch"])
    except ValidationError as exc:
        raise MtkdError(f"{where}: the file's arch config is invalid: {exc.errors()[0]['msg']}") from None


def load_model_file(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the network stored in ``path``; returns (model, file contents without weights)."""

    blob = read_model_file(path)
    cfg = arch_config(blob, str(path))
    if ":" in cfg.arch:  # a library model: the file holds every weight, its 'weights' file is not read
        from .sources import build

        model = build(cfg, tuple(blob["input_shape"]), blob["num_classes"], load=False, where=str(path))
    else:
        model = build_model(cfg, tuple(blob["input_shape"]), blob["num_classes"])
    model.load_state_dict(blob["state_dict"])
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, meta
