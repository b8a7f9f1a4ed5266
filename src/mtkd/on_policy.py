"""On-policy distillation of language models (GKD: Agarwal, Vieillard, Zhou, Stanczyk, Ramos, Geist
and Bachem, "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes",
ICLR 2024, Algorithm 1).

With probability ``lambda`` (the paper's student-data fraction) a training batch is replaced by
the student's own continuations of the batch's prompts; the teachers then score those sequences
token by token, and the token divergence is taken on the generated tokens only. With probability
1 - lambda the batch is the fixed data set as usual (supervised KD). The student's samples are
not back-propagated through (the paper's "stop gradient" on the sampling).

A batch of packed sequences input_ids [B, T] becomes prompts [B, T - N] (each sequence's first
T - N tokens) and N = ``max_new_tokens`` sampled tokens, so the on-policy batch has the same
shape [B, T] and fits the model's context whenever the data does. The loss mask [B, T] is True
at the positions whose logits predict a generated token (t = T - N - 1 ... T - 2), up to and
including the first end-of-sequence token when one is given; positions in the prompt and after
the first EOS are masked out.

Sampling is ancestral, from softmax(logits / temperature) over the whole vocabulary (no top-k or
top-p), as in the paper. Hugging Face models sample with their ``generate`` (with a key-value
cache); other models (mtkd's built-in GPT) with a plain loop that runs the model on the whole
prefix for every new token.

**Reproducibility.** Whether a step is on-policy, and every sampled token, are drawn from
generators seeded by (run seed, step) alone, never from the global random state (which is left
exactly as it was), so an interrupted run resumes bit-exactly on CPU.

Deviation: the paper samples with the student in training mode; here the student samples in
``eval()`` mode (dropout off) and is put back in the mode it was in, so the samples are the
student's actual predictions and do not consume dropout randomness.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import torch
from torch import nn

from .options import OnPolicyConfig


class OnPolicyBatch(NamedTuple):
    input_ids: torch.Tensor  # [B, T] prompt followed by the student's N sampled tokens
    loss_mask: torch.Tensor  # [B, T] bool: positions whose logits predict a generated token (before EOS)
    generated: torch.Tensor  # [B, T] bool: which tokens the student generated


def step_seed(seed: int, step: int, purpose: str) -> int:
    """A 63-bit seed from (run seed, step, purpose): independent streams for independent draws."""
    digest = hashlib.sha256(f"mtkd.on_policy:{purpose}:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def is_on_policy_step(seed: int, step: int, lam: float) -> bool:
    """True with probability ``lam``, decided by (seed, step) alone (resumes bit-exactly)."""
    if lam <= 0.0:
        return False
    if lam >= 1.0:
        return True
    g = torch.Generator().manual_seed(step_seed(seed, step, "choose"))
    return bool(torch.rand((), generator=g) < lam)


def _logits(output) -> torch.Tensor:
    return getattr(output, "logits", output)


def _is_hf_generator(model: nn.Module) -> bool:
    can_generate = getattr(model, "can_generate", None)
    return callable(can_generate) and bool(can_generate()) and callable(getattr(model, "generate", None))


def _sample_loop(model: nn.Module, prompts: torch.Tensor, n: int, temperature: float,
                 generator: torch.Generator) -> torch.Tensor:
    """prompts [B, P] -> new tokens [B, n], one full forward pass per token."""
    seq = prompts
    for _ in range(n):
        last = _logits(model(seq))[:, -1, :].float() / temperature  # [B, V]
        token = torch.multinomial(torch.softmax(last, dim=-1), 1, generator=generator)  # [B, 1]
        seq = torch.cat([seq, token], dim=1)
    return seq[:, prompts.shape[1]:]


def _sample_hf(model: nn.Module, prompts: torch.Tensor, n: int, temperature: float, seed: int,
               eos_token_id: int | None, pad_token_id: int) -> torch.Tensor:
    """prompts [B, P] -> new tokens [B, n] with ``model.generate`` (pure sampling), padded to n."""
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, max_new_tokens=n, temperature=temperature, top_k=0, top_p=1.0,
                              eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    devices = [prompts.device] if prompts.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # generate draws from the global generator: seed it, restore it
        torch.manual_seed(seed)
        out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                             generation_config=config)
    new = out[:, prompts.shape[1]:]  # [B, <= n]: generate stops early once every sequence hit EOS
    if new.shape[1] < n:
        new = torch.cat([new, new.new_full((len(new), n - new.shape[1]), pad_token_id)], dim=1)
    return new


@torch.no_grad()
def sample_continuations(student: nn.Module, input_ids: torch.Tensor, options: OnPolicyConfig, seed: int,
                         step: int, eos_token_id: int | None = None, pad_token_id: int = 0) -> OnPolicyBatch:
    """The on-policy batch of step ``step``: the first T - N tokens of each sequence of
    ``input_ids`` [B, T] followed by N = ``options.max_new_tokens`` tokens sampled from the student.

    student: a causal LM, ``student(ids [B, t])`` -> logits [B, t, V] (or an output with
    ``.logits``); Hugging Face models are sampled with ``generate``. eos_token_id: generated
    tokens after the first EOS are masked out of the loss (None: none is special)."""
    b, t = input_ids.shape
    n = options.max_new_tokens
    if n >= t:
        raise ValueError(f"on-policy: max_new_tokens ({n}) must be smaller than the sequence length ({t}), "
                         "so that every continuation has a prompt")
    prompts = input_ids[:, :t - n].long()
    seed_here = step_seed(seed, step, "sample")
    was_training = student.training
    student.eval()
    try:
        if _is_hf_generator(student):
            new = _sample_hf(student, prompts, n, options.temperature, seed_here, eos_token_id, pad_token_id)
        else:
            g = torch.Generator(device=prompts.device).manual_seed(seed_here)
            new = _sample_loop(student, prompts, n, options.temperature, g)
    finally:
        student.train(was_training)
    sequences = torch.cat([prompts, new.to(prompts.dtype)], dim=1)  # [B, T]
    keep = torch.ones_like(new, dtype=torch.bool)  # [B, N]: generated tokens up to and including the first EOS
    if eos_token_id is not None:
        after_eos = (new == eos_token_id).long().cumsum(1) - (new == eos_token_id).long()  # EOS seen before here
        keep = after_eos == 0
    generated = torch.zeros(b, t, dtype=torch.bool, device=input_ids.device)
    generated[:, t - n:] = keep
    loss_mask = torch.zeros_like(generated)
    loss_mask[:, :-1] = generated[:, 1:]  # logits at position i predict token i + 1
    return OnPolicyBatch(sequences, loss_mask, generated)
