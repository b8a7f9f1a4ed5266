"""A meta-weight network: a small network that reads the student's features of the input and
the teachers' (and the student's) predictions, and outputs per-sample teacher weights,
trained together with the student. Two forms:

``form: bilevel`` (default) follows the meta-learning approach of MMKD (Zhang, Chen and
Wang, "Adaptive Multi-Teacher Knowledge Distillation with Meta-Learning", ICME 2023,
arXiv:2306.06634), itself built on Meta-Weight-Net (Shu et al., NeurIPS 2019) and L2T-ww
(Jang et al., ICML 2019). Every ``meta_every`` steps:

    theta' = theta - virtual_lr * grad_theta [(1 - alpha) CE + alpha sum_k w_k(phi) KD_k](batch)
    phi   <- Adam step on grad_phi CE(student_theta'(x_quiz), y_quiz)

the weights are moved so that one virtual student step lowers the student's loss on a
held-out labeled batch (drawn from the validation split, never the test split; MMKD draws
it from a buffer of hard training samples). The virtual step is discarded; the student then
takes its real step with the updated, detached weights. One virtual step is used where
MMKD unrolls three.

``form: joint`` is an end-to-end form (the weighting network trained jointly with the student,
no virtual step): the network is a gate, as in a mixture of experts
(Jacobs et al., 1991), trained on the labeled samples of each batch to make the weighted
mixture of teacher predictions match the label, -log sum_k w_k p_k(y), alongside the
student's loss; the student distills from the mixture with the weights detached.

Network (after MMKD's LogitsWeight, with the student's penultimate features added, so the
weights can depend on the input): concat(features [F], teacher logits [K*C], student logits [C]), all detached ->
LayerNorm -> Linear(hidden) -> ReLU -> Linear(K) -> softmax over teachers. The last layer
starts at zero, so training starts from the plain mean.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call

from ..data.base import UNLABELED
from ..errors import ConfigError
from ..losses.kd import kd_loss_per_sample
from .base import Aggregate, AggregatorContext, mask_weights, mix, softened


class MetaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    form: Literal["bilevel", "joint"] = "bilevel"
    hidden: int = Field(64, gt=0, description="width of the meta-weight network")
    meta_lr: float = Field(1e-3, gt=0, description="bilevel: Adam learning rate of the meta-weight network "
                           "(the joint form is trained by the student's optimizer)")
    meta_weight_decay: float = Field(1e-4, ge=0)
    meta_every: int = Field(5, gt=0, description="bilevel: one meta update every N steps")
    virtual_lr: float = Field(0.05, gt=0, description="bilevel: SGD step size of the virtual student step")
    quiz_batch_size: int = Field(100, gt=0, description="bilevel: held-out labeled samples per meta update")


class MetaWeightNet(nn.Module):
    def __init__(self, feature_dim: int, num_teachers: int, num_classes: int, hidden: int):
        super().__init__()
        width = feature_dim + (num_teachers + 1) * num_classes
        self.net = nn.Sequential(nn.LayerNorm(width, elementwise_affine=False), nn.Linear(width, hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_teachers))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor):
        """features [B, F], teacher_logits [K, B, C], student_logits [B, C] -> weights [B, K]."""
        z = torch.cat([features.detach(), teacher_logits.transpose(0, 1).flatten(1), student_logits.detach()], 1)
        return torch.softmax(self.net(z), dim=-1)


def per_teacher_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(p_k || q) for every sample and teacher: [B, K]."""
    # the student's [B, C] broadcasts against the teachers' softened [K, B, C] -> [K, B]
    return kd_loss_per_sample(student_logits, softened(teacher_logits, temperature), temperature).t()


