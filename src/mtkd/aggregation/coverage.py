"""Teachers that cover only some of the classes (knowledge amalgamation).

Shen, Wang, Song, Sun, Song, "Amalgamating Knowledge towards Comprehensive Classification",
AAAI 2019 (arXiv:1811.02796): a student learns the union of the classes of several teachers,
each a specialist for its own subset (the paper amalgamates the teachers' features layer by
layer; we take only its setting, at the level of outputs). Subsets here may overlap in any
way, so a class several teachers (or none) know needs a rule; this one is ours:

A teacher k covers the classes where ``mask[k, c]`` is True; where it does not, its
probability is 0 ("no vote"). With the aggregator's per-sample teacher weights w [B, K]
and softened probabilities p [K, B, C]:

    q[b, c]      = sum_k w[b, k] * mask[k, c] * p[k, b, c]  /  sum_k w[b, k] * mask[k, c]
    target[b, c] = q[b, c] / sum_c' q[b, c']

i.e. each class is the weighted mean over the teachers that cover it (a class no teacher with
weight > 0 covers gets 0), then the row is renormalised. When every teacher covers every
class this is exactly the ordinary mixture ``sum_k w[b, k] p[k, b, c]``, so the aggregators
are unchanged for full teachers; the pipeline applies this rule only when some teacher is
partial. Aggregators that use per-teacher temperatures (``adaptive_temperature``) keep their
per-teacher KD terms: a partial teacher there only pulls the student within its own classes.
"""
from __future__ import annotations

from typing import Sequence

import torch


def class_masks(teachers: Sequence, num_classes: int | None = None) -> torch.Tensor | None:
    """[K, C] bool: the classes each teacher covers (``class_mask`` of an external teacher's
    model; a teacher without one covers all). None when every teacher covers every class.
    ``num_classes`` defaults to the length of the teachers' masks."""
    given = [getattr(getattr(t, "model", t), "class_mask", None) for t in teachers]
    if num_classes is None:
        num_classes = next((len(m) for m in given if m is not None), 0)
    rows = [torch.ones(num_classes, dtype=torch.bool) if m is None else m.detach().cpu().bool() for m in given]
    masks = torch.stack(rows) if rows else torch.ones(0, num_classes, dtype=torch.bool)
    return None if bool(masks.all()) else masks


def coverage_mix(probs: torch.Tensor, weights: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """probs [K, B, C], weights [B, K], masks [K, C] -> target [B, C] (rows sum to 1), as above."""
    m = masks.to(device=probs.device, dtype=probs.dtype)  # [K, C]
    num = torch.einsum("bk,kc,kbc->bc", weights, m, probs)  # [B, C]
    den = weights @ m  # [B, C]: weight of the teachers that cover each class
    q = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    return q / q.sum(1, keepdim=True).clamp_min(1e-12)


def ensemble_mean(probs: torch.Tensor, members: Sequence[int], masks: torch.Tensor | None = None) -> torch.Tensor:
    """probs [K, N, C] (T = 1) -> [N, C], the members' mean (per class over covering teachers)."""
    sub = probs[list(members)]  # [M, N, C]
    if masks is None:
        return sub.mean(0)
    weights = torch.full((sub.shape[1], len(members)), 1.0 / len(members), dtype=sub.dtype)
    return coverage_mix(sub, weights, masks[list(members)])
