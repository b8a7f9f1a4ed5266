"""mtkd: multi-teacher knowledge distillation.

Merge many trained models (teachers) into one small, fast model (student)::

    import mtkd
    student = mtkd.distill(student, [teacher_a, teacher_b, teacher_c], train_loader, steps=3000)

The names below are loaded on first use (PEP 562), so ``import mtkd`` is cheap and importing one
module (say ``mtkd.losses.kd``) loads only what that module needs.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from .version import __version__

# public name -> the module that defines it
_PUBLIC = {
    "distill": ".api", "train": ".api",
    "load_config": ".config", "parse_config": ".config",
    "BatchLoader": ".data", "DataSplits": ".data", "IndexedTensorDataset": ".data", "load_data": ".data",
    "load_dataset": ".data",
    "ConfigError": ".errors", "MtkdError": ".errors", "TeacherError": ".errors",
    "describe": ".evaluation", "ensemble_probs": ".evaluation",
    "build_model": ".models", "count_params": ".models",
    "load_model_file": ".models.files", "save_model_file": ".models.files",
    "run_pipeline": ".pipeline",
    "FrozenTeacher": ".teachers",
    "accuracy": ".trainer", "predict_logits": ".trainer",
    # reports, export
    "export_model": ".export", "export_student": ".export",
    "expected_calibration_error": ".report.calibration",
    "compare_runs": ".report.compare",
    # everyday use: a trained student with its class names and preprocessing
    "Student": ".student", "load_student": ".student",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # a submodule, e.g. mtkd.config
    else:
        raise AttributeError(f"module 'mtkd' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # the same names for type checkers and the API reference (read statically)
    from .api import distill, train
    from .config import load_config, parse_config
    from .data import BatchLoader, DataSplits, IndexedTensorDataset, load_data, load_dataset
    from .errors import ConfigError, MtkdError, TeacherError
    from .evaluation import describe, ensemble_probs
    from .export import export_model, export_student
    from .models import build_model, count_params
    from .models.files import load_model_file, save_model_file
    from .pipeline import run_pipeline
    from .report.calibration import expected_calibration_error
    from .report.compare import compare_runs
    from .student import Student, load_student
    from .teachers import FrozenTeacher
    from .trainer import accuracy, predict_logits
