"""A causal language model trained on next-token cross-entropy alone (the baseline of
language-model distillation): the mean over masked-in targets of -log q(x_t | x_<t)."""
from __future__ import annotations

import torch
from torch import nn

from ..data.text import loss_mask
from ..losses.tokens import next_token_nll
from .base import Traits


class LmScratchRecipe(nn.Module):
    description = "causal LM from scratch: next-token cross-entropy"
    traits = Traits()

    def __init__(self, student: nn.Module, eos_id: int, pad_id: int):
        super().__init__()
        self.student, self.eos_id, self.pad_id = student, eos_id, pad_id
        self.events: list[dict] = []

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        ids = x.long()  # [B, T]
        out = self.student(ids)  # [B, T, V] (a transformers model: an output with .logits)
        nll = next_token_nll(getattr(out, "logits", out), ids, loss_mask(ids, self.eos_id, self.pad_id))  # [N]
        ce = nll.mean() if len(nll) else nll.sum()
        return {"loss": ce, "ce": ce}
