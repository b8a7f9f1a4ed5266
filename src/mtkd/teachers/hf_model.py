"""A teacher from a local Hugging Face ``transformers`` sequence-classification directory
(``save_pretrained`` of the model and its tokenizer), loaded with ``local_files_only=True``:
nothing is downloaded at run time.

mtkd's data sets hold tensors, so a text data set holds token ids: ``hf_disk`` with
``text: COLUMN`` and ``tokenizer: DIR`` tokenizes a text column (padded to ``max_length``),
and :meth:`HfTeacher.encode` does the same in Python. The ids must come from this teacher's
tokenizer (teachers that share one, e.g. fine-tunes of the same base model, can share a data
set). The attention mask is ``ids != pad_token_id``. Class names come from ``id2label``
unless they are the default ``LABEL_i`` (then the config's ``classes`` or the data set's).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.tokens import encode, load_tokenizer  # noqa: F401 - encode: re-exported
from ..errors import MtkdError
from .external import ExternalTeacher, require, teacher_class_names


def check_weight_files(path: str | Path, allow_code: bool, name: str) -> bool:
    """True when ``path`` has safetensors weights (preferred: plain tensors). Weights only in pickle
    files (``*.bin``, ``*.pt``, ``*.ckpt``) need ``allow_code``: unpickling can run code."""
    path = Path(path)
    if any(path.glob("*.safetensors")):
        return True
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles and not allow_code:
        raise MtkdError(f"teacher '{name}': {path} holds its weights only as pickles ({', '.join(pickles[:3])}), and "
                        "loading a pickle can run code; save it with safe_serialization=True (safetensors), or if you "
                        "trust it set allow_code: true on this teacher (or pass --allow-code)")
    return False


class HfTeacher(ExternalTeacher):
    kind = "hf"

    def __init__(self, path: str | Path, data_classes, classes=None, name: str = "hf", allow_code: bool = False,
                 trust_remote_code: bool = False):
        transformers = require("transformers", "hf", f"Hugging Face teacher '{name}'")
        if not Path(path).is_dir():
            raise MtkdError(f"teacher '{name}': {path} is not a directory saved with save_pretrained")
        safetensors = check_weight_files(path, allow_code, name)
        try:
            # never a prompt (stdin is not consent); model code from the directory only when the teacher sets it
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=trust_remote_code,
                use_safetensors=True if safetensors else None)
        except (OSError, ValueError) as exc:
            raise MtkdError(f"teacher '{name}': cannot load a sequence-classification model from {path} "
                            f"({str(exc).splitlines()[0][:200]})") from None
        tokenizer = load_tokenizer(path, f"teacher '{name}'")
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        own = None if labels == [f"LABEL_{i}" for i in range(len(labels))] else labels
        super().__init__(teacher_class_names(classes, own, len(labels), data_classes, name), data_classes, name)
        self.module = model.eval()  # a submodule: moves with .to(device), counted in the parameters
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.vocab_size = model.config.vocab_size

    def encode(self, texts, max_length: int = 64) -> torch.Tensor:
        return encode(self.tokenizer, texts, max_length)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.round().long().to(self.module.device)  # [B, L] token ids
        if ids.dim() != 2 or int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise MtkdError(f"teacher '{self.name}' needs token ids [batch, length] from its tokenizer "
                            f"(0 .. {self.vocab_size - 1}); got shape {list(x.shape)} with values "
                            f"{int(ids.min())} .. {int(ids.max())}")
        return self.module(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits
