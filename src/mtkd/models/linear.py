"""Multinomial logistic regression on the flattened input."""
from __future__ import annotations

import math
from typing import Literal

from torch import nn

from .common import ModelConfig


class LinearConfig(ModelConfig):
    arch: Literal["linear"] = "linear"


def build(cfg: LinearConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
