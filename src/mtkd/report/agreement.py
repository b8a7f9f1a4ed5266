"""Teacher agreement: the fraction of test samples on which two models predict the same class.

A pairwise top-1 agreement matrix (the complement of the pairwise "disagreement" diversity
measure in Kuncheva & Whitaker, *Measures of Diversity in Classifier Ensembles*, Machine
Learning 51, 2003): A[i, j] = mean over samples of [argmax p_i = argmax p_j]; the diagonal is 1.
Low off-diagonal values mean the models make different mistakes, which is what an ensemble
(and a student distilled from it) gains from.
"""
from __future__ import annotations

import torch


def agreement_matrix(predictions: torch.Tensor) -> torch.Tensor:
    """predictions: [M, N] predicted class of M models on N samples -> [M, M] agreement in [0, 1]."""
    if predictions.ndim != 2 or predictions.shape[1] == 0:
        raise ValueError(f"predictions must be [models, samples] with samples > 0; got {list(predictions.shape)}")
    same = predictions[:, None, :] == predictions[None, :, :]  # [M, M, N]
    return same.float().mean(dim=2)
