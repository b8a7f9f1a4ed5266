"""Causal language models from ``hf:PATH``: a local ``save_pretrained`` directory whose
``config.json`` names a causal-LM architecture (``...ForCausalLM`` or ``...LMHeadModel``) is
loaded with ``AutoModelForCausalLM`` (``local_files_only=True``: nothing is downloaded) and
wrapped as ``token ids [B, T] -> next-token logits [B, T, V]``."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, first_line

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def is_causal_lm_dir(path: str | Path) -> bool:
    """True when ``path/config.json`` names a causal-LM architecture."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    names = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(names, list) and any(isinstance(n, str) and n.endswith(CAUSAL_SUFFIXES) for n in names)


class HfCausalLM(nn.Module):
    """A transformers causal LM as ``ids [B, T] -> logits [B, T, V]`` (ids may be float holding integers)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()  # causal attention over the whole row: an all-ones mask (padding only ends rows)
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits


def build_hf_causal(path: str, options: dict, where: str, transformers) -> HfCausalLM:
    """``AutoModelForCausalLM`` from the local directory ``path``; ``transformers``: the imported module
    (models/sources.py imports it with its one-line install hint)."""
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # transformers' loading bar would break the one-line errors
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **options)
    except Exception as exc:  # noqa: BLE001 - damaged or foreign directories raise many types
        raise ConfigError(f"{where}.arch: cannot load a causal language model from {path} "
                          f"({type(exc).__name__}: {first_line(exc, 200)})") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return HfCausalLM(model)


def context_length(model: nn.Module) -> int | None:
    """Longest sequence ``model`` takes: the built-in gpt's ``context``, a transformers model's
    ``n_positions`` / ``max_position_embeddings``; None when it does not say."""
    if hasattr(model, "context"):
        return int(model.context)
    config = getattr(getattr(model, "model", None), "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def special_token_ids(model: nn.Module) -> dict[str, int]:
    """The special token ids a transformers model's config declares (eos, bos, pad), where set."""
    config = getattr(getattr(model, "model", None), "config", None)
    out = {}
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            out[key.removesuffix("_token_id")] = value
    return out
