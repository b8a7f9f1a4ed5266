"""timm and torchvision image classifiers as a sequence of stages (``mtkd.models.blocks.Blocks``),
for methods that splice one model's early stages onto another's later stages (TAS's hybrid
assistant). The stages hold the model's own submodules; their composition is ``model.forward``
(checked on an input by :func:`check_composition` before a run trains anything).

Stages found per family:

- timm vision transformers (``patch_embed``, ``blocks``): the embedding (patch embedding,
  position embedding, ``norm_pre``), then one stage per block, output [B, T, D] (tokens);
  head: ``norm`` then ``forward_head`` (pooling, ``fc_norm``, classifier).
- other timm models with ``feature_info`` (ResNet, ConvNeXt, EfficientNet, ...): the top-level
  modules in order, cut after each module that ``feature_info`` names (its stages, nested names
  such as ``blocks.3`` included), output [B, C, H, W] (channels), or [B, H, W, C]
  (``channels_last``) when timm's ``output_fmt`` is NHWC (Swin); head: the modules after the
  last stage that ``forward_features`` still runs (e.g. ConvNeXt's ``norm_pre``,
  EfficientNet's ``conv_head`` / ``bn2``), then ``forward_head``.
- torchvision ResNets: stem (``conv1``, ``bn1``, ``relu``, ``maxpool``), ``layer1`` .. ``layer4``;
  head: ``avgpool``, flatten, ``fc``. torchvision models with ``features`` (a Sequential),
  ``avgpool`` and ``classifier`` (MobileNet, EfficientNet, ...): one stage per feature module.

A model wrapped by mtkd to convert its input (``mtkd.models.sources.InputAdapter``: another
resolution or normalisation) gets the conversion as the start of its first stage.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError



def _features_modules(model: nn.Module) -> set[str]:
    """Names of the modules ``type(model).forward_features`` refers to (``self.NAME``): those after
    the last stage belong to the features (ConvNeXt's ``norm_pre``, EfficientNet's ``conv_head``),
    the others to ``forward_head`` (MobileNetV3's ``conv_head``)."""
    import inspect
    import re

    try:
        source = inspect.getsource(type(model).forward_features)
    except (OSError, TypeError):
        return set()
    return set(re.findall(r"self\.(\w+)", source))


class _Convert(nn.Module):
    """An InputAdapter's input conversion without the model it wraps (so stages do not register it)."""

    def __init__(self, adapter: nn.Module):
        super().__init__()
        self.channels, self.size, self.interpolation = adapter.channels, adapter.size, adapter.interpolation
        for key in ("mean", "std"):
            value = getattr(adapter, key)
            self.register_buffer(key, None if value is None else value.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .sources import InputAdapter

        return InputAdapter.convert(self, x)


def _sequential(parts, x):
    for p in parts:
        x = p(x)
    return x


def _forward_head(parts, x):
    *tails, model = parts
    for t in tails:
        x = t(x)
    return model.forward_head(x)


def _torchvision_head(parts, x):
    *pool, classifier = parts
    for p in pool:
        x = p(x)
    return classifier(torch.flatten(x, 1))


class _PosEmbed(nn.Module):
    """A timm ViT's ``_pos_embed`` (class / register tokens, position embedding, dropout) as a module;
    the position embedding and tokens stay the model's own parameters."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.pos_drop = vit.pos_drop
        object.__setattr__(self, "_model", vit)  # not registered: the stages must not hold the model twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return type(self._model)._pos_embed(self._model, x)  # [B, N, D] -> [B, prefix + N, D]


class _Head(nn.Module):
    """The classifier side of a model, whose ``forward_head`` is called; registers the head modules
    only (not the whole model) so the stages do not hold the body twice."""

    def __init__(self, model: nn.Module, modules: list[str]):
        super().__init__()
        self.parts = nn.ModuleDict({name: getattr(model, name) for name in modules if getattr(model, name, None)
                                    is not None and isinstance(getattr(model, name), nn.Module)})
        object.__setattr__(self, "_forward_head", type(model).forward_head)
        object.__setattr__(self, "_model", model)

    def forward_head(self, x):
        return self._forward_head(self._model, x)

    def forward(self, x):
        return self.forward_head(x)


def library_blocks(model: nn.Module):
    """``Blocks`` of a timm / torchvision classifier (see the module doc), or None for another model."""
    from .layers import channels_last_grids, library_model
    from .stages import Blocks, Stage

    inner, _ = library_model(model)
    convert = [_Convert(model)] if type(model).__name__ == "InputAdapter" else []
    children = dict(inner.named_children())
    head_names = [n for n in ("global_pool", "pool", "fc_norm", "head_drop", "head", "fc", "classifier",
                              "conv_head", "norm_head", "act2", "flatten") if n in children]

    if "patch_embed" in children and "blocks" in children and hasattr(inner, "forward_head"):  # timm ViT
        embed = Stage(convert + [inner.patch_embed, _PosEmbed(inner), inner.patch_drop, inner.norm_pre],
                      _sequential, "tokens")
        body = [embed] + [Stage([b], _sequential, "tokens") for b in inner.blocks]
        return Blocks(body, Stage([inner.norm, _Head(inner, head_names)], _forward_head, "vector"))

    info = getattr(inner, "feature_info", None)
    if info is not None and hasattr(inner, "forward_head"):  # timm CNNs
        names = [f["module"] for f in (info if isinstance(info, list) else info.get_dicts())]
        units = _units(inner, names)
        last = max(i for i, (n, _) in enumerate(units) if n in names)
        # stages hand on [B, C, H, W], or [B, H, W, C] in models whose output_fmt says NHWC (Swin)
        layout = "channels_last" if channels_last_grids(inner) else "channels"
        body, current = [], list(convert)
        for n, m in units[:last + 1]:
            current.append(m)
            if n in names:
                body.append(Stage(current, _sequential, layout))
                current = []
        ran = _features_modules(inner)  # trailing modules that forward_features still runs (norm_pre, conv_head)
        tails = [m for n, m in units[last + 1:] if n in ran]
        rest = [n for n, _ in units[last + 1:] if n not in ran]
        return Blocks(body, Stage(tails + [_Head(inner, rest)], _forward_head, "vector"))

    if all(n in children for n in ("conv1", "bn1", "relu", "maxpool", "layer4", "avgpool", "fc")):  # torchvision ResNet
        stem = Stage(convert + [inner.conv1, inner.bn1, inner.relu, inner.maxpool], _sequential, "channels")
        body = [stem] + [Stage([getattr(inner, f"layer{i}")], _sequential, "channels") for i in range(1, 5)]
        return Blocks(body, Stage([inner.avgpool, inner.fc], _torchvision_head, "vector"))

    if isinstance(children.get("features"), nn.Sequential) and "avgpool" in children and "classifier" in children:
        feats = list(inner.features)
        body = [Stage(convert + feats[:1], _sequential, "channels")]
        body += [Stage([f], _sequential, "channels") for f in feats[1:]]
        return Blocks(body, Stage([inner.avgpool, inner.classifier], _torchvision_head, "vector"))
    return None


def _units(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Module]]:
    """The model's top-level modules in order, a Sequential opened into its items where a stage
    name points inside it (``blocks.3``), recursively."""
    out = []
    for name, child in model.named_children():
        inside = [n for n in names if n.startswith(name + ".")]
        if inside and isinstance(child, nn.Sequential):
            out += [(f"{name}.{n}", m) for n, m in _units(child, [n[len(name) + 1:] for n in inside])]
        else:
            out.append((name, child))
    return out


@torch.no_grad()
def check_composition(model: nn.Module, blocks, input_shape, where: str) -> None:
    """The stages and head give the model's own logits on a random input (eval mode); else one line."""
    from .stages import run_blocks

    was = model.training
    model.eval()
    try:
        x = torch.rand(2, *input_shape, device=next(model.parameters()).device)
        expected = model(x)
        got = blocks.head(run_blocks(blocks.body, x))
    finally:
        model.train(was)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
        raise ConfigError(f"{where}: {type(library_model_of(model)).__name__} could not be split into stages that "
                          "reproduce its output; TAS supports timm ViTs, timm CNNs with feature_info, torchvision "
                          "ResNets and torchvision models with features/avgpool/classifier")


def library_model_of(model: nn.Module) -> nn.Module:
    from .layers import library_model

    return library_model(model)[0]
