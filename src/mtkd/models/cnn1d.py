"""1-D CNN as in the MNIST-1D reference: stride-2 convolutions (kernel 5, then 3), ReLU,
a linear head on the flattened feature map. ``channels=25, layers=3`` is the
reference model (5,210 parameters on length-40 signals)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from .common import ModelConfig, as_sequence


class Cnn1dConfig(ModelConfig):
    arch: Literal["cnn1d"] = "cnn1d"
    channels: int = Field(25, ge=1)
    layers: int = Field(3, ge=1)


class Cnn1d(nn.Module):
    def __init__(self, in_channels: int, length: int, channels: int, layers: int, num_classes: int):
        super().__init__()
        convs = []
        for i in range(layers):
            k = 5 if i == 0 else 3
            convs += [nn.Conv1d(in_channels if i == 0 else channels, channels, k, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*convs)
        with torch.no_grad():  # length of the final feature map, for the head's size
            out_len = self.features(torch.zeros(1, in_channels, length)).shape[-1]
        self.head = nn.Linear(channels * out_len, num_classes)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # [B, L] -> [B, 1, L]
            x = x.unsqueeze(1)
        h = self.features(x)  # [B, channels, L']
        return self.head(h.flatten(1))  # [B, num_classes]


def build(cfg: Cnn1dConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, length = as_sequence(input_shape, "cnn1d")
    return Cnn1d(c, length, cfg.channels, cfg.layers, num_classes)