class MetaAggregator(nn.Module):
    description = "meta-weight network: per-sample weights from student features + predictions (MMKD)"
    Options = MetaOptions
    needs_features = True

    def __init__(self, ctx: AggregatorContext, options: MetaOptions | None = None):
        super().__init__()
        self.options = o = options or MetaOptions()
        if not ctx.feature_dim:
            raise ConfigError("aggregator 'meta' needs the student's feature width (a student with an nn.Linear head)")
        self.net = MetaWeightNet(ctx.feature_dim, ctx.num_teachers, ctx.num_classes, o.hidden)
        self.val_data = ctx.val_data
        if o.form == "bilevel":
            if ctx.val_data is None or len(ctx.val_data) == 0:
                raise ConfigError("aggregator 'meta' (form: bilevel) needs a labeled validation split for its "
                                  "held-out batches: set data.val_fraction > 0 (or pass val_data to mtkd.distill)")
            # its own optimizer: the student's loss never reaches phi in this form
            self.meta_optimizer = torch.optim.Adam(self.net.parameters(), lr=o.meta_lr, weight_decay=o.meta_weight_decay)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._aux: dict[str, torch.Tensor] = {}
        self._logged: dict[str, torch.Tensor] = {}

    # -- state beyond parameters (the meta optimizer), so a resumed run continues exactly
    def get_extra_state(self):
        return {"optimizer": self.meta_optimizer.state_dict()} if self.options.form == "bilevel" else {}

    def set_extra_state(self, state):
        if state and self.options.form == "bilevel":
            self.meta_optimizer.load_state_dict(state["optimizer"])

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                student_logits: torch.Tensor | None = None, features: torch.Tensor | None = None, **_) -> Aggregate:
        if student_logits is None or features is None:
            raise ValueError("aggregator 'meta' needs the student's logits and features")
        w = self.net(features, teacher_logits, student_logits)  # [B, K], depends on phi
        self._aux = {}
        if self.options.form == "joint" and self.training:
            labeled = labels != UNLABELED
            mixture = mix(torch.softmax(teacher_logits, dim=-1), w)  # [B, C] at T = 1
            gate = F.nll_loss(mixture[labeled].clamp_min(1e-12).log(), labels[labeled]) if labeled.any() \
                else w.sum() * 0.0
            self._aux = {"meta": gate}
        weights = w.detach()
        return Aggregate(mix(softened(teacher_logits, temperature), weights), weights)

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        return self._aux

    def logged(self) -> dict[str, torch.Tensor]:
        return self._logged

    def _quiz_batch(self, device):
        gen = torch.Generator().manual_seed(7919 + int(self.steps_done))
        rows = torch.randint(len(self.val_data), (self.options.quiz_batch_size,), generator=gen)
        return self.val_data.x[rows].to(device), self.val_data.y[rows].to(device)

    def before_step(self, recipe: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor,
                    alive: torch.Tensor) -> None:
        """Bilevel form: one meta update of phi through a virtual student step (see the module doc).
        teacher_logits [K, B, C] of this batch; alive [K] marks teachers not dropped from it."""
        o = self.options
        step = int(self.steps_done)
        self.steps_done += 1
        if o.form != "bilevel" or step % o.meta_every:
            return
        from ..losses import ce_loss

        student = recipe.student
        params = dict(student.named_parameters())
        logits = functional_call(student, params, (x,))
        w = self.net(recipe.features.value, teacher_logits, logits)
        if not bool(alive.all()):
            w = mask_weights(w, alive)
        kd = (w * per_teacher_kd(logits, teacher_logits, recipe.temperature)).sum(1).mean()
        inner = (1 - recipe.alpha) * ce_loss(logits, y) + recipe.alpha * kd
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        virtual = {name: p - o.virtual_lr * g for (name, p), g in zip(params.items(), grads)}
        xq, yq = self._quiz_batch(x.device)
        outer = F.cross_entropy(functional_call(student, virtual, (xq,)), yq)
        self.meta_optimizer.zero_grad(set_to_none=True)
        outer.backward(inputs=list(self.net.parameters()))
        self.meta_optimizer.step()
        self._logged = {"meta_outer": outer.detach()}
