"""Deep Mutual Learning: a cohort of peers, of any architectures, trained together from
scratch; each learns from the labels and from the other peers' predictions.

Zhang, Xiang, Hospedales and Lu, "Deep Mutual Learning", CVPR 2018 (arXiv:1706.00384).
For K peers with probabilities p_1..p_K, peer k minimizes (Eq. 9 of the paper)

    L_k = CE(p_k, y) + 1 / (K - 1) * sum_{l != k} KL(p_l || p_k)

and ``target: ensemble`` is the paper's alternative (Eq. 10, DML_e): the KL to the mean of
the other peers' probabilities. The other peers' predictions are constant targets for peer k
(they are detached), so one backward pass of sum_k L_k gives every peer the gradient of its
own loss. In this package's convention every KD term is softened at T and scaled by T^2, and
CE and KD are weighted ``(1 - alpha)`` and ``alpha``:

    L_k = (1 - alpha) * CE(z_k, y) + alpha * T^2 / (K - 1) * sum_{l != k} KL(softmax(z_l / T) || softmax(z_k / T))

The paper's setting is T = 1 and equal weights: ``temperature: 1, alpha: 0.5`` (the same
gradient directions at half the scale). Deviation: the paper's Algorithm 1 updates the peers
one after another, recomputing predictions in between; here all peers take one simultaneous
step from the same forward pass (one forward pass per peer per step).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field
from pydantic import BaseModel
from torch import nn

from ..losses import ce_loss
from .peers import PeerOptions, build_peers
from .base import Traits


def mutual_kd(logits: torch.Tensor, temperature: float, target: str = "peers") -> torch.Tensor:
    """Each peer's KD term against the others: logits [K, B, C] -> [K] (mean over the batch).

    ``peers``: T^2 / (K-1) * sum_{l != k} KL(p_l || q_k); ``ensemble``: T^2 * KL(mean_{l != k} p_l || q_k),
    with p = softmax(logits / T) detached (targets) and q_k = softmax(z_k / T) (with gradient).
    """
    k = logits.shape[0]
    if k < 2:
        raise ValueError("mutual learning needs at least two peers")
    t = temperature
    p = torch.softmax(logits.detach() / t, dim=-1)  # [K, B, C] targets
    log_q = torch.log_softmax(logits / t, dim=-1)  # [K, B, C] learners
    others = 1.0 - torch.eye(k, device=logits.device, dtype=logits.dtype)  # [K, K], 0 on the diagonal
    if target == "peers":
        neg_entropy = torch.xlogy(p, p).sum(-1)  # [L, B]: sum_c p log p of each target peer l
        cross = torch.einsum("lbc,kbc->klb", p, log_q)  # [K, L, B]: sum_c p_l log q_k
        kl = neg_entropy.unsqueeze(0) - cross  # [K, L, B] = KL(p_l || q_k)
        return (kl.mean(-1) * others).sum(1) / (k - 1) * t * t
    mean_others = torch.einsum("kl,lbc->kbc", others, p) / (k - 1)  # [K, B, C]
    kl = (torch.xlogy(mean_others, mean_others) - mean_others * log_q).sum(-1)  # [K, B]
    return kl.mean(-1) * t * t


class MutualOptions(PeerOptions):
    target: Literal["peers", "ensemble"] = Field(
        "peers", description="KL to each other peer, averaged (DML), or to the others' mean (DML_e)")


class MutualRecipe(nn.Module):
    description = "Deep Mutual Learning: peers of any archs trained together, CE + KL to each other (no teacher)"
    traits = Traits(uses_unlabeled=True, online=True)  # peers can agree on unlabeled samples (CE skips them)
    Options = MutualOptions

    def __init__(self, student: nn.Module, temperature: float = 1.0, alpha: float = 0.5, options: MutualOptions | None = None,
                 seed: int = 0, peers: Sequence[nn.Module] | None = None,
                 input_shape: tuple | None = None, num_classes: int | None = None,
                 student_config: BaseModel | None = None):
        super().__init__()
        self.events: list[dict] = []  # nothing to report per step (the Recipe protocol's field)
        self.options = options or MutualOptions()
        self.temperature, self.alpha = temperature, alpha
        self.student = student
        if peers is not None:  # modules given directly (Python API)
            named = [(f"peer{i + 1}", m, None) for i, m in enumerate(peers)]
        else:
            named = build_peers(student, self.options, seed=seed, input_shape=input_shape, num_classes=num_classes,
                                student_config=student_config)
        self.peer_names = [n for n, _, _ in named]
        self.peer_configs = [c for _, _, c in named]
        self.peers = nn.ModuleList([m for _, m, _ in named])

    def cohort(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def extra_models(self) -> list[dict]:
        """Models beyond the student that the run reports (summary.json "peers") and saves."""
        return [{"name": n, "role": "peer (mutual)", "module": m, "config": c}
                for n, m, c in zip(self.peer_names, self.peers, self.peer_configs)]

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        logits = torch.stack([m(x) for m in self.cohort()])  # [K, B, C]
        kd = mutual_kd(logits, self.temperature, self.options.target)  # [K]
        ce = torch.stack([ce_loss(z, y) for z in logits])  # [K]
        per_peer = (1 - self.alpha) * ce + self.alpha * kd  # [K]
        losses = {"loss": per_peer.sum(), "ce": ce[0], "kd": kd[0]}
        for name, c, d in zip(self.peer_names, ce[1:], kd[1:]):
            losses[f"ce/{name}"], losses[f"kd/{name}"] = c, d
        return losses


__all__ = ["MutualOptions", "MutualRecipe", "mutual_kd"]
