"""What the online recipes (mutual, okddip, ffl, afd, codistillation) share: how a config
names the cohort, and how the peers are built.

These recipes need no pre-trained teacher: the networks trained together teach each other.
The config's ``student`` section is the peer reported as the student (``student.pt``,
``summary.json["student"]``); the others are listed in the recipe option ``peers`` (keys of
the ``distill`` section), one built-in model spec each, with an optional ``name``::

    student: {arch: mlp, hidden: [100, 100]}
    distill:
      recipe: mutual
      peers: [{name: cnn, arch: cnn1d, channels: 8}, {arch: mlp, hidden: [64]}]

Without ``peers``, ``num_peers`` copies of the student's architecture join it, each with its
own random initialization. Every peer is saved under ``peers/`` in the run directory and
reported as a row of ``summary.json["peers"]``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from ..errors import ConfigError
from ..models import parse_model
from ..models import build_model
from ..models.feature_maps import FeatureMap, map_layer, probe_map_shapes
from ..models.features import PenultimateFeatures


def peer_config(spec: Any, i: int) -> tuple[str | None, BaseModel]:
    """(name or None, validated model config) of ``peers[i]``; a ConfigError names the key."""
    where = f"distill.peers[{i}]"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a model spec such as {{arch: mlp, hidden: [32]}}, got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name", None)
    if name is not None and (not isinstance(name, str) or not name or "/" in name or name == "student"):
        raise ConfigError(f"{where}.name: a non-empty string without '/', not 'student' (got {name!r})")
    return name, parse_model(spec, where)


class PeerOptions(BaseModel):
    """Options every online recipe takes: who is in the cohort besides the student."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    peers: list[dict] = Field(default_factory=list,
                              description="the other peers: built-in model specs (arch, size keys, optional name)")
    num_peers: int = Field(1, ge=1, description="copies of the student's arch when peers is empty")

    @field_validator("peers")
    @classmethod
    def _valid_specs(cls, value: list[dict]) -> list[dict]:
        names = []
        for i, spec in enumerate(value):
            name, _ = peer_config(spec, i)
            names.append(name or f"peer{i + 1}")
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ConfigError(f"distill.peers: the name {dup!r} is used twice; peer names must be unique")
        return value


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with its own random initialization (every layer that can reset does)."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone


def build_peers(student: nn.Module, options: PeerOptions, *, input_shape=None, num_classes: int | None = None,
                student_config: BaseModel | None = None, seed: int = 0,
                count: int | None = None) -> list[tuple[str, nn.Module, BaseModel | None]]:
    """The peers besides the student: ``[(name, module, model config or None)]``.

    From ``options.peers`` when given (needs ``input_shape`` and ``num_classes``), else
    ``count`` (default ``options.num_peers``) fresh copies of the student. Each peer is
    initialized from its own seed, without touching the global random state.
    """

    out = []
    if options.peers:
        if input_shape is None or num_classes is None:
            raise ConfigError("distill.peers: building peers from specs needs the data's input shape and class "
                              "count; pass them (input_shape=, num_classes=) when building the recipe directly")
        for i, spec in enumerate(options.peers):
            name, cfg = peer_config(spec, i)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1009 + 101 * (i + 1))
                model = build_model(cfg, tuple(input_shape), num_classes)
            out.append((name or f"peer{i + 1}", model, cfg))
        return out
    for i in range(options.num_peers if count is None else count):
        peer_seed = seed * 1009 + 101 * (i + 1)
        if student_config is not None and input_shape is not None and num_classes is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(peer_seed)
                model = build_model(student_config, tuple(input_shape), num_classes)
        else:
            model = fresh_copy(student, peer_seed)
        out.append((f"peer{i + 1}", model, student_config))
    return out


def rampup(step: int, length: int) -> float:
    """Sigmoid-shaped ramp from ~0 to 1 over ``length`` steps, exp(-5 (1 - t)^2) (Laine and Aila,
    ICLR 2017), as OKDDip uses for its distillation weight; 1 when ``length`` is 0."""
    if length <= 0 or step >= length:
        return 1.0
    t = step / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


FeatureForm = Literal["auto", "maps", "vectors"]
FEATURES_HELP = ("what the recipe's own modules see: 'maps' (each network's last 2-D feature map, as the paper), "
                 "'vectors' (the pooled vector entering each classifier) or 'auto' (maps when every network has one)")


def cohort_features(recipe: str, names: Sequence[str], models: Sequence[nn.Module], requested: str,
                    input_shape: tuple | None = None, example: torch.Tensor | None = None):
    """Which features an online recipe's modules (FFL's fusion, AFD's discriminators) work on:
    ``(form, captures, shapes)`` with form 'maps' or 'vectors', one capture per model
    (``FeatureMap`` [B, C, H, W] or ``PenultimateFeatures`` [B, F] in ``.value`` after each
    forward) and its shape per sample ((C, H, W) or (F,)).

    'auto' takes maps when every model has a last 2-D feature map (``mtkd.models.feature_maps``),
    else vectors; 'maps' without one is a ConfigError naming the model. Finding the maps' shapes
    needs a probe input: ``example`` [n, ...] or zeros of ``input_shape``.
    """
    missing = [n for n, m in zip(names, models) if map_layer(m) is None]
    shapes = None
    if requested != "vectors" and not missing:
        if example is None and input_shape is None:
            raise ConfigError(f"recipe '{recipe}': sizing modules on feature maps needs a probe input; pass "
                              "input_shape= or example=, or set features='vectors'")
        x = example[:2] if example is not None else torch.zeros(2, *input_shape)
        shapes = probe_map_shapes(models, x)
        missing = [n for n, s in zip(names, shapes) if s is None]
    if requested == "maps" and missing:
        raise ConfigError(f"recipe '{recipe}': features: maps, but {missing[0]} has no 2-D feature map "
                          "[B, C, H, W] before its pooling (maps come from cnn2d, timm CNNs and Swins, torchvision CNNs); "
                          "use features: auto or vectors")
    if requested == "vectors" or missing:
        captures = [PenultimateFeatures(m) for m in models]
        return "vectors", captures, [(c.dim,) for c in captures]
    return "maps", [FeatureMap(m) for m in models], shapes


def features_event(recipe: str, form: str, names: Sequence[str], shapes: Sequence[tuple]) -> dict:
    """The event (logged at the first step, and printed by ``mtkd run`` before training) naming the
    features the recipe's modules work on."""
    what = "feature maps" if form == "maps" else "pooled feature vectors"
    sizes = ", ".join(f"{n} {list(s)}" for n, s in zip(names, shapes))
    return {"event": "features", "form": form,
            "note": f"recipe '{recipe}': working on {what} ({sizes})"}
