"""Token-level distillation losses for causal language models, as plain functions.

At every position whose target is in the loss mask, the student's next-token distribution
``q = softmax(s / T)`` is pulled towards the teachers' ``p`` (already softened at ``T``):

* forward KL   ``KL(p || q) = sum_v p_v (log p_v - log q_v)`` (Hinton et al. 2015's KD per token;
  mode-covering),
* reverse KL   ``KL(q || p) = sum_v q_v (log q_v - log p_v)`` (mode-seeking),
* generalised JSD(beta) of GKD (Agarwal et al., "On-Policy Distillation of Language Models:
  Learning from Self-Generated Mistakes", ICLR 2024, Eq. 1 / Sec. 3)::

      JSD(beta)(p || q) = beta * KL(p || m) + (1 - beta) * KL(q || m),   m = beta * p + (1 - beta) * q

  with ``0 < beta < 1``; it tends to 0 at either end, its gradient scaled by ``1/beta``
  behaving like forward KL as beta -> 0 and, scaled by ``1/(1-beta)``, like reverse KL as beta -> 1.

Each term is multiplied by ``T^2`` (as :func:`mtkd.losses.kd.kd_loss`, so gradients keep their
size as T grows) and averaged over the masked-in positions. Positions are processed in chunks
of ``chunk`` rows, each under activation checkpointing, so the loss adds O(chunk x vocab)
memory on top of the logits themselves instead of a few O(positions x vocab) intermediates.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

TOKEN_LOSSES = ("forward_kl", "reverse_kl", "jsd")


def token_divergence(student_logits: torch.Tensor, target_log_probs: torch.Tensor, kind: str,
                     temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence (times T^2) between a target and the student's softened distribution.

    student_logits: [N, V] (softened here at ``temperature``); target_log_probs: [N, V], the
    log-probabilities of the target already at that temperature (-inf where it is 0).
    Returns [N].
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # [N, V]
    log_p = target_log_probs.float()
    p = log_p.exp()
    if kind == "forward_kl":  # sum p (log p - log q); 0 * log 0 = 0 where the target rules a token out
        div = (torch.xlogy(p, p) - p * log_q).sum(-1)
    elif kind == "reverse_kl":  # sum q (log q - log p)
        q = log_q.exp()
        div = (q * (log_q - log_p)).sum(-1)
    elif kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd: beta must lie strictly between 0 and 1, got {beta}")
        q = log_q.exp()
        # log m = logsumexp(log beta + log p, log(1 - beta) + log q): exact where p or q is tiny
        log_m = torch.logaddexp(log_p + torch.log(torch.tensor(beta)), log_q + torch.log(torch.tensor(1.0 - beta)))
        kl_pm = (torch.xlogy(p, p) - p * log_m).sum(-1)
        kl_qm = (q * (log_q - log_m)).sum(-1)
        div = beta * kl_pm + (1.0 - beta) * kl_qm
    else:
        raise ValueError(f"unknown token loss {kind!r}; choose one of {', '.join(TOKEN_LOSSES)}")
    return div * temperature ** 2


def chunked_mean(per_chunk: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], student_logits: torch.Tensor,
                 positions: int, chunk: int) -> torch.Tensor:
    """Mean over ``positions`` rows of ``per_chunk(student_rows [c, V], row_ids [c]) -> [c]``,
    computed ``chunk`` rows at a time under activation checkpointing (the backward recomputes
    each chunk instead of keeping its [c, V] intermediates). ``student_logits``: [N, V]."""
    if positions == 0:
        return student_logits.sum() * 0.0  # nothing to learn from in this batch, with a graph
    total = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, positions, chunk):
        rows = torch.arange(start, min(start + chunk, positions), device=student_logits.device)
        part = student_logits[start:start + chunk]
        if part.requires_grad:
            total = total + checkpoint(lambda s, r: per_chunk(s, r).sum(), part, rows, use_reentrant=False)
        else:
            total = total + per_chunk(part, rows).sum()
    return total / positions


def masked_positions(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] (or [K, B, T, V]) at the positions that predict a masked-in target.

    mask: [B, T], True where token t is a target (see :func:`mtkd.data.text.loss_mask`); the
    logits at t - 1 predict it, so the rows are ``logits[..., :-1, :][mask[:, 1:]]`` -> [N, V]
    (or [K, N, V])."""
    valid = mask[:, 1:]
    if logits.dim() == 4:
        return logits[:, :, :-1][:, valid]
    return logits[:, :-1][valid]


