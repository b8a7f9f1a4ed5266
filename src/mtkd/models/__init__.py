"""The built-in model zoo: arch name -> (config schema, builder, one-line description)."""
from __future__ import annotations

from typing import Callable, NamedTuple

from pydantic import BaseModel
from torch import nn

from . import cnn1d, cnn2d, gpt, gru, linear, mlp, sources, transformer
from ..schema import pick, validate


class ModelEntry(NamedTuple):
    config: type[BaseModel]
    build: Callable[..., nn.Module]
    description: str


MODELS: dict[str, ModelEntry] = {
    "linear": ModelEntry(linear.LinearConfig, linear.build, "logistic regression on the flattened input"),
    "mlp": ModelEntry(mlp.MlpConfig, mlp.build, "multi-layer perceptron (hidden: [100, 100])"),
    "cnn1d": ModelEntry(cnn1d.Cnn1dConfig, cnn1d.build, "1-D CNN of stride-2 convolutions (channels: 25, layers: 3)"),
    "gru": ModelEntry(gru.GruConfig, gru.build, "GRU over the sequence, head on the last state (hidden: 64)"),
    "transformer": ModelEntry(transformer.TransformerConfig, transformer.build,
                              "small pre-norm transformer over signal patches (dim: 32, layers: 2)"),
    "cnn2d": ModelEntry(cnn2d.Cnn2dConfig, cnn2d.build, "small 2-D CNN for images (channels: [16, 32])"),
    "gpt": ModelEntry(gpt.GptConfig, gpt.build, "small GPT-style causal language model for data.name: text "
                      "(layers: 2, dim: 64, heads: 4; tied embeddings)"),
}


def parse_model(raw: dict, where: str) -> BaseModel:
    """A model section (``arch`` and its size keys, or a library model ``SOURCE:NAME`` with its
    keys) -> that model's validated config."""
    if sources.is_library_arch(raw.get("arch")):  # timm:NAME, torchvision:NAME, hf:PATH
        return sources.parse(raw, where, "teacher" if where.startswith("teachers[") else "model")
    arch = pick(MODELS, raw, "arch", where, "model")
    return validate(MODELS[arch].config, raw, where, f"model '{arch}'")


def build_model(cfg: BaseModel | str, input_shape: tuple[int, ...], num_classes: int, **size) -> nn.Module:
    """Build a built-in model from its config, or from its arch name and size keys::

        build_model("cnn1d", (40,), 10, channels=8)

    ``num_classes`` in the config overrides the data's.
    """
    if isinstance(cfg, str):
        cfg = parse_model({"arch": cfg, **size}, "model")
    if sources.is_library_arch(cfg.arch):  # timm:NAME, torchvision:NAME, hf:PATH (see models/sources.py)
        return sources.build(cfg, tuple(input_shape), cfg.num_classes or num_classes)
    return MODELS[cfg.arch].build(cfg, tuple(input_shape), cfg.num_classes or num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "build_model", "count_params"]
