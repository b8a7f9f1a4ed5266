"""A small GPT-style causal language model (Radford et al., "Language Models are Unsupervised
Multitask Learners", 2019): token and learned position embeddings, pre-norm blocks of causal
multi-head self-attention and a GELU MLP, a final LayerNorm and an output layer tied to the
token embedding. Built in for tests and CPU benchmarks; any ``hf:PATH`` causal LM works too.

Input: token ids [B, T] (any integer or float dtype holding integers), T <= ``context``;
output: next-token logits [B, T, V] with V the tokenizer's vocabulary size (``num_classes``).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import ConfigError
from .common import AttentionConfig


class GptConfig(AttentionConfig):
    arch: Literal["gpt"] = "gpt"
    dim: int = Field(64, ge=1, description="width of the residual stream")
    context: int = Field(1024, ge=1, description="longest sequence the position embedding covers")
    mlp_ratio: int = Field(4, ge=1)


class Block(nn.Module):
    def __init__(self, cfg: GptConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim), nn.Dropout(cfg.dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # [B, heads, T, d/heads] each; is_causal: position t attends to positions <= t only
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return h + self.mlp(self.norm2(h))


class Gpt(nn.Module):
    def __init__(self, cfg: GptConfig, vocab_size: int):
        super().__init__()
        self.context = cfg.context
        self.embed = nn.Embedding(vocab_size, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.context, cfg.dim))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()  # [B, T]
        h = self.embed(ids) + self.pos[: ids.shape[1]]  # [B, T, dim]
        for block in self.blocks:
            h = block(h)
        return self.norm(h) @ self.embed.weight.t()  # tied output layer: [B, T, V]


def build(cfg: GptConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """input_shape: (seq_len,); num_classes: the vocabulary size."""
    if len(input_shape) != 1:
        raise ConfigError(f"model 'gpt' takes token ids [seq_len], got inputs {list(input_shape)}; use it with "
                          "data.name: text")
    if input_shape[0] > cfg.context:
        raise ConfigError(f"data.seq_len: {input_shape[0]} is longer than the student's context ({cfg.context}); "
                          f"lower seq_len or raise student.context")
    return Gpt(cfg, num_classes)
