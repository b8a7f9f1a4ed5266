"""The last feature map of an image classifier, [B, C, H, W]: what its global pooling averages
before the classifier, captured with a forward hook (no model rewriting).

Online methods that work on feature maps (FFL's fusion module, AFD's discriminators) read it.
Where it is, per model family:

- mtkd's ``cnn2d``: the output of its ``features`` block (the head averages it).
- timm models (``forward_features`` / ``forward_head``): the input of ``global_pool`` when it is a
  module (ResNet, EfficientNet, MobileNet), else of ``head`` (ConvNeXt, RegNet, NFNet, ByobNet):
  what ``forward_features`` returns. Models whose features are channels-last (``output_fmt``
  ``NHWC``: Swin) hand the head [B, H, W, C]; it is permuted to [B, C, H, W]. Token sequences
  (ViT: the head sees [B, T, D], no grid) have none.
- torchvision models with an ``avgpool`` module (ResNet, MobileNet, EfficientNet, VGG, ...):
  its input.

Any other model (MLP, GRU, 1-D CNN, transformer, Hugging Face models) has none; a probe forward
also rejects a hooked value that is not 4-D.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .cnn2d import Cnn2d
from .layers import channels_last_grids, library_model


def map_layer(model: nn.Module) -> tuple[nn.Module, bool, bool] | None:
    """(module, True when the map is its input / False when it is its output, True when the map
    is channels-last [B, H, W, C]), or None."""
    inner, _ = library_model(model)
    if isinstance(inner, Cnn2d):
        return inner.features, False, False
    if callable(getattr(inner, "forward_features", None)) and callable(getattr(inner, "forward_head", None)):
        channels_last = channels_last_grids(inner)  # e.g. Swin: [B, H, W, C]
        if getattr(inner, "output_fmt", "NCHW") not in ("NCHW", "NHWC"):
            return None
        for name in ("global_pool", "head"):
            module = getattr(inner, name, None)
            if isinstance(module, nn.Module):
                return module, True, channels_last
        return None
    pool = getattr(inner, "avgpool", None)
    if isinstance(pool, nn.Module):  # torchvision
        return pool, True, False
    return None


class FeatureMap:
    """``with``-free capture: after each forward of ``model``, ``.value`` is its last feature map
    [B, C, H, W]. Raises ValueError for a model without one (see :func:`map_layer`)."""

    def __init__(self, model: nn.Module):
        found = map_layer(model)
        if found is None:
            raise ValueError(f"{type(library_model(model)[0]).__name__} has no known 2-D feature map")
        module, is_input, self.channels_last = found
        self.value: torch.Tensor | None = None
        if is_input:
            self._handle = module.register_forward_pre_hook(self._pre_hook)
        else:
            self._handle = module.register_forward_hook(self._hook)

    def _pre_hook(self, module, args):
        self.value = self._nchw(args[0])

    def _hook(self, module, args, output):
        self.value = self._nchw(output)

    def _nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.channels_last and x.dim() == 4 else x  # [B, H, W, C] -> [B, C, H, W]

    def remove(self) -> None:
        self._handle.remove()


@torch.no_grad()
def probe_map_shapes(models: Sequence[nn.Module], x: torch.Tensor) -> list[tuple[int, int, int] | None]:
    """(C, H, W) of each model's last feature map on input ``x`` [n, ...], or None where the model
    has none. Eval mode and the caller's random state untouched: probing changes nothing."""
    shapes = []
    for model in models:
        if map_layer(model) is None:
            shapes.append(None)
            continue
        capture, was = FeatureMap(model), model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                model(x.to(next(model.parameters()).device))
        finally:
            model.train(was)
            capture.remove()
        value = capture.value
        shapes.append(tuple(value.shape[1:]) if value is not None and value.dim() == 4 else None)
    return shapes


def smallest_size(shapes: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The smallest height and width among map shapes (C, H, W): where maps of several sizes meet."""
    return min(s[-2] for s in shapes), min(s[-1] for s in shapes)


def align_spatial(maps: Sequence[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
    """Each map [B, C_k, H_k, W_k] average-pooled to [B, C_k, *size] (adaptive pooling; a map that
    already has that size is returned as it is)."""
    return [m if tuple(m.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(m, size) for m in maps]


__all__ = ["FeatureMap", "align_spatial", "map_layer", "probe_map_shapes", "smallest_size"]
