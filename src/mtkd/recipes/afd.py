"""Online adversarial feature-map distillation (AFD): peers learn from each other's logits, as
in mutual learning, and each peer has a discriminator that tells its feature map apart from a
peer's; the peer is trained to fool it, so the feature-map distributions grow alike.

Chung, Park, Kim and Kwak, "Feature-map-level Online Adversarial Knowledge Distillation",
ICML 2020 (arXiv:2002.01775). With K peers, features F_k and discriminators D_k (peer k's
features are "fake", those of peer k+1 mod K "real", the paper's cyclic arrangement for more
than two networks), least-squares GAN losses:

    discriminators:  sum_k [ (1 - D_k(F_{k+1}))^2 + D_k(T_k(F_k))^2 ]     (own optimizer step, first)
    peers:           sum_k (1 - alpha) * CE(z_k, y) + alpha * KD_k + adv_weight * (1 - D_k(T_k(F_k)))^2

(T_k: the transfer layer from peer k's features to peer k+1's shape, the identity when they
agree; squares are averaged over the batch.)

KD_k is Deep Mutual Learning's term (T^2 / (K-1) * sum_{l != k} KL(p_l || p_k), see ``mutual``).
Each step first updates the discriminators on detached features with their own Adam optimizer
(learning rate ``disc_lr``, kept inside the recipe and saved with it, so a resumed run continues
exactly), then returns the peers' loss with the discriminators frozen, so the trainer's step
never moves them.

Features, as in the paper, when every peer has a last 2-D feature map (``features: auto`` or
``maps``; see ``mtkd.models.feature_maps``): F_k [B, C_k, H_k, W_k], and each discriminator is a
small conv net, :func:`map_discriminator` (3x3 conv with stride 2 -> BatchNorm -> LeakyReLU(0.2)
-> 1x1 conv to one channel -> global average: one score per sample). When peer k's map differs
from peer k+1's in channels, a transfer layer (1x1 conv -> BatchNorm, trained with peer k by the
adversarial term) maps it to peer k+1's channels (the paper inserts a transfer layer between
networks of different architectures); maps of different spatial sizes are average-pooled to the
smaller of the two. D_k works in peer k+1's shape. Otherwise (``features: vectors``, or a peer
without such a map: MLP, GRU, 1-D CNN) the features are each peer's penultimate vector (the input
of its final ``nn.Linear``), a discriminator is an MLP (Linear -> LeakyReLU -> Linear to one
score) and the transfer layer, where widths differ, a Linear layer.

Deviations: the authors published no code; the discriminator's kernel sizes and width
(``disc_hidden``) and the transfer layer's form are ours. The adversarial term is weighted by
``adv_weight`` (the paper adds it unweighted); on unnormalized pooled vectors a weight of 1
stopped a small 1-D CNN from learning on MNIST-1D (18 % test accuracy after 1,000 steps, against
57 % with weight 0), so the default is 0.1 in both forms.
"""
from __future__ import annotations

from typing import Sequence

import torch
from pydantic import Field
from pydantic import BaseModel
from torch import nn

from ..losses import ce_loss
from ..models.feature_maps import align_spatial, smallest_size
from .mutual import mutual_kd
from .peers import FEATURES_HELP, FeatureForm, PeerOptions, build_peers, cohort_features, features_event
from .base import Traits


def lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss of a discriminator: mean (1 - D(real))^2 + mean D(fake)^2."""
    return ((1.0 - d_real) ** 2).mean() + (d_fake ** 2).mean()


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss of the network whose features are judged: mean (1 - D(fake))^2."""
    return ((1.0 - d_fake) ** 2).mean()


