"""Teachers score the student during distillation: on a fixed held-out labeled batch (the
validation split), how often the student's prediction (argmax) matches each teacher's, the
ensemble's (argmax of the mean of the teachers' probabilities) and the label.

Logged every ``distill.monitor_every`` steps to ``metrics.jsonl`` as ``monitor/accuracy``,
``monitor/agree/<teacher>``, ``monitor/agree/ensemble`` and ``monitor/by_class`` (agreement with
the ensemble per true class), plotted and tabulated in ``report.md``, so a
user sees where the student still disagrees with its teachers while it trains. The teachers'
predictions on the batch are computed once (they are frozen); each call runs only the student.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .aggregation.coverage import class_masks, ensemble_mean
from .data import IndexedTensorDataset
from .teachers.placement import visiting
from .trainer import predict_logits


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of samples whose predicted classes match: a, b [N] class indices (or [N, C] scores)."""
    a = a.argmax(-1) if a.dim() == 2 else a
    b = b.argmax(-1) if b.dim() == 2 else b
    return float((a == b).float().mean())


class TeacherMonitor:
    """``monitor()`` -> {"monitor/accuracy", "monitor/agree/<name>", "monitor/agree/ensemble"}.

    teachers: FrozenTeacher objects (or anything with ``.model`` and ``.name``); data: labeled
    samples held out from training, at most ``max_samples`` of them are used (the first ones).
    """

    def __init__(self, student: nn.Module, teachers: Sequence, data: IndexedTensorDataset,
                 device: torch.device | str = "cpu", max_samples: int = 1000):
        self.student, self.device = student, device
        self.x, self.y = data.x[:max_samples], data.y[:max_samples]
        # frozen teachers: their predictions on the fixed batch never change, compute them once
        logits = []  # K x [N, C]; a teacher kept in CPU memory (taking turns) visits the device for it
        for t in teachers:
            with visiting(t.model, device) as where:
                logits.append(predict_logits(t.model, self.x, where))
        self.names = [t.name for t in teachers]
        self.teacher_pred = [lg.argmax(-1) for lg in logits]  # K x [N]
        self.classes = logits[0].shape[-1]
        probs = torch.stack([lg.softmax(-1) for lg in logits])  # [K, N, C]
        # the same ensemble as the evaluation's (a partial teacher votes only on its classes)
        self.ensemble_pred = ensemble_mean(probs, range(len(logits)), class_masks(teachers, self.classes)).argmax(-1)

    def __call__(self) -> dict[str, float]:
        pred = predict_logits(self.student, self.x, self.device).argmax(-1)  # [N]
        out = {"monitor/accuracy": agreement(pred, self.y)}
        for name, tp in zip(self.names, self.teacher_pred):
            out[f"monitor/agree/{name}"] = agreement(pred, tp)
        if len(self.names) > 1:
            out["monitor/agree/ensemble"] = agreement(pred, self.ensemble_pred)
        # where the student still disagrees: agreement with the ensemble per true class ([C], None
        # for a class absent from the batch), shown as a table in report.md
        out["monitor/by_class"] = [agreement(pred[self.y == c], self.ensemble_pred[self.y == c])
                                   if bool((self.y == c).any()) else None for c in range(self.classes)]
        return out
