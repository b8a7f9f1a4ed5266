"""mtkd: multi-teacher knowledge distillation.

Merge many trained models (teachers) into one small, fast model (student)::

    import mtkd
    student = mtkd.distill(student, [teacher_a, teacher_b, teacher_c], train_loader, steps=3000)
"""
from .version import __version__

from .api import distill, train  # noqa: E402
from .config import load_config, parse_config  # noqa: E402
from .data import BatchLoader, DataSplits, IndexedTensorDataset, load_data, load_dataset  # noqa: E402
from .errors import ConfigError, MtkdError, TeacherError  # noqa: E402
from .evaluation import describe, ensemble_probs  # noqa: E402
from .models import build_model, count_params  # noqa: E402
from .models.files import load_model_file, save_model_file  # noqa: E402
from .pipeline import run_pipeline  # noqa: E402
from .teachers import FrozenTeacher  # noqa: E402
from .trainer import accuracy, predict_logits  # noqa: E402

__all__ = [
    "BatchLoader", "ConfigError", "DataSplits", "FrozenTeacher", "IndexedTensorDataset", "MtkdError", "TeacherError",
    "accuracy", "build_model", "count_params", "describe", "distill", "ensemble_probs", "load_config",
    "load_data", "load_dataset", "load_model_file", "parse_config", "predict_logits", "run_pipeline", "save_model_file", "train",
]

# reports, export (kept apart from the list above so branches merge cleanly)
from .export import export_model, export_student  # noqa: E402
from .report.calibration import expected_calibration_error  # noqa: E402
from .report.compare import compare_runs  # noqa: E402

__all__ += ["compare_runs", "expected_calibration_error", "export_model", "export_student"]

# everyday use: a trained student with its class names and preprocessing
from .student import Student, load_student  # noqa: E402

__all__ += ["Student", "load_student"]
