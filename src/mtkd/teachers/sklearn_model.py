"""A teacher from a scikit-learn estimator with ``predict_proba`` (also the scikit-learn
interfaces of XGBoost, LightGBM and CatBoost, which have the same method and ``classes_``).

Estimators are stored as pickles (``joblib.dump`` / ``pickle.dump``), and loading a pickle
runs code from the file. A file is therefore opened only when the teacher sets
``allow_code: true`` (older name ``allow_pickle: true``; ``--allow-code`` on the command line): only for files
you trust.
Inputs are flattened to [B, features]; the output is log-probabilities in the data set's
class order (``classes_`` names the estimator's classes unless ``classes`` is given).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import MtkdError, first_line
from .external import ExternalTeacher, log_probabilities, require, teacher_class_names


class SklearnTeacher(ExternalTeacher):
    kind = "sklearn"

    def __init__(self, estimator, data_classes, classes=None, name: str = "sklearn"):
        if not hasattr(estimator, "predict_proba"):
            raise MtkdError(f"teacher '{name}': {type(estimator).__name__} has no predict_proba; use a classifier "
                            "that gives probabilities (e.g. SVC(probability=True))")
        own = getattr(estimator, "classes_", None)
        width = len(own) if own is not None else None
        super().__init__(teacher_class_names(classes, own, width, data_classes, name), data_classes, name)
        self.estimator = estimator

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        features = x.detach().cpu().reshape(len(x), -1).numpy()
        return log_probabilities(torch.as_tensor(np.asarray(self.estimator.predict_proba(features))))


def load_estimator(path: str | Path, allow_pickle: bool, name: str = "sklearn"):
    """Unpickle an estimator file, only with ``allow_pickle`` (unpickling runs code from the file)."""
    path = Path(path)
    if not allow_pickle:
        raise MtkdError(f"teacher '{name}': {path} is a pickle, and loading a pickle runs code from the file; "
                        "if you trust it, set allow_code: true (or its older name allow_pickle: true) on this teacher, "
                        "or pass --allow-code")
    if not path.is_file():
        raise MtkdError(f"teacher '{name}': estimator file not found: {path}")
    require("sklearn", "sklearn", f"scikit-learn teacher '{name}'")
    try:
        if path.suffix == ".joblib":
            import joblib

            estimator = joblib.load(path)
        else:
            with open(path, "rb") as handle:
                estimator = pickle.load(handle)
    except Exception as exc:  # noqa: BLE001 - an unpickling failure can be of any type
        raise MtkdError(f"teacher '{name}': cannot unpickle {path} ({type(exc).__name__}: {first_line(exc)})") from None
    # a pickle of anything else (a number, a dict, ...) unpickles fine and fails later, far from here
    if not callable(getattr(estimator, "predict_proba", None)) and not callable(getattr(estimator, "predict", None)):
        raise MtkdError(f"teacher '{name}': {path} holds a {type(estimator).__name__}, not a fitted scikit-learn "
                        "estimator (an object with predict_proba or predict); pickle the fitted estimator itself")
    return estimator
