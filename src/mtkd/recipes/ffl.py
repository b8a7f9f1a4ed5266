"""Feature fusion learning (FFL): parallel sub-networks, a fusion module over their features with
its own classifier, and mutual distillation between the fused classifier and the sub-networks.

Kim, Hyun, Chung and Kwak, "Feature Fusion for Online Mutual Knowledge Distillation", ICPR 2020
(arXiv:1904.09058). With sub-network logits z_i (i = 1..n), fused logits z_f = F([h_1, ..., h_n])
from their concatenated features, and the ensemble logits z_e = mean_i z_i:

    sub-networks:  sum_i (1 - alpha) * CE(z_i, y) + alpha * w(step) * T^2 * KL(softmax(z_f / T) || softmax(z_i / T))
    fusion:        (1 - alpha) * CE(z_f, y) + alpha * w(step) * T^2 * KL(softmax(z_e / T) || softmax(z_f / T))

(the fused classifier teaches each sub-network; the sub-networks' ensemble teaches the fused
classifier). Targets are constants for their learner (detached), so one backward pass of the sum
gives every part the gradient of its own loss. w(step) is the sigmoid consistency ramp-up
exp(-5 (1 - t)^2) of the authors' ``train_FFL.py`` (Jangho-Kim/FFL-pytorch; from Laine and Aila,
ICLR 2017) over the first ``rampup`` fraction of the steps: they ramp over 80 of 300 epochs
(per epoch; here per step). Their loss is CE + w * KD at T = 3: ``alpha: 0.5, temperature: 3``
here (same directions, half the scale).

Fusion module, as in the paper and the authors' ``our_network.py`` (``Fusion_module``), when
every sub-network has a last 2-D feature map (``features: auto`` or ``maps``; see
``mtkd.models.feature_maps``): the maps [B, C_i, H_i, W_i] are concatenated along channels,
then a 3x3 depthwise convolution (stride 1, padding 1, no bias) -> BatchNorm -> ReLU, a 1x1
pointwise convolution to ``fusion_hidden`` channels (default: sub-network 1's C, the authors' 2C
-> C) -> BatchNorm -> ReLU, global average pooling and a linear fused classifier. Maps of
different spatial sizes are first average-pooled to the smallest (the authors' sub-networks
share one size, 8x8). Otherwise (``features: vectors``, or a sub-network without such a map:
MLP, GRU, 1-D CNN) the fusion module works on each sub-network's penultimate vector (the input of
its final ``nn.Linear``): concatenation -> Linear -> BatchNorm -> ReLU -> Linear classifier.
Deviations (docs/methods/online.md): the sub-networks are independent networks (the authors'
share the low layers), and the run's one optimizer trains the fusion module (theirs has its own
SGD, weight decay 1e-5).

The student is sub-network 1; the other sub-networks and the fused classifier (which needs all
sub-networks at inference) are reported as rows of ``summary.json["peers"]``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from pydantic import Field
from pydantic import BaseModel
from torch import nn

from ..errors import ConfigError
from ..losses import ce_loss, kd_loss
from ..models.feature_maps import align_spatial, smallest_size
from ..models.features import head_layer
from .peers import FEATURES_HELP, FeatureForm, PeerOptions, build_peers, cohort_features, features_event, rampup
from .base import Traits


def ffl_kd_terms(sub_logits: torch.Tensor, fused_logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(KD of each sub-network from the fused classifier [n], KD of the fused classifier from the
    sub-networks' ensemble []). sub_logits [n, B, C], fused_logits [B, C]; targets detached."""
    t = temperature
    fused_target = torch.softmax(fused_logits.detach() / t, dim=-1)  # [B, C]
    kd_sub = torch.stack([kd_loss(z, fused_target, t) for z in sub_logits])  # [n]
    ensemble_target = torch.softmax(sub_logits.detach().mean(0) / t, dim=-1)  # [B, C]
    return kd_sub, kd_loss(fused_logits, ensemble_target, t)