def token_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, kind: str,
               temperature: float = 1.0, beta: float = 0.5, chunk: int = 1024) -> torch.Tensor:
    """One teacher: mean over masked-in targets of the ``kind`` divergence at temperature T.

    student_logits, teacher_logits: [B, T, V]; mask: [B, T] (target-aligned, see
    :func:`masked_positions`). Returns a scalar."""
    s = masked_positions(student_logits, mask)  # [N, V]
    t = masked_positions(teacher_logits, mask).detach()  # [N, V]
    return chunked_mean(lambda rows, ids: token_divergence(rows, F.log_softmax(t[ids].float() / temperature, -1),
                                                           kind, temperature, beta), s, len(s), chunk)


def forward_kl(student_logits, teacher_logits, mask, temperature: float = 1.0, chunk: int = 1024) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over masked-in positions ([B, T, V] logits, mask [B, T])."""
    return token_loss(student_logits, teacher_logits, mask, "forward_kl", temperature, chunk=chunk)


def reverse_kl(student_logits, teacher_logits, mask, temperature: float = 1.0, chunk: int = 1024) -> torch.Tensor:
    """T^2 * KL(student_T || teacher_T), averaged over masked-in positions."""
    return token_loss(student_logits, teacher_logits, mask, "reverse_kl", temperature, chunk=chunk)


def jsd(student_logits, teacher_logits, mask, temperature: float = 1.0, beta: float = 0.5,
        chunk: int = 1024) -> torch.Tensor:
    """T^2 * generalised JSD(beta) of GKD (Agarwal et al., ICLR 2024), averaged over masked-in positions."""
    return token_loss(student_logits, teacher_logits, mask, "jsd", temperature, beta, chunk)


def next_token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-target negative log-likelihood [N] of ``ids`` [B, T] under ``logits`` [B, T, V] at the
    masked-in targets (cross-entropy of next-token prediction)."""
    return F.cross_entropy(masked_positions(logits, mask).float(), ids[:, 1:][mask[:, 1:]], reduction="none")


def aggregated_token_loss(aggregator, student_rows: torch.Tensor, teacher_rows: torch.Tensor, targets: torch.Tensor,
                          domains: torch.Tensor | None, kind: str, temperature: float = 1.0, beta: float = 0.5,
                          chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Several teachers, per token: (mean ``kind`` divergence to the aggregate, weights [N, K]).

    student_rows [N, V] and teacher_rows [K, N, V] are the logits at the N masked-in positions
    (:func:`masked_positions`); targets [N] the tokens they predict (the labels a label-based
    aggregator such as CA-MKD weighs teachers by); domains [N] each position's domain id (for
    routing). ``aggregator(teacher_logits [K, c, V], labels [c], T, domains=[c]) -> Aggregate``
    runs chunk by chunk inside the checkpointed function, so its [c, V] target is recomputed in
    the backward pass instead of kept."""
    n, k = student_rows.shape[0], teacher_rows.shape[0]
    weights = []

    def per_chunk(s: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # the target does not depend on the student
            agg = aggregator(teacher_rows[:, rows], targets[rows], temperature,
                             domains=None if domains is None else domains[rows])
            log_p = torch.log(agg.target.float().clamp_min(1e-30))  # [c, V]
        return token_divergence(s, log_p, kind, temperature, beta).sum(), agg.weights.detach()

    if n == 0:
        return student_rows.sum() * 0.0, student_rows.new_zeros(0, k)
    total = student_rows.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=student_rows.device)
        part = student_rows[start:start + chunk]
        if part.requires_grad:
            value, w = checkpoint(per_chunk, part, rows, use_reentrant=False)
        else:
            value, w = per_chunk(part, rows)
        total = total + value
        weights.append(w)
    return total / n, torch.cat(weights)
