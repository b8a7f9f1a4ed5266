"""What every teacher from outside mtkd's model zoo shares: optional imports with a clear
message, and mapping the teacher's classes onto the data set's classes by name.

An external teacher is an ``nn.Module`` whose ``forward(x)`` returns logits [B, C] in the
data set's class order, so the pipeline, the aggregators and the evaluation treat it like any
other teacher. Teachers that give probabilities (scikit-learn, most ONNX exports of non-torch
models) return log-probabilities as logits: ``softmax(log p / T)`` is ``p^(1/T)``
renormalised, the temperature-softened distribution, and ``softmax(log p) = p``.

Classes are matched by name. A teacher may cover only some of the data set's classes
(knowledge amalgamation, Shen et al., "Amalgamating Knowledge towards Comprehensive
Classification", AAAI 2019): its missing classes get the logit ``MISSING_LOGIT`` (probability
0 at any temperature used here) and ``class_mask`` [C] marks the classes it covers, so the
ensemble renormalises each class over the teachers that cover it
(:func:`mtkd.aggregation.coverage.coverage_mix`). Classes a teacher knows but the data set
does not are left out and the teacher's distribution is renormalised over the rest.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..optional import require  # noqa: F401 - re-exported for the teacher kinds
from ..errors import MtkdError
from ..io import update_sha256

# Logit of a class the teacher does not cover. Finite (so outputs pass the finite check) and
# low enough that exp(MISSING_LOGIT / T) underflows to exactly 0 in float32 for T <= 100.
MISSING_LOGIT = -1.0e4


def log_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities [B, Ct] (rows renormalised to sum to 1) -> log-probabilities, a probability
    of exactly 0 becoming MISSING_LOGIT rather than -inf."""
    probs = probs.double().clamp_min(0)
    total = probs.sum(1, keepdim=True)
    if not bool((total > 0).all()):
        raise MtkdError("a teacher returned a row of probabilities that sums to 0")
    return torch.log(probs / total).clamp_min(MISSING_LOGIT).float()


class ExternalTeacher(nn.Module):
    """Base class: subclasses implement ``raw(x)`` -> [B, Ct] logits in the teacher's own class order.

    teacher_classes: the teacher's class names in its output order; data_classes: the data
    set's class names (the student's output order).
    """

    kind = "external"

    def __init__(self, teacher_classes: Sequence, data_classes: Sequence, name: str = "teacher"):
        super().__init__()
        # inputs [B, F] -> what the model was trained on (the raw table columns when the data set
        # normalises them, see mtkd.data.preprocess.RawInputs); None: the inputs as they are
        self.input_map: nn.Module | None = None
        self.name = name
        self.teacher_classes = [str(c) for c in teacher_classes]
        self.data_classes = [str(c) for c in data_classes]
        if len(set(self.teacher_classes)) != len(self.teacher_classes):
            raise MtkdError(f"teacher '{name}': its class names repeat: {self.teacher_classes}")
        position = {c: j for j, c in enumerate(self.teacher_classes)}
        covered = [c for c in self.data_classes if c in position]
        if not covered:
            raise MtkdError(f"teacher '{name}': none of its classes {self.teacher_classes[:10]} are classes of the "
                            f"data set {self.data_classes[:10]}; set the teacher's 'classes' to its class names")
        # column of the teacher's output for each data-set class (0 where it has none; masked below)
        self.register_buffer("source", torch.tensor([position.get(c, 0) for c in self.data_classes]), persistent=False)
        self.register_buffer("class_mask", torch.tensor([c in position for c in self.data_classes]), persistent=False)
        # the teacher's columns for classes the data set does not have (fixed: computed once, not per batch)
        dropped = torch.ones(len(self.teacher_classes), dtype=torch.bool)
        dropped[torch.unique(self.source[self.class_mask])] = False
        self.register_buffer("dropped", dropped, persistent=False)
        self.drops_columns = bool(dropped.any())

    source_digest: str | None = None  # sha256 of the file (or directory) it was read from: set_source

    def set_source(self, path: str | Path) -> None:
        """Record the bytes this teacher was read from (hashed now, when they are the bytes loaded)."""
        h = hashlib.sha256()
        root = Path(path)
        for file in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if file.is_file():
                h.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
                update_sha256(h, file)
        self.source_digest = h.hexdigest()

    def content_fingerprint(self) -> str:
        """sha256 of what decides this teacher's outputs that its state_dict does not hold (an ONNX
        graph, a pickled estimator, a TorchScript file): the source file's bytes and the class mapping.
        The teacher-output cache keys on it, so a changed file is never served stale outputs. A teacher
        built in memory (no recorded source) gets a fresh random key: never served from the cache."""
        h = hashlib.sha256(json.dumps([self.teacher_classes, self.data_classes]).encode())
        if self.input_map is not None:
            for buffer in self.input_map.buffers():
                h.update(buffer.detach().cpu().numpy().tobytes())
        h.update((self.source_digest or uuid.uuid4().hex).encode())
        return h.hexdigest()

    @property
    def partial(self) -> bool:
        return not bool(self.class_mask.all())

    def raw(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.raw(x if self.input_map is None else self.input_map(x))  # [B, Ct]
        if raw.dim() != 2 or raw.shape[1] != len(self.teacher_classes):
            raise MtkdError(f"teacher '{self.name}' returned shape {list(raw.shape)}; expected [batch, "
                            f"{len(self.teacher_classes)}] for its classes {self.teacher_classes[:10]}")
        # the teacher's distribution over the classes the data set knows: log-softmax over the kept
        # columns renormalises away classes the data set does not have (a shift, same softmax)
        raw = raw.float().to(self.source.device)
        if self.drops_columns:
            raw = raw.masked_fill(self.dropped, float("-inf")).log_softmax(1).clamp_min(MISSING_LOGIT)
        out = raw[:, self.source]  # [B, C] in the data set's order
        return out.masked_fill(~self.class_mask, MISSING_LOGIT).to(x.device)


def teacher_class_names(given: Sequence | None, own: Sequence | None, width: int | None,
                        data_classes: Sequence, name: str) -> list[str]:
    """The teacher's class names: the config's ``classes``, else the model's own (scikit-learn
    ``classes_``, Hugging Face ``id2label``), else the data set's when the widths agree."""
    if given:
        if width is not None and len(given) != width:
            raise MtkdError(f"teacher '{name}': 'classes' lists {len(given)} names but the model has {width} outputs")
        return [str(c) for c in given]
    if own is not None:
        return [str(c) for c in own]
    if width is not None and width != len(data_classes):
        raise MtkdError(f"teacher '{name}' has {width} outputs but the data set has {len(data_classes)} classes; "
                        "set the teacher's 'classes' to its class names in output order")
    return [str(c) for c in data_classes]
