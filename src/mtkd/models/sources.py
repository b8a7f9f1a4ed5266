"""Models from libraries: ``arch: "timm:NAME"``, ``"torchvision:NAME"`` or ``"hf:PATH"``.

Accepted everywhere a model spec is (teachers, student, assistants, peers). Nothing is
downloaded: the network is built randomly initialised by the library's own factory
(``timm.create_model``, ``torchvision.models.get_model``, ``transformers`` ``from_pretrained``
of a local ``save_pretrained`` directory with ``local_files_only=True``), then ``weights:``
(a safetensors file or a weights-only torch file, as timm and torchvision save them) is
loaded into it. ``num_classes`` comes from the data; a model whose saved classifier has
another number of classes gets a fresh head (timm's ``reset_classifier``, torchvision's last
layer), except a teacher, whose outputs must be the data's classes (``head: keep``).

Each model sees the input it was trained for (timm's ``DistillationTeacher`` does the same):
the pipeline's tensor (images scaled to [0, 1], [B, C, H, W]) is resized to ``input.size``
and normalised with ``input.mean`` / ``input.std``, on the fly, inside the module. Defaults:
the data's size; mean/std from timm's ``pretrained_cfg`` or the Hugging Face image processor
when ``weights`` are given (a network trained from scratch by mtkd sees the [0, 1] tensor).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from torch import nn

from ..errors import ConfigError, first_line
from ..schema import validate
from .causal_lm import build_hf_causal, context_length, is_causal_lm_dir
from .common import ModelConfig

SOURCES = {
    "timm": "timm models by name, e.g. timm:resnet18 (extra: vision; `mtkd list --models timm`)",
    "torchvision": "torchvision.models by name, e.g. torchvision:mobilenet_v3_small (extra: vision)",
    "hf": "a local transformers save_pretrained directory: image or sequence classification, or a causal language "
          "model, e.g. hf:teachers/vit (extra: hf)",
}
EXTRA = {"timm": "vision", "torchvision": "vision", "transformers": "hf"}


def library(module: str, what: str):
    """Import an optional library, or one line saying how to install it. Import errors other
    than a missing package (e.g. a torchvision built for another torch: ``operator
    torchvision::nms does not exist``) are reported the same way, with their first line."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the same user problem
        pkg = module.split(".")[0]
        why = "" if isinstance(exc, ModuleNotFoundError) else f" (import failed: {first_line(exc, 120)})"
        raise ConfigError(f"{what} needs {pkg}{why}: pip install 'mtkd[{EXTRA.get(pkg, pkg)}]' "
                          "(torchvision must match your torch build, see docs/models.md)") from None


