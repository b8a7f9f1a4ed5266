"""Test-split evaluation: accuracy, calibration (ECE), parameter count and inference time per 1,000 examples."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch
from torch import nn

from .aggregation.coverage import class_masks, ensemble_mean
from .data import IndexedTensorDataset
from .models import count_params
from .trainer import predict_logits


def ensemble_probs(models: Sequence[nn.Module], x: torch.Tensor, device="cpu") -> torch.Tensor:
    """Mean of the models' softmax probabilities (T = 1): [N, C]; with teachers that cover only
    some classes, each class is the mean over the teachers that cover it (see ``coverage_mix``)."""
    probs = torch.stack([torch.softmax(predict_logits(m, x, device), dim=-1) for m in models])  # [K, N, C]
    return ensemble_mean(probs, range(len(models)), class_masks(models, probs.shape[-1]))


@torch.no_grad()
def ms_per_1000(models: Sequence[nn.Module], x: torch.Tensor, device="cpu", repeats: int = 5) -> float:
    """Median wall time, in milliseconds, to predict 1,000 examples (one batch of up to 1,000,
    scaled), all ``models`` in turn as an ensemble would. One warm-up pass first."""
    for m in models:
        m.eval()
    return ms_per_1000_of(lambda batch: [m(batch) for m in models], x[:1000].to(device), repeats)


def ms_per_1000_of(run: Callable[[torch.Tensor], object], x: torch.Tensor, repeats: int = 5) -> float:
    """The protocol of :func:`ms_per_1000` for any predictor ``run`` (an exported model, say):
    one batch of up to 1,000 examples of ``x``, one warm-up pass, median of ``repeats``, scaled."""
    batch = x[:1000]

    def once() -> float:
        start = time.perf_counter()
        run(batch)
        if batch.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    seconds = statistics.median(once() for _ in range(repeats))
    return seconds * 1000.0 * 1000.0 / len(batch)


def predict_probs(models: Sequence[nn.Module], data: IndexedTensorDataset, device="cpu") -> torch.Tensor:
    """Softmax probabilities [N, C] of one model, or the mean over an ensemble's models."""
    return ensemble_probs(models, data.x, device)


def describe(models: Sequence[nn.Module], data: IndexedTensorDataset, device="cpu",
             probs: torch.Tensor | None = None, ms: float | None = None) -> dict:
    """{"params", "accuracy", "ece", "ms_per_1000"} of one model, or of an ensemble of several.

    probs: the models' test probabilities [N, C] (:func:`predict_probs`) when already computed,
    so the models do not predict the test split a second time. ECE: 15 bins (Guo et al. 2017).
    ms: the time per 1,000 examples when already known (models that never share one device)."""
    from .report.calibration import expected_calibration_error

    if probs is None:
        probs = predict_probs(models, data, device)
    pred = probs.argmax(1)
    return {
        "params": sum(count_params(m) for m in models),
        "accuracy": round(float((pred == data.y).float().mean()), 4),
        "ece": round(expected_calibration_error(probs, data.y), 4),
        "ms_per_1000": round(ms_per_1000(models, data.x, device) if ms is None else ms, 3),
    }
