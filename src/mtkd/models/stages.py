"""A model as a sequence of stages (body) and a head, built from the model's own submodules:
``mtkd.models.blocks`` (the built-in 1-D models) and ``mtkd.models.library_blocks`` (timm and
torchvision image classifiers) make them; TAS splices them."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn


class Stage(nn.Module):
    """A block of a model: ``fn(parts, x)`` over submodules ``parts`` borrowed from the model."""

    def __init__(self, parts: list[nn.Module], fn: Callable, layout: str):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.fn = fn  # a module-level function, so deepcopy and pickling keep working
        self.layout = layout  # layout of the output: vector, channels or tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.parts, x)


class Blocks(NamedTuple):
    body: list[Stage]  # the feature blocks, in order
    head: Stage  # features of the last body block -> logits [B, num_classes]


def run_blocks(stages, x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x
