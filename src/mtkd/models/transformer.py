"""Small pre-norm transformer encoder for sequences: non-overlapping patches of the
signal become tokens, learned position embeddings, mean pooling, linear head."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ConfigError
from .common import AttentionConfig, as_sequence


class TransformerConfig(AttentionConfig):
    arch: Literal["transformer"] = "transformer"
    patch: int = Field(4, ge=1, description="positions per token")
    mlp_ratio: int = Field(2, ge=1)


class Transformer(nn.Module):
    def __init__(self, in_channels: int, length: int, cfg: TransformerConfig, num_classes: int):
        super().__init__()
        if length % cfg.patch:
            raise ConfigError(f"transformer patch ({cfg.patch}) must divide the input length ({length})")
        self.patch = cfg.patch
        self.embed = nn.Linear(in_channels * cfg.patch, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(1, length // cfg.patch, cfg.dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.dim * cfg.mlp_ratio, cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)  # [B, 1, L]
        b, c, length = x.shape
        # [B, C, L] -> [B, L/p, p*C]: each token is one patch of every channel
        tokens = x.transpose(1, 2).reshape(b, length // self.patch, self.patch * c)
        h = self.encoder(self.embed(tokens) + self.pos)  # [B, T, dim]
        return self.head(self.norm(h.mean(dim=1)))


def build(cfg: TransformerConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, length = as_sequence(input_shape, "transformer")
    return Transformer(c, length, cfg, num_classes)
