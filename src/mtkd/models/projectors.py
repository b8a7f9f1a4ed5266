"""Learned projectors between features of different shapes and layouts (FitNet regressors,
the TAS local-to-global projector).

Features come in four layouts (per sample, batch dimension left out): ``vector`` [F] (MLP
layers, penultimate features), ``channels`` [C, L] or [C, H, W] (CNNs: channels first, positions
last), ``tokens`` [T, D] (GRU outputs, transformer layers: positions first) and
``channels_last`` [H, W, C] (a grid of tokens, e.g. the stages of timm's Swin, whose
``output_fmt`` is NHWC). Every projector goes through one canonical form, channel-first [C, L]
(a vector is [F, 1], tokens [D, T], an image [C, H*W]), so any layout maps to any other:

    [C, L] --conv1d(k), C -> C'--> [C', L] --linear over positions, L -> L'--> [C', L']

The convolution is the "local" part (each position, with ``kernel - 1`` neighbours); the
linear map across all positions is the "global" part. FitNet (Romero et al. 2015,
arXiv:1412.6550) uses a convolutional regressor: ``kernel=1`` and positions mixed only when
the lengths differ. TAS (Li et al. 2024, arXiv:2410.12342) joins a CNN's early blocks to a
transformer's later blocks with a local-to-global projector: ``kernel=3, mix_positions=True``
(our 1-D version of it; the paper's projector works on images).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Layout = Literal["vector", "channels", "tokens", "channels_last"]
POSITIONS_FIRST = ("tokens", "channels_last")  # the channel (feature) dimension is the last one


def canonical_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """(C, L) of a per-sample feature shape in ``layout``."""
    if layout == "vector":
        return math.prod(shape), 1
    if layout in POSITIONS_FIRST:
        return shape[-1], math.prod(shape[:-1])
    return shape[0], math.prod(shape[1:])


def map_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...] | None:
    """(C, H, W) of a per-sample feature map in layout ``channels`` [C, H, W] or ``channels_last``
    [H, W, C]; None for anything that is not a 2-D grid."""
    if len(shape) != 3 or layout not in ("channels", "channels_last"):
        return None
    return tuple(shape) if layout == "channels" else (shape[2], shape[0], shape[1])


def to_channels(x: torch.Tensor, layout: str) -> torch.Tensor:
    """[B, ...] in ``layout`` -> [B, C, L]."""
    if layout == "vector":
        return x.flatten(1).unsqueeze(-1)  # [B, F, 1]
    if layout in POSITIONS_FIRST:
        return x.flatten(1, -2).transpose(1, 2)  # [B, T, D] -> [B, D, T]; [B, H, W, C] -> [B, C, H*W]
    return x.flatten(2)  # [B, C, H, W] -> [B, C, H*W]


def from_channels(x: torch.Tensor, shape: tuple[int, ...], layout: str) -> torch.Tensor:
    """[B, C, L] -> [B, *shape] in ``layout`` (the inverse of :func:`to_channels`)."""
    if layout == "vector":
        return x.reshape(len(x), *shape)
    if layout in POSITIONS_FIRST:
        return x.transpose(1, 2).reshape(len(x), *shape)
    return x.reshape(len(x), *shape)


def align_positions(h: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """[B, C, *positions] -> [B, C, *size], positions being [L] (tokens) or [H, W] (a feature map):
    adaptive average pooling when every dimension shrinks (or stays), else (bi)linear interpolation
    (align_corners=False). Nothing is learned: a conv map's grid stays a grid."""
    size = tuple(size)
    if tuple(h.shape[2:]) == size:
        return h
    if all(a >= b for a, b in zip(h.shape[2:], size)):
        return F.adaptive_avg_pool2d(h, size) if len(size) == 2 else F.adaptive_avg_pool1d(h, size)
    return F.interpolate(h, size=size, mode="bilinear" if len(size) == 2 else "linear", align_corners=False)