class FusionModule(nn.Module):
    """Concatenated sub-network feature vectors [B, sum F_i] -> fused logits [B, C] (the vector form)."""

    def __init__(self, widths: Sequence[int], hidden: int, num_classes: int):
        super().__init__()
        self.fuse = nn.Sequential(nn.Linear(sum(widths), hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.fuse(torch.cat(list(features), dim=1)))


class MapFusionModule(nn.Module):
    """FFL's fusion module on feature maps (Kim et al., ICPR 2020; the authors' ``Fusion_module``):
    maps K x [B, C_i, H_i, W_i] -> (pooled to ``size``) concatenated [B, sum C_i, h, w] ->
    depthwise 3x3 conv -> BN -> ReLU -> pointwise 1x1 conv [B, hidden, h, w] -> BN -> ReLU ->
    global average [B, hidden] -> linear classifier [B, num_classes]."""

    def __init__(self, channels: Sequence[int], size: tuple[int, int], hidden: int, num_classes: int):
        super().__init__()
        total = sum(channels)
        self.size = tuple(size)
        self.depthwise = nn.Conv2d(total, total, 3, stride=1, padding=1, groups=total, bias=False)
        self.bn_depthwise = nn.BatchNorm2d(total)
        self.pointwise = nn.Conv2d(total, hidden, 1, bias=False)
        self.bn_pointwise = nn.BatchNorm2d(hidden)
        self.classifier = nn.Linear(hidden, num_classes)
        for conv in (self.depthwise, self.pointwise):  # the authors' init: N(0, 2 / (k * k * out_channels))
            k = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
            nn.init.normal_(conv.weight, 0.0, (2.0 / k) ** 0.5)

    def fused_map(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(align_spatial(maps, self.size), dim=1)  # [B, sum C_i, h, w]
        x = torch.relu(self.bn_depthwise(self.depthwise(x)))
        return torch.relu(self.bn_pointwise(self.pointwise(x)))  # [B, hidden, h, w]

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.fused_map(maps).mean(dim=(2, 3)))


class FusedClassifier(nn.Module):
    """Inference with the fused classifier: every sub-network, then the fusion module."""

    def __init__(self, subnets: Sequence[nn.Module], fusion: nn.Module, features: Sequence):
        super().__init__()
        self.subnets, self.fusion = nn.ModuleList(subnets), fusion
        self.features = list(features)  # the recipe's hooks on the sub-networks' heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.subnets:
            m(x)  # fills features[i].value: [B, F_i] or [B, C_i, H_i, W_i]
        return self.fusion([f.value for f in self.features])


class FflOptions(PeerOptions):
    fusion_hidden: int | None = Field(None, gt=0, description="channels of the fusion module's pointwise conv "
                                      "(maps; default: sub-network 1's channels) or width of its hidden layer "
                                      "(vectors; default 64)")
    features: FeatureForm = Field("auto", description=FEATURES_HELP)
    rampup: float = Field(0.27, ge=0, le=1, description="fraction of the steps over which the KD weight ramps up "
                          "(sigmoid; 80 of 300 epochs in the authors' code; 0 = no ramp-up)")


class FflRecipe(nn.Module):
    description = ("FFL: sub-networks + a fusion module with its own classifier; fused -> sub-networks "
                   "and sub-network ensemble -> fused distillation (no teacher)")
    traits = Traits(uses_unlabeled=True, online=True)
    Options = FflOptions

    def __init__(self, student: nn.Module, temperature: float = 3.0, alpha: float = 0.5, options: FflOptions | None = None,
                 seed: int = 0, peers: Sequence[nn.Module] | None = None, num_classes: int | None = None,
                 input_shape: tuple | None = None, student_config: BaseModel | None = None, steps: int = 0):
        super().__init__()
        self.events: list[dict] = []  # nothing to report per step (the Recipe protocol's field)
        self.options = o = options or FflOptions()
        self.temperature, self.alpha = temperature, alpha
        self.rampup_steps = int(round(o.rampup * steps))
        self.student = student  # sub-network 1
        if peers is not None:
            named = [(f"peer{i + 1}", m, None) for i, m in enumerate(peers)]
        else:
            named = build_peers(student, o, seed=seed, num_classes=num_classes, input_shape=input_shape,
                                student_config=student_config)
        self.peer_names = [n for n, _, _ in named]
        if "fused" in self.peer_names:
            raise ConfigError("recipe 'ffl': the peer name 'fused' is taken by the fused classifier; rename the peer")
        self.peer_configs = [c for _, _, c in named]
        self.peers = nn.ModuleList([m for _, m, _ in named])
        names = ["student", *self.peer_names]
        # h_i after each forward: maps [B, C_i, H_i, W_i] or vectors [B, F_i]; shapes: per sample
        self.form, self.features, shapes = cohort_features("ffl", names, self.subnets(), o.features, input_shape)
        self.events.append(features_event("ffl", self.form, names, shapes))
        classes = num_classes or head_layer(student).out_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1009 + 7)
            if self.form == "maps":
                self.fusion = MapFusionModule([s[0] for s in shapes], smallest_size(shapes),
                                              o.fusion_hidden or shapes[0][0], classes)
            else:
                self.fusion = FusionModule([s[0] for s in shapes], o.fusion_hidden or 64, classes)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # position on the ramp-up

    def subnets(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def extra_models(self) -> list[dict]:
        rows = [{"name": n, "role": "sub-network (ffl)", "module": m, "config": c}
                for n, m, c in zip(self.peer_names, self.peers, self.peer_configs)]
        fused = FusedClassifier(self.subnets(), self.fusion, self.features)
        on = "feature maps" if self.form == "maps" else "feature vectors"
        return rows + [{"name": "fused", "role": f"fused classifier (ffl, on {on})", "module": fused, "config": None,
                        "arch": "fusion"}]

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        sub_logits = torch.stack([m(x) for m in self.subnets()])  # [n, B, C]
        fused_logits = self.fusion([f.value for f in self.features])  # [B, C]
        kd_sub, kd_fused = ffl_kd_terms(sub_logits, fused_logits, self.temperature)
        ce_sub = torch.stack([ce_loss(z, y) for z in sub_logits])  # [n]
        ce_fused = ce_loss(fused_logits, y)
        a, w = self.alpha, rampup(int(self.steps_done), self.rampup_steps)  # w: the consistency ramp-up in [0, 1]
        self.steps_done += 1
        loss = ((1 - a) * ce_sub + a * w * kd_sub).sum() + (1 - a) * ce_fused + a * w * kd_fused
        losses = {"loss": loss, "ce": ce_sub[0], "kd": kd_sub[0], "ce/fused": ce_fused, "kd/fused": kd_fused}
        for name, c, d in zip(self.peer_names, ce_sub[1:], kd_sub[1:]):
            losses[f"ce/{name}"], losses[f"kd/{name}"] = c, d
        return losses


__all__ = ["FflOptions", "FflRecipe", "FusedClassifier", "FusionModule", "MapFusionModule", "ffl_kd_terms"]
