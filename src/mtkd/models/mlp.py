"""Multi-layer perceptron on the flattened input (ReLU, optional dropout)."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from .common import ModelConfig


class MlpConfig(ModelConfig):
    arch: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [100, 100], description="width of each hidden layer")
    dropout: float = Field(0.0, ge=0, lt=1)


def build(cfg: MlpConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in cfg.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
