"""A trained student ready to use: its network, its class names and the run's input preprocessing.

    import mtkd
    student = mtkd.load_student("runs/tabular")          # a run directory, or a student.pt file
    student.predict(rows)          # class names, one per row
    student.predict_proba(rows)    # [N, C] probabilities, columns in student.classes order

``rows`` are raw feature rows as in the training file: a pandas DataFrame (columns picked by
name), a NumPy array or a tensor [N, F] in the stored column order; NaN marks a missing cell.
The module's ``forward`` is the same computation on a tensor (raw rows -> logits), so it can be
exported with the preprocessing inside (``mtkd export``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.preprocess import Preprocessing
from .errors import MtkdError


class Student(nn.Module):
    def __init__(self, model: nn.Module, classes: list[str], preprocess: Preprocessing | None = None):
        super().__init__()
        self.model = model.eval()
        self.classes = [str(c) for c in classes]
        self.preprocessing = preprocess
        self.columns = list(preprocess.columns) if preprocess is not None else None
        # missing-value filling and normalisation as torch operations (exportable); None: inputs as they are
        self.prep = preprocess.module() if preprocess is not None and preprocess.active else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rows x [B, F] (NaN = missing) -> logits [B, C]."""
        return self.model(x if self.prep is None else self.prep(x))

    def inputs(self, rows: Any) -> torch.Tensor:
        """Raw rows (DataFrame, array, tensor or nested lists) -> a float tensor [N, F]; a missing
        cell the run has no filling for is an error naming its row and column."""
        if hasattr(rows, "columns") and hasattr(rows, "to_numpy"):  # a pandas DataFrame
            if self.columns is not None:
                absent = [c for c in self.columns if c not in rows.columns]
                if absent:
                    raise MtkdError(f"input: columns {absent[:5]} are missing; the student reads {self.columns}")
                rows = rows[self.columns]
            rows = rows.to_numpy(dtype=np.float32, na_value=np.nan)
        x = torch.as_tensor(np.asarray(rows, dtype=np.float32) if not isinstance(rows, torch.Tensor) else rows).float()
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if self.columns is not None and (x.dim() != 2 or x.shape[1] != len(self.columns)):
            raise MtkdError(f"input: rows have {list(x.shape[1:])} values, the student reads {len(self.columns)} "
                            f"columns {self.columns[:10]}")
        if self.preprocessing is not None:
            self.preprocessing.check_missing(x.numpy(), "input")
        return x

    @torch.no_grad()
    def predict_proba(self, rows: Any, batch_size: int = 4096) -> np.ndarray:
        """Probabilities [N, C], columns in ``self.classes`` order."""
        x = self.inputs(rows)
        device = next(self.model.parameters(), torch.zeros(())).device
        out = [torch.softmax(self(x[i:i + batch_size].to(device)).float(), dim=-1).cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict(self, rows: Any) -> np.ndarray:
        """The most probable class name of each row."""
        return np.asarray(self.classes, dtype=object)[self.predict_proba(rows).argmax(axis=1)]


def load_student(path: str | Path) -> Student:
    """The student of a finished run (a run directory) or of a model file, with its class names
    and preprocessing. Weights load with ``weights_only=True``: opening the file runs no code."""
    from .models.files import load_model_file

    path = Path(path)
    file = path / "student.pt" if path.is_dir() else path
    if not file.is_file():
        raise MtkdError(f"{path}: no student.pt; give a finished run directory (from `mtkd run`) or a model file")
    model, meta = load_model_file(file)
    classes = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    return Student(model, classes, Preprocessing.from_dict(meta.get("preprocess")))


def read_inputs(path: Path, student: Student) -> torch.Tensor:
    """Rows to predict from a CSV file (the student's columns, by name; other columns ignored) or
    an .npz file (array ``x``, else ``x_test``)."""
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise MtkdError(f"input file not found: {path}")
        with np.load(path, allow_pickle=False) as arrays:
            key = next((k for k in ("x", "x_test") if k in arrays), None)
            if key is None:
                raise MtkdError(f"{path}: no array 'x' (or 'x_test') to predict; it holds {sorted(arrays.keys())}")
            return student.inputs(arrays[key])
    if path.suffix.lower() != ".csv":
        raise MtkdError(f"{path}: give a .csv file (with a header row) or an .npz file")
    from .data.csv_files import read_table

    _, x, _ = read_table(path, None, student.columns, [], label_required=False)
    if student.preprocessing is not None:
        student.preprocessing.check_missing(x, f"{path}", csv_lines=True)
    return student.inputs(x)


def write_predictions(student: Student, x: torch.Tensor, out: Path) -> int:
    """``prediction`` (class name) and ``p_<class>`` columns, one row per input row; written atomically."""
    import csv
    import io

    from .io import write_text

    probs = student.predict_proba(x)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["prediction", *(f"p_{c}" for c in student.classes)])
    for row in probs:
        writer.writerow([student.classes[int(row.argmax())], *(f"{p:.6g}" for p in row)])
    write_text(out, buffer.getvalue())
    return len(probs)
