"""The student's penultimate features, captured with a forward hook (no model rewriting).

Methods that look at what the student sees (the meta-weight network, AE-KD) read the input
of the student's final ``nn.Linear``: for the built-in models and most classifiers that is
the feature vector the classifier head works on.
"""
from __future__ import annotations

import torch
from torch import nn


def head_layer(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head whose input could serve as features")
    return linears[-1]


class PenultimateFeatures:
    """``with``-free capture: after each forward of ``model``, ``.value`` is [B, F]."""

    def __init__(self, model: nn.Module):
        self.layer = head_layer(model)
        self.dim = self.layer.in_features
        self.value: torch.Tensor | None = None
        self._handle = self.layer.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.value = args[0].flatten(1)

    def remove(self) -> None:
        self._handle.remove()
