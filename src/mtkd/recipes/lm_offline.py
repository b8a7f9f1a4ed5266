"""Offline multi-teacher distillation of a causal language model, per token.

Frozen teachers that share the student's tokenizer see the same packed rows of token ids
[B, T]; at every masked-in target position their next-token logits [K, B, T, V] are turned by
the aggregator into one target distribution per token (``mean``, ``weighted``, ``confidence``,
``entropy``, or ``route`` by domain) and the student's distribution is pulled towards it with
the chosen token loss (forward KL, reverse KL or GKD's generalised JSD; see
:mod:`mtkd.losses.tokens`), next to the usual next-token cross-entropy::

    loss = (1 - alpha) * CE(student, next tokens) + alpha * D(aggregate_T(teachers), student_T)

The word-level KD of Kim and Rush ("Sequence-Level Knowledge Distillation", EMNLP 2016), and
with several teachers the per-token form of You et al. (KDD 2017)'s averaged soft targets.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..cache.tokens import expand_tokens
from ..data.text import loss_mask
from ..errors import MtkdError
from ..losses.tokens import aggregated_token_loss, masked_positions
from ..on_policy import is_on_policy_step, sample_continuations
from ..teachers.placement import DeviceTurns, model_device
from .base import Traits


def teacher_token_logits(teachers: Sequence[tuple[str, nn.Module]], ids: torch.Tensor,
                         turns: DeviceTurns | None = None) -> torch.Tensor:
    """Every teacher's next-token logits on ``ids`` [B, T]: [K, B, T, V] on ``ids``' device, outside autograd.

    Each teacher runs where its weights are (beside the student, or a device of its own), or, with
    ``turns`` (``distill.teachers_on_device``), on the compute device when its turn comes: the ones
    already there first, so K teachers with one slot cost K - 1 moves per batch, not K."""
    outs: list[torch.Tensor | None] = [None] * len(teachers)
    order = turns.order([m for _, m in teachers]) if turns is not None else range(len(teachers))
    for i in order:
        name, model = teachers[i]
        if model.training:
            model.eval()
        with (turns.use(model) if turns is not None else nullcontext(model_device(model))) as where:
            with torch.inference_mode():
                out = model(ids.to(where))
        # a transformers model returns an output with .logits; clone: an ordinary tensor outside inference mode
        out = getattr(out, "logits", out).clone().to(ids.device)
        if out.dim() != 3 or out.shape[:2] != ids.shape:
            raise MtkdError(f"teacher '{name}' returned logits {list(out.shape)} for token ids {list(ids.shape)}; "
                            "expected [batch, seq_len, vocab]")
        if not bool(torch.isfinite(out).all()):
            raise MtkdError(f"teacher '{name}' returned NaN or infinite logits")
        outs[i] = out
    return torch.stack(outs)


class LmOfflineRecipe(nn.Module):
    description = "causal LMs: frozen teachers aggregated per token, (1 - alpha) * CE + alpha * token divergence"
    traits = Traits(needs_teachers=True, uses_aggregator=True)

    def __init__(self, student: nn.Module, teachers: Sequence[tuple[str, nn.Module]], aggregator: nn.Module,
                 loss: str, eos_id: int, pad_id: int, temperature: float = 1.0, alpha: float = 0.9,
                 beta: float = 0.5, chunk: int = 1024, cache=None, on_policy=None, seed: int = 0,
                 turns: DeviceTurns | None = None):
        super().__init__()
        # on_policy: distill.on_policy (GKD's lambda, max_new_tokens, temperature) or None; the steps taken
        # so far are a buffer, so a resumed run draws the same on-policy steps and samples (mtkd.on_policy)
        self.on_policy, self.seed = on_policy, seed
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        # cache: a mtkd.cache.tokens.TokenCache of the teachers' top-k + tail on the training rows (looked
        # up by row index), used instead of running the teachers; None = teachers run live
        self.cache = cache
        # turns: teachers kept in CPU memory, at most turns.slots of them on the device at once
        # (distill.teachers_on_device; mtkd.teachers.placement); None = each runs where its weights are
        self.turns = turns
        self.student, self.aggregator = student, aggregator
        self.teachers = list(teachers)  # a plain list: their weights stay out of parameters()
        self.loss, self.eos_id, self.pad_id = loss, eos_id, pad_id
        self.temperature, self.alpha, self.beta, self.chunk = temperature, alpha, beta, chunk
        self.events: list[dict] = []

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        ids = x.long()  # [B, T]; y: [B] the row's domain
        mask = loss_mask(ids, self.eos_id, self.pad_id)  # [B, T] targets that do not cross a boundary
        step = int(self.steps_done)
        self.steps_done += 1
        sampled = self.on_policy is not None and is_on_policy_step(self.seed, step, self.on_policy.lambda_)
        if sampled:  # GKD: the student's own continuations of the rows' prompts; targets = generated tokens
            batch = sample_continuations(self.student, ids, self.on_policy, self.seed, step, self.eos_id, self.pad_id)
            ids, mask = batch.input_ids, batch.generated  # [B, T] each; the teachers score them live
        valid = mask[:, 1:]
        if self.cache is not None and not sampled:  # restored log-probabilities [K, B, T, V] (tail spread uniformly)
            values, top_ids, tail = self.cache.lookup(index)
            teacher_logits = expand_tokens(values, top_ids, tail, self.cache.vocab_size).to(ids.device)
        else:
            teacher_logits = teacher_token_logits(self.teachers, ids, self.turns)  # [K, B, T, V]
        teacher_rows = masked_positions(teacher_logits, mask)  # [K, N, V]
        out = self.student(ids)  # [B, T, V] (a transformers model: an output with .logits)
        student_rows = masked_positions(getattr(out, "logits", out), mask)  # [N, V]
        targets = ids[:, 1:][valid]  # [N]
        domains = y.long()[:, None].expand_as(valid)[valid]  # [N]
        # the student's sampled tokens are not ground truth: label-based aggregators see them as unlabeled (-1)
        labels = torch.full_like(targets, -1) if sampled else targets
        kd, weights = aggregated_token_loss(self.aggregator, student_rows, teacher_rows, labels, domains,
                                            self.loss, self.temperature, self.beta, self.chunk)
        ce = F.cross_entropy(student_rows.float(), targets) if len(targets) else student_rows.sum() * 0.0
        if sampled:  # GKD's loss on the student's samples is the divergence alone: CE would reinforce them
            losses = {"loss": self.alpha * kd, "kd": kd}
        else:
            losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd}
        if self.on_policy is not None:
            losses["on_policy"] = ce.new_tensor(float(sampled))
        if self.aggregator.capabilities.logs:  # e.g. route: the share of tokens each teacher taught
            losses.update(self.aggregator.logged())
        for k, (name, _) in enumerate(self.teachers):
            losses[f"weight/{name}"] = weights[:, k].mean().detach() if len(weights) else ce.new_zeros(())
        return losses
