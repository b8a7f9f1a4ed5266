"""ATMKD: adaptive temperature-guided multi-teacher distillation, after "Adaptive Temperature-Guided
Multi-Teacher Knowledge Distillation" (ATMKD; Multimedia Systems 2024, doi:10.1007/s00530-024-01483-w).

The method has three parts; the authors' repository (JSJ515-Group/ATMKD) holds no code
for them, so the formulas below are ours, written to match that description:

1. A temperature per teacher and per sample from the teacher's confidence: with
   c_kb = max_c softmax(z_kb)_c (T = 1) rescaled to [0, 1] as (c - 1/C) / (1 - 1/C),
       T_kb = T * (1 + spread * (1 - 2 c_kb))        in [T (1 - spread), T (1 + spread)]
   so a confident teacher is softened less (lower T) and an uncertain one more.
2. A confidence-aware combination: w_kb = softmax_k(log p_kb(y_b) / weight_temperature),
   i.e. proportional to p_kb(y_b)^(1 / weight_temperature), where p_kb(y_b) is the
   probability teacher k gives the label (the ensemble's vote for unlabeled samples), so a
   teacher that is confidently wrong, or disagrees with the others, counts for little.
3. The weighted distillation loss: sum_k w_kb * T_kb^2 * KL(p_kb^(T_kb) || q_b^(T_kb)),
   each teacher compared with the student softened at that teacher's temperature.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .base import Aggregate, AggregatorContext, Capabilities, mix, pseudo_labels


class AdaptiveTemperatureOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    spread: float = Field(0.5, ge=0, lt=1, description="temperatures range over T * (1 -/+ spread)")
    weight_temperature: float = Field(1.0, gt=0, description="sharpness of the confidence weights")


def adaptive_temperatures(teacher_logits: torch.Tensor, temperature: float, spread: float) -> torch.Tensor:
    """[K, B, C] -> per-teacher, per-sample temperatures [B, K]."""
    c = teacher_logits.shape[-1]
    confidence = torch.softmax(teacher_logits, dim=-1).amax(-1)  # [K, B] in [1/C, 1]
    scaled = ((confidence - 1.0 / c) / (1.0 - 1.0 / c)).clamp(0, 1)
    return (temperature * (1.0 + spread * (1.0 - 2.0 * scaled))).t()


class AdaptiveTemperatureAggregator(nn.Module):
    description = "ATMKD: per-teacher, per-sample temperature from confidence; confidence-weighted"
    Options = AdaptiveTemperatureOptions
    capabilities = Capabilities(per_teacher_temperatures=True)

    def __init__(self, ctx: AggregatorContext, options: AdaptiveTemperatureOptions | None = None):
        super().__init__()
        self.options = options or AdaptiveTemperatureOptions()

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        o = self.options
        temps = adaptive_temperatures(teacher_logits, temperature, o.spread)  # [B, K]
        y = pseudo_labels(teacher_logits, labels)
        logp = torch.log_softmax(teacher_logits, dim=-1)  # [K, B, C]
        on_label = logp.gather(-1, y.view(1, -1, 1).expand(logp.shape[0], -1, 1)).squeeze(-1)  # [K, B]
        weights = torch.softmax(on_label.t() / o.weight_temperature, dim=1)  # [B, K]
        probs = torch.softmax(teacher_logits / temps.t().unsqueeze(-1), dim=-1)  # each at its own T
        return Aggregate(mix(probs, weights), weights, temps)
