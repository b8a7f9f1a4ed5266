"""Top-k + tail cache of a language-model teacher's next-token distributions, and the token KL
computed from it.

Offline distillation of causal LMs stores, per token, the teacher's k largest log-probabilities
and their token ids instead of the whole vocabulary (arcee-ai's DistillKit stores top-k logits
offline at roughly 300 bytes per token; the same idea as :mod:`mtkd.cache.topk` for large label
spaces). Here, per teacher, over packed sequences input_ids [S, T]::

    values.npy  [S, T, k] float16   log p(token | prefix) of the k most likely tokens, largest first
    ids.npy     [S, T, k] uint16    their token ids (int32 when the vocabulary exceeds 65,536)
    tail.npy    [S, T]    float32   1 - sum of those k probabilities: the mass of the other V - k tokens

so a token costs ``k * (2 + 2) + 4`` bytes (260 at k = 64 for a vocabulary up to 65,536 tokens;
``k * 6 + 4`` = 388 above that, when only k <= 49 meets 300 bytes). Entries use the same
fingerprints (data, teacher weights and architecture, storage options), manifests, sha256
checks, locks and atomic commits as every mtkd cache entry (:mod:`mtkd.cache.store`), and are
built one teacher at a time, streaming each batch of sequences into memory-mapped files.

**The tail.** Reading back, the tail mass is spread uniformly over the V - k tokens that were not
kept: the restored distribution is p_i = exp(values_i) on the kept ids and tail / (V - k) on each
other token. It sums to 1, keeps the teacher's top-k exactly (up to float16) and its total tail
mass exactly; it does not keep the tail's shape. At temperature T the restored distribution is
softened as a whole (p^(1/T), renormalised), which is what a student trained on the full teacher
sees at T = 1; at T != 1 the tail's true shape would soften differently, so the error grows with
T. The build measures the error (mean and max KL(full || restored) per token at the cache's
temperature) and reports it with the bytes per token.

**The token KL** (:func:`topk_token_divergence`) works from (values, ids, tail) against the student's
logits [B, T, V] without ever expanding the teacher to [B, T, V]: forward KL and reverse KL have
closed forms over the k kept tokens plus one term for the uniform tail (see the function); the
generalised JSD of GKD (Agarwal et al., "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", ICLR 2024) needs the mixture on every token, so it expands the teacher
one chunk at a time and calls :func:`mtkd.losses.tokens.token_divergence`. Positions are
processed ``chunk`` at a time under activation checkpointing, so memory is O(chunk x V) in the
forward pass and in the backward pass.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..losses.tokens import token_divergence
from ..precision import autocast
from .build import TeacherLoader, reuse_or_build
from .store import CacheError, Entry, _hash_tensor, entry_key, teacher_fingerprint
from .topk import TINY, compress_topk, expand_topk, topk_error

STORAGE = "token_topk"
TAIL_BYTES = 4  # float32: a tail of 1e-9 keeps 7 digits (float16 would flush it to 0 below 6e-8)


def id_dtype(vocab_size: int) -> np.dtype:
    """Smallest integer type holding every token id: uint16 up to 65,536 tokens, else int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def bytes_per_token(k: int, vocab_size: int) -> int:
    """Bytes one token costs in the cache: k float16 values + k ids + the float32 tail."""
    k = min(k, vocab_size)
    return k * 2 + k * id_dtype(vocab_size).itemsize + TAIL_BYTES


