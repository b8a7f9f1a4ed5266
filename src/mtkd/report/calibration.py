"""Expected calibration error and the reliability diagram's bins.

Guo, Pleiss, Sun, Weinberger, *On Calibration of Modern Neural Networks*, ICML 2017
(arXiv:1706.04599), Section 2: the confidence of a prediction is its top-1 probability;
predictions are grouped into M equal-width confidence bins I_m = ((m-1)/M, m/M], and

    ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|

where acc(B_m) is the fraction of bin m predicted correctly and conf(B_m) its mean confidence.
The reliability diagram plots acc(B_m) against the bin; a calibrated model lies on the diagonal.
"""
from __future__ import annotations

import torch

DEFAULT_BINS = 15  # as in Guo et al. 2017


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS) -> dict:
    """Per-bin counts, accuracy and mean confidence of ``probs`` [N, C] against ``labels`` [N].

    Returns {"count": [M], "accuracy": [M], "confidence": [M]} (lists; an empty bin has
    accuracy and confidence 0)."""
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be [N, C] and labels [N]; got {list(probs.shape)} and {list(labels.shape)}")
    conf, pred = probs.float().max(dim=1)            # [N], [N]
    correct = (pred == labels).float()                # [N]
    # bin m (0-based) holds confidences in (m/M, (m+1)/M]: bucketize with right=False returns
    # the i with edges[i-1] < c <= edges[i] over the M-1 inner edges
    edges = torch.linspace(0.0, 1.0, bins + 1)[1:-1]  # [M-1]
    index = torch.bucketize(conf, edges, right=False)  # [N] in 0..M-1
    count = torch.bincount(index, minlength=bins).float()            # [M]
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    conf_sum = torch.bincount(index, weights=conf, minlength=bins)
    safe = count.clamp(min=1)
    return {"count": [int(c) for c in count], "accuracy": (acc_sum / safe).tolist(),
            "confidence": (conf_sum / safe).tolist()}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = DEFAULT_BINS) -> float:
    """ECE of ``probs`` [N, C] (rows sum to 1) against integer ``labels`` [N], in [0, 1]."""
    return ece_from_bins(reliability_bins(probs, labels, bins))


def ece_from_bins(rb: dict) -> float:
    n = sum(rb["count"])
    if n == 0:
        return 0.0
    return float(sum(c / n * abs(a - f) for c, a, f in zip(rb["count"], rb["accuracy"], rb["confidence"])))
