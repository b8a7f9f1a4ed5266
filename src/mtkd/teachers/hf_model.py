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


class HfTeacher(ExternalTeacher):
    kind = "hf"

    def __init__(self, path: str | Path, data_classes, classes=None, name: str = "hf"):
        transformers = require("transformers", "hf", f"Hugging Face teacher '{name}'")
        if not Path(path).is_dir():
            raise MtkdError(f"teacher '{name}': {path} is not a directory saved with save_pretrained")
        try:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
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