class InputConfig(BaseModel):
    """How the pipeline's tensor becomes this model's input."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    size: tuple[int, int] | None = Field(None, description="[height, width] the model expects (default: the data's)")
    mean: list[float] | None = Field(None, description="per-channel mean subtracted after resizing")
    std: list[float] | None = Field(None, description="per-channel std divided by after resizing")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"

    @field_validator("size")
    @classmethod
    def _positive(cls, v):
        if v is not None and min(v) <= 0:
            raise ValueError("sizes must be positive")
        return v


class LibraryModelConfig(ModelConfig):
    arch: str = Field(description="timm:NAME, torchvision:NAME or hf:PATH")
    weights: Path | None = Field(None, description="local safetensors or weights-only torch file")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the library's factory")
    pretrained: bool = Field(False, description="true needs 'weights' (nothing is downloaded)")
    input: InputConfig | None = Field(None, description="{size, mean, std}: the input this model expects")
    head: Literal["keep", "reset"] | None = Field(
        None, description="a saved classifier of another class count: reset it (default for students) or refuse "
                          "(keep, the default for teachers)")
    _where: str = PrivateAttr("model")  # the config key, for error messages


def is_library_arch(arch: Any) -> bool:
    return isinstance(arch, str) and ":" in arch


def parse(raw: dict, where: str, role: str) -> LibraryModelConfig:
    """Validate a library model spec: source, installed library, model name, files (no build)."""
    cfg = validate(LibraryModelConfig, raw, where, f"model {raw.get('arch')!r}")
    source, _, name = cfg.arch.partition(":")
    if source not in SOURCES:
        raise ConfigError(f"{where}.arch: unknown model source {source!r} in {cfg.arch!r}; "
                          f"choose timm:NAME, torchvision:NAME or hf:PATH")
    if not name:
        raise ConfigError(f"{where}.arch: {cfg.arch!r} names no model after '{source}:'")
    if source == "timm":
        timm = library("timm", f"{where}.arch {cfg.arch!r}")
        if not timm.is_model(name):
            near = timm.list_models(f"*{name[:4]}*")[:8]
            raise ConfigError(f"{where}.arch: timm has no model {name!r}"
                              + (f"; similar: {', '.join(near)}" if near else "") + "; see `mtkd list --models timm`")
    elif source == "torchvision":
        tv = library("torchvision.models", f"{where}.arch {cfg.arch!r}")
        if name not in tv.list_models():
            raise ConfigError(f"{where}.arch: torchvision has no model {name!r}; see `mtkd list --models torchvision`")
    else:
        library("transformers", f"{where}.arch {cfg.arch!r}")
        if not (Path(name) / "config.json").is_file():
            raise ConfigError(f"{where}.arch: {name} is not a directory saved with save_pretrained (no config.json)")
        if cfg.weights is not None:
            raise ConfigError(f"{where}.weights: an hf: model takes its weights from its directory; drop 'weights'")
    if cfg.weights is not None and not cfg.weights.is_file():
        raise ConfigError(f"{where}.weights: file not found: {cfg.weights}")
    if cfg.pretrained and cfg.weights is None and source != "hf":
        raise ConfigError(f"{where}.pretrained: mtkd downloads nothing; save the pretrained weights to a file "
                          f"and give it as 'weights: PATH' (and drop 'pretrained')")
    if "pretrained" in cfg.options or "weights" in cfg.options:
        raise ConfigError(f"{where}.options: give pretrained weights as 'weights: PATH' (a local file), "
                          "not as a factory option")
    if cfg.head is None:
        cfg = cfg.model_copy(update={"head": "keep" if role == "teacher" else "reset"})
    cfg._where = where
    return cfg


# ---------------------------------------------------------------- building

class InputAdapter(nn.Module):
    """The pipeline's tensor [B, C, H, W] -> the wrapped model's input: resized to ``size``,
    normalised with ``mean`` / ``std`` (shape [C] each, kept as buffers so they follow .to())."""

    def __init__(self, model: nn.Module, size, mean, std, interpolation: str = "bilinear", channels: int = 0):
        super().__init__()
        self.model = model
        self.channels = channels  # > 0: a 1-channel image repeated to this many channels (grayscale -> RGB)
        self.size = tuple(size) if size is not None else None
        self.interpolation = interpolation
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) if mean is not None else None)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) if std is not None else None)

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        """The pipeline's tensor [B, C, H, W] -> the model's input (what ``forward`` feeds it)."""
        if self.channels and x.shape[1] == 1:
            x = x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            # antialiasing matters only when a side shrinks; without it an upsampling resize is the plain
            # (bi)linear op, which ONNX exports (its antialiased form has no ONNX operator)
            shrinks = any(int(t) < int(s) for t, s in zip(self.size, x.shape[-2:]))
            x = F.interpolate(x, size=self.size, mode=self.interpolation,
                              **({} if self.interpolation == "nearest" else {"align_corners": False, "antialias": shrinks}))
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.convert(x))


class HfLogits(nn.Module):
    """A transformers classification model as ``x -> logits``: pixel values [B, C, H, W], or
    token ids [B, L] (as float, like every mtkd input; attention mask = ids != pad id)."""

    def __init__(self, model: nn.Module, kind: str, pad_id: int = 0):
        super().__init__()
        self.model, self.kind, self.pad_id = model, kind, pad_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "image":
            return self.model(pixel_values=x).logits
        ids = x.round().long()
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits


def _classifier_prefix(model: nn.Module, source: str) -> str | None:
    """Dotted name of the classifier module (its keys are dropped when the head is reset)."""
    if source == "timm" and hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for name, module in model.named_modules():
            if module is head and name:
                return name
    last = None
    for name, module in model.named_modules():  # torchvision: the last Linear (or 1x1 conv for squeezenet)
        if isinstance(module, (nn.Linear, nn.Conv2d)) and name:
            last = name
    return last


def read_weights(path: Path, where: str) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a weights-only torch file (``torch.load`` with
    ``weights_only=True``: opening it runs no code). timm's training checkpoints keep it under
    ``state_dict``, torchvision's reference scripts under ``model``; DDP's ``module.`` prefix is dropped."""
    try:
        if path.suffix == ".safetensors":
            st = library("safetensors.torch", f"{where}.weights")
            sd = st.load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable file: one line
        raise ConfigError(f"{where}.weights: cannot read {path} as safetensors or a weights-only torch file "
                          f"({type(exc).__name__}: {first_line(exc, 160)})") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{where}.weights: {path} holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_weights(model: nn.Module, sd: dict, prefix: str | None, head: str, where: str, path) -> None:
    """Load ``sd`` into ``model``; a classifier of another shape is left fresh when ``head`` is
    reset, any other difference is an error listing a few of the keys."""
    own = model.state_dict()
    mismatched = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    in_head = [k for k in mismatched if prefix and k.startswith(prefix + ".")]
    if in_head and head == "keep":
        k = in_head[0]
        raise ConfigError(f"{where}.weights: the classifier in {path} has shape {list(sd[k].shape)} ({k}), the model "
                          f"for the data's classes {list(own[k].shape)}; a teacher must predict the data's classes "
                          f"(set head: reset to train a fresh classifier)")
    sd = {k: v for k, v in sd.items() if k not in in_head}
    missing = [k for k in own if k not in sd and not (in_head and prefix and k.startswith(prefix + "."))]
    unexpected = [k for k in sd if k not in own]
    others = [k for k in mismatched if k not in in_head]
    if missing or unexpected or others:
        parts = []
        if others:
            k = others[0]
            parts.append(f"{len(others)} of other shape (e.g. {k}: file {list(sd[k].shape)}, "
                         f"model {list(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ConfigError(f"{where}.weights: {path} does not fit the model: " + "; ".join(parts)
                          + " (check arch and options)")
    model.load_state_dict(sd, strict=False)


def _factory_error(where: str, cfg, exc: Exception) -> ConfigError:
    return ConfigError(f"{where}: cannot build {cfg.arch} with options {cfg.options} "
                       f"({type(exc).__name__}: {first_line(exc, 200)})")


def build(cfg: LibraryModelConfig, input_shape: tuple[int, ...], num_classes: int, load: bool = True,
          where: str | None = None) -> nn.Module:
    """Build the library model for inputs ``input_shape`` ([C, H, W] images, or [L] token ids for
    hf sequence models) and ``num_classes``; ``load=False`` skips reading ``weights`` (the caller
    loads a state dict saved by mtkd)."""
    where = where or cfg._where
    source, _, name = cfg.arch.partition(":")
    image = len(input_shape) == 3
    in_chans = input_shape[0] if image else 1
    mean = std = size = None
    model_chans = in_chans  # what the network's first layer takes
    if source == "timm":
        timm = library("timm", where)
        try:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                      **cfg.options)
        except Exception as exc:  # noqa: BLE001 - bad factory options
            raise _factory_error(where, cfg, exc) from None
        pcfg = getattr(model, "pretrained_cfg", None) or {}
        if cfg.weights is not None and "mean" in pcfg:
            mean, std = list(pcfg["mean"]), list(pcfg["std"])
    elif source == "torchvision":
        tv = library("torchvision.models", where)
        try:
            model = tv.get_model(name, weights=None, num_classes=num_classes, **cfg.options)
        except Exception as exc:  # noqa: BLE001
            raise _factory_error(where, cfg, exc) from None
        model_chans = 3  # torchvision's classification models take RGB
        if cfg.weights is not None:  # every torchvision classification weight uses ImageNet's statistics
            mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    elif not image and is_causal_lm_dir(name):  # a causal LM: token ids [T] -> logits [T, V] (models/causal_lm.py)
        model = build_hf_causal(name, cfg.options, where, library("transformers", where))
        _check_lm_forward(model, input_shape, num_classes, where, cfg)
        return model
    else:
        model, mean, std, size = _build_hf(name, cfg, num_classes, image, where)
        model_chans = getattr(model.model.config, "num_channels", in_chans)
    if load and cfg.weights is not None:
        load_weights(model, read_weights(cfg.weights, where), _classifier_prefix(model, source),
                     cfg.head or "reset", where, cfg.weights)
    given = cfg.input or InputConfig()
    size = given.size or size
    mean = given.mean if given.mean is not None else mean
    std = given.std if given.std is not None else std
    repeat = model_chans if image and in_chans == 1 and model_chans > 1 else 0
    if image and in_chans not in (1, model_chans):
        raise ConfigError(f"{where}: {cfg.arch} takes {model_chans}-channel images, the data has {in_chans} channels")
    if image:
        mean, std = (_per_channel(v, model_chans, f"{where}.input.{k}") for k, v in (("mean", mean), ("std", std)))
    if image and (size is not None and tuple(size) != tuple(input_shape[1:]) or mean is not None or std is not None
                  or repeat):
        model = InputAdapter(model, size, mean, std, given.interpolation, repeat)
    _check_forward(model, input_shape, num_classes, where, cfg)
    return model