class Projector(nn.Module):
    """Maps features of per-sample shape ``in_shape`` (layout ``in_layout``) to ``out_shape``
    (layout ``out_layout``): [B, *in_shape] -> [B, *out_shape].

    Two layouts keep their structure instead of going through the canonical form:

    - 2-D grids on both sides, [C, H, W] -> [C', H', W'] (FitNet's case on CNNs; a
      ``channels_last`` grid [H, W, C] such as a Swin stage's is permuted to [C, H, W] first and
      back after): a ``kernel`` x ``kernel`` ``nn.Conv2d`` (FitNet's 1x1 regressor by default),
      then the map is brought to [H', W'] by :func:`align_positions` (adaptive average pooling
      down, bilinear up);
    - token sequences on both sides, [T, D] -> [T', D'] (transformer layers, e.g. ViT blocks): a
      linear map of each token D -> D' (``kernel`` 1), then the sequence brought to T' tokens by
      :func:`align_positions` (pooling or linear interpolation along the sequence).

    Unless ``mix_positions`` asks for the learned map across positions (TAS's projector)."""

    def __init__(self, in_shape, in_layout: str, out_shape, out_layout: str, kernel: int = 1,
                 mix_positions: bool = False):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.in_layout, self.out_layout = in_layout, out_layout
        c_in, l_in = canonical_shape(self.in_shape, in_layout)
        c_out, l_out = canonical_shape(self.out_shape, out_layout)
        in_map, out_map = map_shape(self.in_shape, in_layout), map_shape(self.out_shape, out_layout)
        maps = in_map is not None and out_map is not None
        tokens = in_layout == out_layout == "tokens" and len(self.in_shape) == len(self.out_shape) == 2
        self.aligned = (maps or tokens) and not mix_positions  # positions pooled/interpolated, not learned
        if self.aligned and maps:
            self.local = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)  # [B, C, H, W] -> [B, C', H, W]
            self.positions = out_map[1:]
        else:
            self.local = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)  # same length for odd kernels
            self.positions = (self.out_shape[0],) if tokens else None
        # otherwise positions are mixed when the lengths differ (or when asked: the "global" half of TAS's projector)
        self.globl = nn.Linear(l_in, l_out) if not self.aligned and (l_in != l_out or mix_positions) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.aligned and len(self.positions) == 2:  # [B, C, H, W] -> [B, C', H', W']
            if self.in_layout == "channels_last":
                x = x.permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]
            h = align_positions(self.local(x), self.positions)
            return h.permute(0, 2, 3, 1) if self.out_layout == "channels_last" else h
        h = self.local(to_channels(x, self.in_layout))  # [B, C', L]
        if self.aligned:
            h = align_positions(h, self.positions)  # [B, D', T] -> [B, D', T']
        elif self.globl is not None:
            h = self.globl(h)  # [B, C', L']
        return from_channels(h, self.out_shape, self.out_layout)


class LocalToGlobalProjector(nn.Module):
    """TAS's local-to-global (L2G) projector between a convolutional model's early blocks and an
    attention/MLP model's later blocks (Li et al., arXiv:2410.12342): a patch embedding that
    brings the features to the later blocks' shape, then one attention block so that every
    position sees every other before the later blocks run. Our 1-D version: the patch embedding
    is :class:`Projector` (``kernel=3``, positions mixed), the attention block a pre-norm
    transformer encoder layer over the target's positions (the paper uses a Swin block, i.e.
    windowed attention; our sequences are short enough for one window).

    [B, *in_shape] --Projector--> [B, *out_shape] = [B, C', L'] --attention block over L'--> [B, *out_shape]
    """

    def __init__(self, in_shape, in_layout: str, out_shape, out_layout: str):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.in_layout, self.out_layout = in_layout, out_layout
        self.embed = Projector(in_shape, in_layout, out_shape, out_layout, kernel=3, mix_positions=True)
        width, _ = canonical_shape(self.out_shape, out_layout)
        heads = next(h for h in (4, 2, 1) if width % h == 0)
        self.block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                                batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = to_channels(self.embed(x), self.out_layout)  # [B, C', L']
        h = self.block(h.transpose(1, 2)).transpose(1, 2)  # attention across the L' positions
        return from_channels(h, self.out_shape, self.out_layout)
