"""Small 2-D CNN for images: 3x3 conv blocks (conv, BN-free ReLU, 2x2 max-pool after each
but the last), global average pooling, linear head."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ConfigError
from .common import ModelConfig


class Cnn2dConfig(ModelConfig):
    arch: Literal["cnn2d"] = "cnn2d"
    channels: list[int] = Field(default_factory=lambda: [16, 32], description="channels of each conv block")


class Cnn2d(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], num_classes: int):
        super().__init__()
        blocks: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(channels):
            blocks += [nn.Conv2d(prev, c, 3, padding=1), nn.ReLU()]
            if i < len(channels) - 1:
                blocks.append(nn.MaxPool2d(2))
            prev = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # [B, H, W] -> [B, 1, H, W]
            x = x.unsqueeze(1)
        h = self.features(x)  # [B, C, H', W']
        return self.head(h.mean(dim=(2, 3)))


def build(cfg: Cnn2dConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) not in (2, 3):
        raise ConfigError(f"model 'cnn2d' needs image inputs [H, W] or [C, H, W], got {list(input_shape)}")
    return Cnn2d(1 if len(input_shape) == 2 else input_shape[0], cfg.channels, num_classes)
