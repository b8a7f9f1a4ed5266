"""GRU over the sequence (one step per position), classifier on the last hidden state."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from .common import ModelConfig, as_sequence


class GruConfig(ModelConfig):
    arch: Literal["gru"] = "gru"
    hidden: int = Field(64, ge=1)
    layers: int = Field(1, ge=1)
    bidirectional: bool = False


class Gru(nn.Module):
    def __init__(self, in_channels: int, hidden: int, layers: int, bidirectional: bool, num_classes: int):
        super().__init__()
        self.rnn = nn.GRU(in_channels, hidden, layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.unsqueeze(-1) if x.dim() == 2 else x.transpose(1, 2)  # [B, L, C]
        _, h = self.rnn(seq)  # h: [layers * directions, B, hidden]
        if self.rnn.bidirectional:
            last = torch.cat([h[-2], h[-1]], dim=-1)  # both directions of the top layer
        else:
            last = h[-1]
        return self.head(last)


def build(cfg: GruConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, _ = as_sequence(input_shape, "gru")
    return Gru(c, cfg.hidden, cfg.layers, cfg.bidirectional, num_classes)
