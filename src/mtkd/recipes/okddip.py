"""OKDDip: online distillation with diverse peers. Auxiliary peers each learn from their own
attention-weighted mix of the peers' predictions; a group leader (the deployed model, our
student) learns from the peers' plain ensemble.

Chen, Mei, Wang, Feng and Chen, "Online Knowledge Distillation with Diverse Peers", AAAI 2020
(arXiv:1912.00350). With m auxiliary peers, penultimate features h_a and logits z_a:

    alpha_ab = softmax_b( L(h_a)^T E(h_b) )            (peer-specific aggregation weights)
    t_a      = sum_b alpha_ab z_b                       (peer a's target logits; b runs over all peers)
    loss     = (1 - alpha) * [ sum_a CE(z_a, y) + CE(z_leader, y) ]
               + alpha * w(step) * T^2 * [ sum_a KL(softmax(t_a / T) || softmax(z_a / T))
                                           + KL(softmax(mean_a z_a / T) || softmax(z_leader / T)) ]

L and E are linear maps (no bias) from the feature width F to F / ``attention_factor``, shared by
the peers when their widths agree (one per peer otherwise); they are trained by the first-level
KL term, through the targets: as in the authors' code the targets are not detached. w(step) is
the sigmoid ramp-up exp(-5 (1 - t)^2) over the first ``rampup`` fraction of the steps (the
authors ramp over 80 of 300 epochs). The paper's setting is CE + w * KD at T = 3: ``alpha: 0.5,
temperature: 3`` here (same directions, half the scale).

Deviation: the paper's peers are branches sharing the low-level layers of one network; here
they are independent networks (any built-in architecture, ``peers`` or ``num_peers`` copies of
the student's), the paper's "network-based" variant.
"""
from __future__ import annotations

from typing import Sequence

import torch
from pydantic import Field
from pydantic import BaseModel
from torch import nn

from ..errors import ConfigError
from ..losses import ce_loss, kd_loss
from ..models.features import PenultimateFeatures
from .peers import PeerOptions, build_peers, rampup
from .base import Traits


def attention_targets(logits: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Peer-specific targets: logits [m, B, C], queries and keys [m, B, d] ->
    (targets [m, B, C], attention [B, m, m]) with attention[b, a, f] = softmax_f(q_a . k_f)."""
    energy = torch.einsum("abd,fbd->baf", queries, keys)  # [B, m (a), m (f)]
    attention = torch.softmax(energy, dim=-1)
    targets = torch.einsum("baf,fbc->abc", attention, logits)  # [m, B, C]
    return targets, attention


class OkddipOptions(PeerOptions):
    num_peers: int = Field(3, ge=2, description="auxiliary peers (copies of the student's arch) when peers is empty")
    attention_factor: int = Field(8, ge=1, description="attention projections map width F to F / attention_factor")
    rampup: float = Field(0.27, ge=0, le=1, description="fraction of the steps over which the KD weight ramps up")


class OkddipRecipe(nn.Module):
    description = ("OKDDip: auxiliary peers distil from attention-weighted peer targets, "
                   "the leader (student) from the peers' ensemble (no teacher)")
    traits = Traits(uses_unlabeled=True, online=True)
    Options = OkddipOptions

    def __init__(self, student: nn.Module, temperature: float = 3.0, alpha: float = 0.5, options: OkddipOptions | None = None,
                 seed: int = 0, peers: Sequence[nn.Module] | None = None, steps: int = 0,
                 input_shape: tuple | None = None, num_classes: int | None = None,
                 student_config: BaseModel | None = None):
        super().__init__()
        self.events: list[dict] = []  # nothing to report per step (the Recipe protocol's field)
        self.options = o = options or OkddipOptions()
        self.temperature, self.alpha = temperature, alpha
        self.rampup_steps = int(round(o.rampup * steps))
        self.student = student  # the group leader
        if peers is not None:
            named = [(f"peer{i + 1}", m, None) for i, m in enumerate(peers)]
        else:
            named = build_peers(student, o, seed=seed, input_shape=input_shape, num_classes=num_classes,
                                student_config=student_config)
        if len(named) < 2:
            raise ConfigError("recipe 'okddip' needs at least two auxiliary peers (peers or num_peers >= 2)")
        self.peer_names = [n for n, _, _ in named]
        self.peer_configs = [c for _, _, c in named]
        self.peers = nn.ModuleList([m for _, m, _ in named])
        self.features = [PenultimateFeatures(m) for m in self.peers]  # h_a after each forward: [B, F_a]
        widths = [f.dim for f in self.features]
        self.shared = len(set(widths)) == 1
        dims = [max(1, w // o.attention_factor) for w in widths]
        if not self.shared and len(set(dims)) > 1:  # query of one peer meets the keys of all others
            d = min(dims)
            dims = [d] * len(dims)
        count = 1 if self.shared else len(widths)
        self.query = nn.ModuleList([nn.Linear(widths[i], dims[i], bias=False) for i in range(count)])
        self.key = nn.ModuleList([nn.Linear(widths[i], dims[i], bias=False) for i in range(count)])
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def extra_models(self) -> list[dict]:
        return [{"name": n, "role": "auxiliary peer (okddip)", "module": m, "config": c}
                for n, m, c in zip(self.peer_names, self.peers, self.peer_configs)]

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        t = self.temperature
        weight = rampup(int(self.steps_done), self.rampup_steps)
        self.steps_done += 1
        logits, queries, keys = [], [], []
        for a, (peer, feats) in enumerate(zip(self.peers, self.features)):
            logits.append(peer(x))  # [B, C]
            j = 0 if self.shared else a
            queries.append(self.query[j](feats.value))  # [B, d]
            keys.append(self.key[j](feats.value))
        logits = torch.stack(logits)  # [m, B, C]
        targets, attention = attention_targets(logits, torch.stack(queries), torch.stack(keys))
        leader = self.student(x)  # [B, C]
        ce_peers = torch.stack([ce_loss(z, y) for z in logits])  # [m]
        kd_peers = torch.stack([kd_loss(z, torch.softmax(ta / t, dim=-1), t) for z, ta in zip(logits, targets)])
        ce_leader = ce_loss(leader, y)
        kd_leader = kd_loss(leader, torch.softmax(logits.mean(0) / t, dim=-1), t)
        loss = (1 - self.alpha) * (ce_peers.sum() + ce_leader) + self.alpha * weight * (kd_peers.sum() + kd_leader)
        losses = {"loss": loss, "ce": ce_leader, "kd": kd_leader, "kd_weight": torch.tensor(weight),
                  # how much of its own prediction each peer's target keeps (diversity at work)
                  "attention_self": torch.diagonal(attention, dim1=1, dim2=2).mean()}
        for name, c, d in zip(self.peer_names, ce_peers, kd_peers):
            losses[f"ce/{name}"], losses[f"kd/{name}"] = c, d
        return losses


__all__ = ["OkddipOptions", "OkddipRecipe", "attention_targets"]
