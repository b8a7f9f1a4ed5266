"""Top-k compression of teacher outputs for large label spaces, and the error it costs.

Storing all C logits of N samples costs N*C*4 bytes; for C in the tens of thousands most of
that is the long tail a teacher gives almost no mass. Following the sparse / top-k logit
storage used for offline distillation of large vocabularies (the offline logit compression
of arcee-ai's DistillKit, which DESIGN.md names as the reference), we keep, per sample,
the k largest log-probabilities (at T = 1) in float16, their
class ids, and the probability mass of the other C - k classes (the tail). Reading back
spreads the tail uniformly over those classes, which gives a full, normalized log-probability
vector; used as logits it reproduces the teacher's distribution at T = 1 up to the tail's
shape and float16 rounding, and at another T approximately: :func:`topk_error` measures how
much (KL divergence and top-1 agreement at the distillation temperature).
"""
from __future__ import annotations

import torch

TINY = 1e-30  # floor of a tail probability, so log() stays finite when the tail is empty


def compress_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [N, C] -> (values [N, k] float16 log-probs, classes [N, k] int, tail [N] float32)."""
    num_classes = logits.shape[1]
    k = min(k, num_classes)
    logp = torch.log_softmax(logits.double(), dim=1)  # [N, C], float64 so the tail is exact
    values, classes = logp.topk(k, dim=1)  # [N, k] each, largest first
    tail = (1.0 - values.exp().sum(1)).clamp_min(0.0)  # [N] mass outside the top k
    id_dtype = torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32
    return values.to(torch.float16), classes.to(id_dtype), tail.float()


def expand_topk(values: torch.Tensor, classes: torch.Tensor, tail: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(values [B, k], classes [B, k], tail [B]) -> log-probabilities [B, C] (float32), the tail
    mass spread evenly over the C - k classes that were not kept."""
    k = values.shape[1]
    rest = max(num_classes - k, 1)
    fill = (tail.float() / rest).clamp_min(TINY).log()  # [B] log-prob of each tail class
    out = fill[:, None].expand(len(values), num_classes).clone()  # [B, C]
    out.scatter_(1, classes.long(), values.float())
    return out


def topk_error(logits: torch.Tensor, restored: torch.Tensor, temperature: float) -> dict:
    """What the compression costs at temperature T: mean and max KL(p_T(full) || p_T(restored))
    per sample (nats), and the fraction of samples whose top-1 class is unchanged."""
    p = torch.log_softmax(logits.double() / temperature, dim=1)  # [N, C]
    q = torch.log_softmax(restored.double() / temperature, dim=1)
    kl = (p.exp() * (p - q)).sum(1)  # [N]
    same = (logits.argmax(1) == restored.argmax(1)).double().mean()
    return {"temperature": temperature, "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1_agreement": float(same)}
