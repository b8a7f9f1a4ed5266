"""AE-KD: teacher weights found in gradient space (Du, You, Li, Wu, Wang, Qian and Zhang,
"Agree to Disagree: Adaptive Ensemble Knowledge Distillation in Gradient Space", NeurIPS 2020).

For each teacher k, v_k is the gradient of its KD loss with respect to the student's
logits, averaged over the batch. For KD at temperature T that gradient is analytic:

    d/ds_b [T^2 KL(p_kb || softmax(s_b / T))] = T (softmax(s_b / T) - p_kb)     ->  v_k in R^C

The weights are the minimum-norm point of the convex hull of {v_k}, each weight capped at
C (the authors' "-C", default 0.6; C >= 1 is the plain min-norm point, C <= 1/K uniform):

    w = argmin_w || sum_k w_k v_k ||^2   s.t.  sum_k w_k = 1,  0 <= w_k <= C

The authors solve this quadratic program with libsvm's one-class SVM; here projected
gradient descent on the capped simplex runs until the weights move less than ``tolerance``.
One weight per teacher per batch (the same for every sample of the batch).
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .base import Aggregate, AggregatorContext, Capabilities, mix, softened


class AekdOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weight_cap: float = Field(0.6, gt=0, description="upper bound C on each teacher's weight")
    tolerance: float = Field(1e-6, gt=0, description="stop when no weight moves more than this")
    max_iterations: int = Field(500, gt=0)


def project_capped_simplex(v: torch.Tensor, cap: float) -> torch.Tensor:
    """Euclidean projection of v [K] onto {w : sum w = 1, 0 <= w <= cap} (needs cap * K >= 1).

    The projection is clamp(v - tau, 0, cap) for the tau where the sum is 1. That sum is
    piecewise linear and non-increasing in tau with breakpoints at v_i and v_i - cap, so tau
    is found exactly by evaluating it at the sorted breakpoints and interpolating."""
    taus = torch.cat([v, v - cap]).sort().values  # [2K]
    sums = (v.unsqueeze(0) - taus.unsqueeze(1)).clamp(0, cap).sum(1)  # [2K], non-increasing
    j = int((sums >= 1.0).nonzero().max())  # last breakpoint with sum >= 1 (sums[0] = K * cap >= 1)
    if j == len(taus) - 1 or sums[j] == sums[j + 1]:
        tau = taus[j]
    else:  # linear between breakpoints j and j + 1
        tau = taus[j] + (sums[j] - 1.0) * (taus[j + 1] - taus[j]) / (sums[j] - sums[j + 1])
    return (v - tau).clamp(0, cap)


def min_norm_weights(vectors: torch.Tensor, cap: float = 1.0, tolerance: float = 1e-6,
                     max_iterations: int = 500, start: torch.Tensor | None = None) -> torch.Tensor:
    """Min-norm point of the convex hull of the rows of ``vectors`` [K, D], weights capped at ``cap``,
    by projected gradient descent (step 1 / largest eigenvalue of the Gram matrix) from ``start``."""
    k = vectors.shape[0]
    cap = max(cap, 1.0 / k)  # below 1/K the constraints leave only uniform weights
    gram = (vectors @ vectors.t()).double().cpu()  # [K, K]: tiny, the loop runs on the CPU
    step = 1.0 / max(float(torch.linalg.eigvalsh(gram).max()), 1e-12)
    w = torch.full((k,), 1.0 / k, dtype=torch.float64) if start is None else \
        project_capped_simplex(start.double().cpu(), cap)
    for _ in range(max_iterations):
        new = project_capped_simplex(w - step * (gram @ w), cap)
        moved = float((new - w).abs().max())
        w = new
        if moved < tolerance:
            break
    return w.to(vectors.dtype).to(vectors.device)


class AekdAggregator(nn.Module):
    description = "AE-KD: min-norm point of the teachers' KD gradients, weights capped (Du et al. 2020)"
    Options = AekdOptions
    capabilities = Capabilities()

    def __init__(self, ctx: AggregatorContext, options: AekdOptions | None = None):
        super().__init__()
        self.options = options or AekdOptions()
        # warm start: consecutive batches have nearby solutions (kept in checkpoints for exact resume)
        self.register_buffer("last", torch.full((max(ctx.num_teachers, 1),), 1.0 / max(ctx.num_teachers, 1)))

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                student_logits: torch.Tensor | None = None, **_) -> Aggregate:
        if student_logits is None:
            raise ValueError("aggregator 'aekd' needs the student's logits")
        probs = softened(teacher_logits, temperature)  # [K, B, C]
        q = torch.softmax(student_logits.detach() / temperature, dim=-1)  # [B, C]
        grads = (temperature * (q.unsqueeze(0) - probs)).mean(1)  # [K, C]: batch-mean gradient per teacher
        o = self.options
        w = min_norm_weights(grads, o.weight_cap, o.tolerance, o.max_iterations, start=self.last)  # [K]
        self.last.copy_(w.detach())
        weights = w.expand(teacher_logits.shape[1], -1)  # [B, K]
        return Aggregate(mix(probs, weights), weights)