def discriminator(width: int, hidden: int) -> nn.Module:
    """Features [B, F] -> one realness score per sample [B, 1] (no sigmoid: least-squares GAN)."""
    return nn.Sequential(nn.Linear(width, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


def map_discriminator(channels: int, hidden: int) -> nn.Module:
    """Feature map [B, C, H, W] -> one realness score per sample [B, 1]: 3x3 conv, stride 2
    [B, hidden, ceil(H/2), ceil(W/2)] -> BN -> LeakyReLU(0.2) -> 1x1 conv [B, 1, ., .] -> mean over
    positions (no sigmoid: least-squares GAN)."""
    return nn.Sequential(nn.Conv2d(channels, hidden, 3, stride=2, padding=1), nn.BatchNorm2d(hidden),
                         nn.LeakyReLU(0.2), nn.Conv2d(hidden, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def transfer_layer(shape: tuple, target: tuple) -> nn.Module:
    """Peer k's features (per-sample ``shape``: (C, H, W) or (F,)) -> peer k+1's channels / width
    ``target[0]``: identity when they agree, else a 1x1 conv -> BN (maps) or a Linear (vectors).
    Spatial sizes are aligned separately (pooling to the smaller)."""
    if shape[0] == target[0]:
        return nn.Identity()
    if len(shape) == 3:
        return nn.Sequential(nn.Conv2d(shape[0], target[0], 1, bias=False), nn.BatchNorm2d(target[0]))
    return nn.Linear(shape[0], target[0])


class AfdOptions(PeerOptions):
    adv_weight: float = Field(0.1, ge=0, description="weight of the adversarial (fool the discriminator) term")
    disc_hidden: int = Field(64, gt=0, description="hidden width of each discriminator")
    disc_lr: float = Field(1e-3, gt=0, description="learning rate of the discriminators' Adam optimizer")
    features: FeatureForm = Field("auto", description=FEATURES_HELP)


class AfdRecipe(nn.Module):
    description = ("AFD: mutual learning plus per-peer discriminators on feature maps, "
                   "trained adversarially (no teacher)")
    traits = Traits(uses_unlabeled=True, online=True)
    Options = AfdOptions

    def __init__(self, student: nn.Module, temperature: float = 3.0, alpha: float = 0.5, options: AfdOptions | None = None,
                 seed: int = 0, peers: Sequence[nn.Module] | None = None,
                 input_shape: tuple | None = None, num_classes: int | None = None,
                 student_config: BaseModel | None = None):
        super().__init__()
        self.events: list[dict] = []  # nothing to report per step (the Recipe protocol's field)
        self.options = o = options or AfdOptions()
        self.temperature, self.alpha = temperature, alpha
        self.student = student
        if peers is not None:
            named = [(f"peer{i + 1}", m, None) for i, m in enumerate(peers)]
        else:
            named = build_peers(student, o, seed=seed, input_shape=input_shape, num_classes=num_classes,
                                student_config=student_config)
        self.peer_names = [n for n, _, _ in named]
        self.peer_configs = [c for _, _, c in named]
        self.peers = nn.ModuleList([m for _, m, _ in named])
        names = ["student", *self.peer_names]
        # F_k after each forward: maps [B, C_k, H_k, W_k] or vectors [B, F_k]; shapes: per sample
        self.form, self.features, shapes = cohort_features("afd", names, self.cohort(), o.features, input_shape)
        self.events.append(features_event("afd", self.form, names, shapes))
        k = len(shapes)
        real = [shapes[(i + 1) % k] for i in range(k)]  # D_i judges in peer i+1's shape
        # where peer i's and peer i+1's maps meet: the smaller height and width of the two
        self.sizes = [smallest_size([shapes[i], real[i]]) if self.form == "maps" else None for i in range(k)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1009 + 13)
            make = map_discriminator if self.form == "maps" else discriminator
            self.discriminators = nn.ModuleList([make(r[0], o.disc_hidden) for r in real])
            torch.manual_seed(seed * 1009 + 17)
            self.transfers = nn.ModuleList([transfer_layer(s, r) for s, r in zip(shapes, real)])
        # the discriminators' own optimizer; the trainer's never moves them (see step)
        self.disc_optimizer = torch.optim.Adam(self.discriminators.parameters(), lr=o.disc_lr, betas=(0.5, 0.999))

    # -- state beyond parameters (the discriminators' optimizer), so a resumed run continues exactly
    def get_extra_state(self):
        return {"disc_optimizer": self.disc_optimizer.state_dict()}

    def set_extra_state(self, state):
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])

    def cohort(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def extra_models(self) -> list[dict]:
        on = "feature maps" if self.form == "maps" else "feature vectors"
        return [{"name": n, "role": f"peer (afd, on {on})", "module": m, "config": c}
                for n, m, c in zip(self.peer_names, self.peers, self.peer_configs)]

    def judged(self, i: int, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, fake) inputs of discriminator i: peer i+1's features and peer i's through its
        transfer layer, maps pooled to the smaller spatial size of the two."""
        real, fake = feats[(i + 1) % len(feats)], self.transfers[i](feats[i])
        if self.sizes[i] is not None:
            real, fake = align_spatial([real, fake], self.sizes[i])
        return real, fake

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        k = len(self.features)
        logits = torch.stack([m(x) for m in self.cohort()])  # [K, B, C]
        feats = [f.value for f in self.features]  # K x [B, F_k] or K x [B, C_k, H_k, W_k]
        pairs = [self.judged(i, feats) for i in range(k)]  # (real, fake) in the shape D_i works in

        # 1. discriminators: D_k tells peer k+1's features (real) from peer k's (fake)
        d_loss = sum(lsgan_discriminator_loss(d(real.detach()), d(fake.detach()))
                     for d, (real, fake) in zip(self.discriminators, pairs))
        self.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.disc_optimizer.step()
        self.disc_optimizer.zero_grad(set_to_none=True)  # so no stale gradient reaches the trainer's step

        # 2. peers: fool their (now frozen) discriminator; the graph keeps no discriminator leaf
        self.discriminators.requires_grad_(False)
        try:
            adv = torch.stack([lsgan_generator_loss(d(fake))
                               for d, (_, fake) in zip(self.discriminators, pairs)])  # [K]
        finally:
            self.discriminators.requires_grad_(True)
        kd = mutual_kd(logits, self.temperature)  # [K]
        ce = torch.stack([ce_loss(z, y) for z in logits])  # [K]
        per_peer = (1 - self.alpha) * ce + self.alpha * kd + self.options.adv_weight * adv
        losses = {"loss": per_peer.sum(), "ce": ce[0], "kd": kd[0], "adv": adv[0], "disc": d_loss.detach()}
        for name, c, d, a in zip(self.peer_names, ce[1:], kd[1:], adv[1:]):
            losses[f"ce/{name}"], losses[f"kd/{name}"], losses[f"adv/{name}"] = c, d, a
        return losses


__all__ = ["AfdOptions", "AfdRecipe", "lsgan_discriminator_loss", "lsgan_generator_loss", "map_discriminator",
           "transfer_layer"]