def compress_tokens(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """logits [B, T, V] -> (values [B, T, k] float16, ids [B, T, k] uint16/int32, tail [B, T] float32)."""
    b, t, v = logits.shape
    values, ids, tail = compress_topk(logits.reshape(b * t, v), k)  # [BT, k], [BT, k], [BT]
    kk = values.shape[1]
    return (values.numpy().reshape(b, t, kk), ids.to(torch.int64).numpy().astype(id_dtype(v)).reshape(b, t, kk),
            tail.numpy().reshape(b, t))


def expand_tokens(values: torch.Tensor, ids: torch.Tensor, tail: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(values [..., k], ids [..., k], tail [...]) -> restored log-probabilities [..., V] (float32),
    the tail spread uniformly over the V - k tokens not kept. Usable as logits wherever teacher
    logits are expected (softmax(log p / T) is the restored distribution softened at T)."""
    shape = values.shape[:-1]
    k = values.shape[-1]
    flat = expand_topk(values.reshape(-1, k), ids.reshape(-1, k).long(), tail.reshape(-1), vocab_size)
    return flat.reshape(*shape, vocab_size)


def _teacher_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] token ids -> [B, T, V] logits, for Hugging Face causal LMs (``.logits``) and plain modules."""
    out = model(input_ids)
    return getattr(out, "logits", out)


def token_data_fingerprint(input_ids: torch.Tensor | np.ndarray) -> str:
    """sha256 of the packed token sequences [S, T] (read in chunks: a memory map is never copied whole)."""
    import hashlib

    h = hashlib.sha256(b"tokens")
    if isinstance(input_ids, np.ndarray):
        with warnings.catch_warnings():  # a read-only memory map: torch only reads it here
            warnings.simplefilter("ignore", UserWarning)
            input_ids = torch.from_numpy(input_ids)
    _hash_tensor(h, input_ids)
    return h.hexdigest()


@dataclass
class TokenCacheReport:
    entries: list[Entry] = field(default_factory=list)
    built: list[str] = field(default_factory=list)  # teachers whose entry was (re)built
    seconds: dict[str, float] = field(default_factory=dict)
    data_fingerprint: str = ""

    @property
    def bytes_per_token(self) -> float:
        """Measured: the bytes of one teacher's entry files (npy headers included) per token."""
        if not self.entries:
            return 0.0
        e = self.entries[0]
        return e.bytes / max(1, e.manifest["num_samples"] * e.manifest["seq_len"])


def _fill_tokens(model: nn.Module, input_ids, tmp: Path, k: int, batch_size: int, device: torch.device,
                 amp: str, temperature: float) -> dict:
    """Run ``model`` over the sequences [S, T], streaming (values, ids, tail) into memmaps in ``tmp``."""
    s, t = input_ids.shape
    arrays: dict[str, np.ndarray] = {}
    err = {"kl_sum": 0.0, "kl_max": 0.0, "agree": 0.0}
    vocab = 0
    model.eval()
    for start in range(0, s, batch_size):
        batch = torch.as_tensor(np.asarray(input_ids[start:start + batch_size]), dtype=torch.long).to(device)
        with torch.inference_mode(), autocast(device, amp):
            logits = _teacher_logits(model, batch).float().cpu()  # [b, T, V]
        if logits.dim() != 3 or logits.shape[:2] != batch.shape or not torch.isfinite(logits).all():
            raise CacheError(f"token cache: the teacher returned {tuple(logits.shape)} for token ids "
                             f"{tuple(batch.shape)} (expected [B, T, vocabulary], finite)")
        if not arrays:  # shapes known after the first batch
            vocab = logits.shape[2]
            kk = min(k, vocab)
            arrays["values"] = np.lib.format.open_memmap(tmp / "values.npy", "w+", np.float16, (s, t, kk))
            arrays["ids"] = np.lib.format.open_memmap(tmp / "ids.npy", "w+", id_dtype(vocab), (s, t, kk))
            arrays["tail"] = np.lib.format.open_memmap(tmp / "tail.npy", "w+", np.float32, (s, t))
        elif logits.shape[2] != vocab:
            raise CacheError(f"token cache: the teacher's vocabulary changed from {vocab} to {logits.shape[2]}")
        values, ids, tail = compress_tokens(logits, k)
        end = start + len(batch)
        arrays["values"][start:end], arrays["ids"][start:end], arrays["tail"][start:end] = values, ids, tail
        flat = logits.reshape(-1, vocab)  # [bT, V]
        restored = expand_tokens(torch.from_numpy(values), torch.from_numpy(ids.astype(np.int64)),
                                 torch.from_numpy(tail), vocab).reshape(-1, vocab)
        e = topk_error(flat, restored, temperature)
        err["kl_sum"] += e["kl_mean"] * len(flat)
        err["kl_max"] = max(err["kl_max"], e["kl_max"])
        err["agree"] += e["top1_agreement"] * len(flat)
    for array in arrays.values():
        array.flush()
    del arrays
    tokens = max(s * t, 1)
    return {"num_samples": s, "seq_len": t, "num_classes": vocab, "storage": STORAGE, "topk": min(k, vocab),
            "bytes_per_token": bytes_per_token(k, vocab),
            "topk_error": {"temperature": temperature, "kl_mean": err["kl_sum"] / tokens, "kl_max": err["kl_max"],
                           "top1_agreement": err["agree"] / tokens}}


def build_token_cache(teachers: Sequence[tuple[str, TeacherLoader]], input_ids: torch.Tensor | np.ndarray,
                      root: str | Path, k: int = 64, batch_size: int = 8, device: torch.device | str = "cpu",
                      amp: Literal["off", "bf16", "fp16"] = "off", temperature: float = 1.0,
                      verify: Literal["checksum", "size", "none"] = "checksum",
                      log: Callable[[str], None] = lambda m: None) -> TokenCacheReport:
    """Make sure every teacher has a top-k + tail entry for the sequences ``input_ids`` [S, T]
    (a tensor or a memory-mapped array); return them, in order.

    teachers: (name, loader) pairs; each loader returns the model ([B, T] ids -> [B, T, V] logits,
    or an output with ``.logits``), called once; the model is released before the next is loaded,
    so the peak is one teacher plus one batch of ``batch_size`` sequences. temperature: at which
    the storage error is measured and reported."""
    if k <= 0:
        raise ConfigError("token cache: topk must be > 0 (tokens kept per position), e.g. distill.cache_topk: 64")
    if getattr(input_ids, "ndim", 0) != 2:
        raise ConfigError(f"token cache: expected token ids [sequences, length], got shape "
                          f"{tuple(getattr(input_ids, 'shape', ()))}")
    root, device = Path(root), torch.device(device)
    report = TokenCacheReport(data_fingerprint=token_data_fingerprint(input_ids))
    storage = {"storage": STORAGE, "topk": k, "amp": amp}
    for name, load in teachers:
        def fill(model: nn.Module, tmp: Path) -> dict:
            meta = _fill_tokens(model, input_ids, tmp, k, batch_size, device, amp, temperature)
            return {**meta, "data_fingerprint": report.data_fingerprint, "preprocessing": "token ids",
                    "options": storage}

        def key_of(model: nn.Module) -> str:
            return entry_key(report.data_fingerprint, teacher_fingerprint(model), "token ids", storage)

        entry, seconds = reuse_or_build(load, name, key_of, root, fill, device, verify, log)
        if entry.manifest.get("storage") != STORAGE:
            raise CacheError(f"teacher cache entry {entry.path} is not a token cache; delete it or rebuild")
        report.entries.append(entry)
        if seconds is not None:
            report.seconds[name] = seconds
            report.built.append(name)
        err = entry.manifest["topk_error"]
        log(f"token cache: '{name}' top-{entry.manifest['topk']} of {entry.manifest['num_classes']} tokens, "
            f"{entry.manifest['bytes_per_token']} bytes/token; KL(full || stored) {err['kl_mean']:.2e} nats on "
            f"average (max {err['kl_max']:.2e}) at T={err['temperature']:g}, top-1 agreement "
            f"{err['top1_agreement']:.4f}")
    return report


class TokenCache:
    """The entries of a token-cache build, read by sequence index (one gather per teacher)."""

    def __init__(self, report: TokenCacheReport):
        if not report.entries:
            raise CacheError("token cache: no entries")
        shapes = {(e.manifest["num_samples"], e.manifest["seq_len"], e.manifest["num_classes"],
                   e.manifest["topk"]) for e in report.entries}
        if len(shapes) != 1:
            raise CacheError(f"token cache: the teachers' entries differ in shape {sorted(shapes)}; teachers must "
                             "share the vocabulary and be built on the same sequences with the same k")
        for e in report.entries:
            if e.manifest["data_fingerprint"] != report.data_fingerprint:
                raise CacheError(f"teacher cache entry {e.path} was built on other data; rebuild it")
        self.entries = list(report.entries)
        self.num_sequences, self.seq_len, self.vocab_size, self.k = shapes.pop()

    @property
    def teachers(self) -> list[str]:
        return [e.teacher for e in self.entries]

    def lookup(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequence indices [B] -> values [K, B, T, k] float32, ids [K, B, T, k] int64, tail [K, B, T] float32."""
        r = np.asarray(rows.detach().cpu().long())
        if len(r) and (r.min() < 0 or r.max() >= self.num_sequences):
            raise CacheError(f"token cache: sequence index out of range 0..{self.num_sequences - 1}")
        values = np.stack([e.arrays["values"][r] for e in self.entries]).astype(np.float32)
        ids = np.stack([e.arrays["ids"][r] for e in self.entries]).astype(np.int64)
        tail = np.stack([e.arrays["tail"][r] for e in self.entries])
        return torch.from_numpy(values), torch.from_numpy(ids), torch.from_numpy(np.ascontiguousarray(tail))


# ---------------------------------------------------------------- the token KL from (values, ids, tail)

def _tempered_teacher(values: torch.Tensor, tail: torch.Tensor, vocab_size: int, temperature: float):
    """values [n, k], tail [n] -> (log p_T of the kept tokens [n, k], log p_T of each tail token [n] or None).

    The restored distribution (kept exp(values), tail / (V - k) on each other token) softened at T:
    p_T(v) = p(v)^(1/T) / Z with log Z = logsumexp(values / T, log(V - k) + log(tail / (V - k)) / T)."""
    rest = vocab_size - values.shape[1]
    kept = values / temperature  # [n, k]
    if rest == 0:  # every token kept: no tail
        return kept - torch.logsumexp(kept, dim=1, keepdim=True), None
    each = (tail / rest).clamp_min(TINY).log() / temperature  # [n] log p(tail token)^(1/T)
    log_z = torch.logsumexp(torch.cat([kept, (each + math.log(rest)).unsqueeze(1)], dim=1), dim=1)  # [n]
    return kept - log_z.unsqueeze(1), each - log_z


def _chunk_divergence(flat: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, ids: torch.Tensor,
                      tail: torch.Tensor, vocab_size: int, kind: str, temperature: float, beta: float) -> torch.Tensor:
    """Student logits ``flat[rows]`` [n, V] vs one teacher's (values [n, k], ids [n, k], tail [n]) -> [n].

    Takes the whole [B*T, V] logits and the row indices, so that under checkpointing only a
    reference to the student's logits is kept, never a [n, V] copy per chunk."""
    student = flat.index_select(0, rows)  # [n, V]
    logq = F.log_softmax(student.float() / temperature, dim=1)  # [n, V]
    logp_kept, logp_tail = _tempered_teacher(values.float(), tail.float(), vocab_size, temperature)  # [n, k], [n]
    logq_kept = logq.gather(1, ids)  # [n, k]
    rest = vocab_size - values.shape[1]
    if kind == "forward_kl":  # KL(p || q) = sum_kept p (log p - log q) + sum_tail p_t (log p_t - log q_j)
        out = (logp_kept.exp() * (logp_kept - logq_kept)).sum(1)
        if logp_tail is not None:
            tail_logq_sum = logq.sum(1) - logq_kept.sum(1)  # [n] sum of log q over the V - k tail tokens
            p_t = logp_tail.exp()
            out = out + rest * p_t * logp_tail - p_t * tail_logq_sum
        return out
    if kind == "reverse_kl":  # KL(q || p) = sum q log q - sum_kept q log p - (1 - sum_kept q) log p_t
        q_kept = logq_kept.exp()
        out = (logq.exp() * logq).sum(1) - (q_kept * logp_kept).sum(1)
        if logp_tail is not None:
            out = out - (1.0 - q_kept.sum(1)).clamp_min(0.0) * logp_tail
        return out
    # generalised JSD(beta) needs p on every token (the mixture m): expand this chunk's teacher, [n, V]
    fill = logp_tail if logp_tail is not None else torch.full_like(tail, -math.inf)
    logp = fill.unsqueeze(1).expand_as(logq).clone().scatter_(1, ids, logp_kept)  # [n, V], already at T
    return token_divergence(student, logp, "jsd", temperature, beta) / temperature**2


def topk_token_divergence(student_logits: torch.Tensor, values: torch.Tensor, ids: torch.Tensor,
                          tail: torch.Tensor, mask: torch.Tensor | None = None,
                          kind: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl", temperature: float = 1.0,
                          beta: float = 0.5, chunk: int = 1024) -> torch.Tensor:
    """Mean over the masked-in positions of T^2 * D(p_T, q_T), from one teacher's cached top-k.

    student_logits [B, T, V]; values [B, T, k] (log-probs at T = 1), ids [B, T, k], tail [B, T]
    (one teacher per position: for routed targets, gather each position's teacher first); mask
    [B, T] bool (None = all). kind: "forward_kl" KL(p || q), "reverse_kl" KL(q || p), or "jsd" the
    generalised Jensen-Shannon divergence of GKD with 0 < beta < 1. p is the restored teacher
    distribution (tail spread uniformly), q = softmax(student / T). The T^2 factor keeps gradients
    comparable across temperatures, as in mtkd's classification KD loss."""
    if kind not in ("forward_kl", "reverse_kl", "jsd"):
        raise ValueError(f"topk_token_divergence: kind must be forward_kl, reverse_kl or jsd, got {kind!r}")
    if kind == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"topk_token_divergence: jsd needs 0 < beta < 1, got {beta}")
    b, t, v = student_logits.shape
    positions = (torch.ones(b, t, dtype=torch.bool, device=student_logits.device) if mask is None
                 else mask.to(student_logits.device)).reshape(-1).nonzero().squeeze(1)  # [N]
    if positions.numel() == 0:
        return student_logits.sum() * 0.0  # no position to learn from: zero, with a graph
    flat = student_logits.reshape(b * t, v)
    values, ids, tail = (a.reshape(b * t, -1).to(student_logits.device) for a in (values, ids.long(), tail))
    total = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, positions.numel(), chunk):
        rows = positions[start:start + chunk]
        args = (flat, rows, values[rows], ids[rows], tail[rows].squeeze(1), v, kind, temperature, beta)
        per_position = checkpoint(_chunk_divergence, *args, use_reentrant=False) if flat.requires_grad \
            else _chunk_divergence(*args)
        total = total + per_position.sum()
    return total / positions.numel() * temperature**2