def _per_channel(values, channels: int, where: str):
    if values is None or len(values) == channels:
        return values
    if channels == 1:  # grayscale data, statistics of RGB images: their mean
        return [sum(values) / len(values)]
    raise ConfigError(f"{where}: {len(values)} values for {channels}-channel images")


def _build_hf(path: str, cfg, num_classes: int, image: bool, where: str):
    transformers = library("transformers", where)
    kw = dict(local_files_only=True, num_labels=num_classes, **cfg.options)
    auto = transformers.AutoModelForImageClassification if image else transformers.AutoModelForSequenceClassification
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if config.num_labels != num_classes and cfg.head == "keep":
            raise ConfigError(f"{where}.arch: {path} predicts {config.num_labels} classes, the data has "
                              f"{num_classes}; a teacher must predict the data's classes (head: reset to train "
                              f"a fresh classifier)")
        model = auto.from_pretrained(path, ignore_mismatched_sizes=True, **kw)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001
        kind = "image" if image else "sequence"
        raise ConfigError(f"{where}.arch: cannot load a {kind}-classification model from {path} "
                          f"({type(exc).__name__}: {first_line(exc, 200)})") from None
    mean = std = size = None
    if image:
        try:
            proc = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
            mean, std = getattr(proc, "image_mean", None), getattr(proc, "image_std", None)
            s = getattr(proc, "size", None) or {}
            if "height" in s and "width" in s:
                size = (s["height"], s["width"])
        except Exception:  # noqa: BLE001 - no image processor saved: the data's size, no normalisation
            pass
        return HfLogits(model, "image"), mean, std, size
    return HfLogits(model, "text", getattr(model.config, "pad_token_id", None) or 0), mean, std, size


def _check_forward(model: nn.Module, input_shape, num_classes: int, where: str, cfg) -> None:
    """One sample through the model (eval mode, no gradients), so that a model expecting
    another resolution fails here, with one line, instead of at the first batch."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape) if len(input_shape) == 3 else torch.ones(1, *input_shape)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{where}: {cfg.arch} cannot take inputs {list(input_shape)} "
                          f"({type(exc).__name__}: {first_line(exc, 160)}); set input: {{size: [H, W]}} "
                          f"to resize for it, or the model's own size option (e.g. options: {{img_size: "
                          f"{input_shape[-1]}}} for a timm ViT)") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{where}: {cfg.arch} returns {shape}, expected logits [batch, {num_classes}]")


def _check_lm_forward(model: nn.Module, input_shape, vocab: int, where: str, cfg) -> None:
    """A causal LM must take ``input_shape[0]`` tokens (its context) and give [1, T, vocab] logits."""
    context = context_length(model)
    if context is not None and input_shape[0] > context:
        raise ConfigError(f"data.seq_len: {input_shape[0]} is longer than the context of {where} ({cfg.arch}: "
                          f"{context} positions); lower data.seq_len")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, input_shape[0], dtype=torch.long))
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{where}: {cfg.arch} cannot take {input_shape[0]} token ids "
                          f"({type(exc).__name__}: {first_line(exc, 160)})") from None
    finally:
        model.train(was_training)
    if out.shape != (1, input_shape[0], vocab):
        raise ConfigError(f"{where}: {cfg.arch} returns logits {list(out.shape)} for {input_shape[0]} tokens; the "
                          f"tokenizer has {vocab} tokens (expected [1, {input_shape[0]}, {vocab}]); a teacher must use "
                          "the student's tokenizer")


def list_library(source: str) -> list[str]:
    """The model names the installed library offers (``mtkd list --models SOURCE``)."""
    if source == "timm":
        return list(library("timm", "mtkd list --models timm").list_models())
    if source == "torchvision":
        tv = library("torchvision.models", "mtkd list --models torchvision")
        return sorted(tv.list_models(module=tv))  # classification models only
    raise ConfigError("--models: choose timm or torchvision (hf models are local directories: hf:PATH)")
