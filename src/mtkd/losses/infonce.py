"""Spatial-agnostic InfoNCE between two models' features, as TAS uses it.

InfoNCE: van den Oord, Li and Vinyals, "Representation Learning with Contrastive Predictive
Coding" (2018, arXiv:1807.03748). TAS (Li, Wang, Yan, Ding, Gao and Xia, "TAS: Distilling
Arbitrary Teacher and Student via a Hybrid Assistant", 2024, arXiv:2410.12342) aligns the
features of heterogeneous models with InfoNCE after spatial smoothing instead of a pixel-wise
MSE, because features of different architectures are not spatially aligned.

Here the features of a sample are first smoothed along their positions (``spatial_smooth``:
average pooling to a few bins; one bin removes all position information), flattened, and
L2-normalised. Sample i's student embedding must pick its own teacher embedding among the
batch's:

    loss_i = -log( exp(<s_i, t_i> / tau) / sum_j exp(<s_i, t_j> / tau) )
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def spatial_smooth(features: torch.Tensor, bins: int = 1) -> torch.Tensor:
    """Average features over positions into ``bins`` bins and flatten.

    features: [B, C, L] channel-first (positions last), or [B, F] (returned as is).
    Returns [B, C * bins].
    """
    if features.dim() == 2:
        return features
    return F.adaptive_avg_pool1d(features.flatten(2), bins).flatten(1)


def infonce_loss_per_sample(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE of each sample: query [B, D] (student side), key [B, D] (teacher side); the
    positive of query i is key i, the other keys of the batch are its negatives. Returns [B]."""
    q = F.normalize(query, dim=-1)
    k = F.normalize(key, dim=-1)
    logits = q @ k.t() / temperature  # [B, B] cosine similarities / tau
    return F.cross_entropy(logits, torch.arange(len(q), device=q.device), reduction="none")


def infonce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1,
                 sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Batch mean of :func:`infonce_loss_per_sample` (weighted per sample when weights [B] are given)."""
    per_sample = infonce_loss_per_sample(query, key, temperature)
    if sample_weights is None:
        return per_sample.mean()
    return (per_sample * sample_weights).sum() / sample_weights.sum().clamp_min(1e-12)
