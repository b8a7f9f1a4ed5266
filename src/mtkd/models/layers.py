"""Intermediate features of any model by layer name, with forward hooks (no model rewriting).

A layer is named as in ``model.named_modules()`` (``features.2``, ``encoder.layers.0``,
``rnn``); ``None`` names the model's penultimate features, the input of its last
``nn.Linear`` (see ``mtkd.models.features``). After each forward of the model,
``LayerFeatures.values[name]`` holds that layer's output (the first element for modules that
return a tuple, e.g. ``nn.GRU`` gives its output sequence).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from .features import head_layer

# modules that work on the last dimension of [B, T, D] inputs: their 3-D outputs are token sequences
TOKEN_MODULES = (nn.RNNBase, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder,
                 nn.MultiheadAttention, nn.Linear, nn.LayerNorm, nn.Embedding)


# wrappers mtkd puts around a library's model (mtkd.models.sources: input conversion, Hugging Face
# logits); their layers are named as the library names them, without the wrapper's "model." prefix
WRAPPERS = ("InputAdapter", "HfLogits")
# class names of library modules that work on [B, T, D] token sequences (timm's ViT Block and
# PatchEmbed, transformers' ViTLayer / ViTEmbeddings / encoders)
TOKEN_CLASS_HINTS = ("Block", "PatchEmbed", "Layer", "Attention", "Embeddings", "Encoder", "Mlp")


def library_model(model: nn.Module) -> tuple[nn.Module, str]:
    """(the model inside mtkd's wrappers, the prefix its layers have in ``model.named_modules()``)."""
    prefix = ""
    while type(model).__name__ in WRAPPERS and isinstance(getattr(model, "model", None), nn.Module):
        model, prefix = model.model, prefix + "model."
    return model, prefix


def channels_last_grids(model: nn.Module) -> bool:
    """True when the model's 2-D grids are [B, H, W, C] between its blocks: timm models whose
    ``output_fmt`` is NHWC (Swin). Wrappers are looked through."""
    return getattr(library_model(model)[0], "output_fmt", "NCHW") == "NHWC"


def layer_names(model: nn.Module) -> list[str]:
    inner, _ = library_model(model)
    return [name for name, _ in inner.named_modules() if name]


def find_layer(model: nn.Module, name: str | None, where: str = "model") -> nn.Module:
    """The submodule called ``name`` (as the library names it: ``layer3``, ``blocks.1``, ``stages.2``);
    an error listing every layer name when there is none."""
    if name is None:
        return head_layer(model)
    inner, _ = library_model(model)
    modules = dict(inner.named_modules())
    if not name or name not in modules:
        raise ConfigError(f"{where}: {type(inner).__name__} has no layer {name!r}; its layers are: "
                          f"{', '.join(layer_names(model))}")
    return modules[name]


def _works_on_tokens(module: nn.Module) -> bool:
    if isinstance(module, TOKEN_MODULES):
        return True
    return (any(h in type(module).__name__ for h in TOKEN_CLASS_HINTS)
            and not any(isinstance(m, nn.Conv1d) for m in module.modules()))  # a 1-D conv block is channels


def layout_of(module: nn.Module, value: torch.Tensor, channels_last: bool = False) -> str:
    """Guess the layout of a layer's output [B, ...]: vector, channels (CNN), tokens, or
    channels_last [B, H, W, C] for a 4-D output of a model whose grids are NHWC (``channels_last``:
    timm's ``output_fmt``, e.g. Swin) other than a convolution's."""
    if value.dim() == 2:
        return "vector"
    if value.dim() == 4 and channels_last and not isinstance(module, nn.Conv2d):
        return "channels_last"
    if value.dim() == 3 and _works_on_tokens(module):
        return "tokens"
    return "channels"


class LayerFeatures:
    """Captures the outputs of the layers ``names`` of ``model`` on every forward."""

    def __init__(self, model: nn.Module, names: Iterable[str | None], where: str = "model"):
        self.values: dict[str | None, torch.Tensor] = {}
        self.modules: dict[str | None, nn.Module] = {}
        self.channels_last = channels_last_grids(model)
        self._handles = []
        for name in dict.fromkeys(names):  # unique, in order
            module = find_layer(model, name, where)
            self.modules[name] = module
            if name is None:  # input of the head
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            else:
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, args, output):
            self.values[name] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def _pre_hook(self, name):
        def hook(module, args):
            self.values[name] = args[0].flatten(1)
        return hook

    def layout(self, name: str | None) -> str:
        return "vector" if name is None else layout_of(self.modules[name], self.values[name], self.channels_last)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
