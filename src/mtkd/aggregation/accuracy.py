"""UEKD-style dynamic weighting: each teacher weighted by its accuracy on a labeled validation
split (split off the training data, never the test split), sharpened by a temperature:

    w_k = exp(acc_k / tau) / sum_j exp(acc_j / tau)

after Unified Ensemble Knowledge Distillation (UEKD; Wu, Wu, Qi and Huang, arXiv:2204.00548),
which weighs each teacher by its accuracy on labeled validation data. tau -> infinity gives the plain mean; small tau approaches the single best teacher,
which loses the ensemble's diversity (on MNIST-1D near one-hot weights cost 2.5 points
against ``mean``), so the default keeps it soft. The weights are the same for every sample.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import ConfigError
from .base import Aggregate, AggregatorContext, Capabilities, mix, softened


class AccuracyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weight_temperature: float = Field(0.1, gt=0, description="tau in softmax(accuracy / tau) over teachers")


@torch.no_grad()
def validation_accuracy(teachers, val_data, device) -> torch.Tensor:
    """[K] accuracy of each teacher on the labeled validation split."""
    accs = []
    for t in teachers:
        correct = 0
        for i in range(0, len(val_data), 1000):
            x = val_data.x[i:i + 1000].to(device)
            correct += int((t(x, val_data.index[i:i + 1000]).argmax(-1).cpu() == val_data.y[i:i + 1000]).sum())
        accs.append(correct / len(val_data))
    return torch.tensor(accs)


class AccuracyAggregator(nn.Module):
    description = "fixed weights softmax(validation accuracy / tau) per teacher (global, not per sample)"
    Options = AccuracyOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: AccuracyOptions | None = None):
        super().__init__()
        options = options or AccuracyOptions()
        if ctx.val_data is None or len(ctx.val_data) == 0:
            raise ConfigError("aggregator 'accuracy' needs a labeled validation split: set data.val_fraction > 0 "
                              "(or pass val_data to mtkd.distill)")
        acc = validation_accuracy(ctx.teachers, ctx.val_data, ctx.device)
        self.register_buffer("accuracy", acc)  # [K], kept in checkpoints for the record
        self.register_buffer("weights", torch.softmax(acc / options.weight_temperature, dim=0))

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, **_) -> Aggregate:
        w = self.weights.to(teacher_logits.dtype).expand(teacher_logits.shape[1], -1)  # [B, K]
        return Aggregate(mix(softened(teacher_logits, temperature), w), w)
