"""Text -> token ids with a local Hugging Face tokenizer, shared by the text data sets and the
Hugging Face teachers (transformers is imported only when a tokenizer is loaded)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MtkdError
from ..optional import require


def load_tokenizer(path: str | Path, what: str):
    transformers = require("transformers", "hf", what)
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MtkdError(f"{what}: no tokenizer saved in {path} ({str(exc).splitlines()[0][:200]})") from None


def encode(tokenizer, texts, max_length: int) -> torch.Tensor:
    """Texts -> token ids [B, max_length] (padded, truncated), as float like every mtkd input."""
    ids = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")["input_ids"]
    return ids.float()  # exact: float32 holds integers up to 2^24, far above any vocabulary size
