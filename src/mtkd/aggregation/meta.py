"""A meta-weight network: a small network that reads the teachers' (and the student's) predictions
and outputs per-sample teacher weights, trained alongside the student. Three forms:

``form: mmkd`` (default) is the procedure of MMKD's released code (Zhang, Chen and Wang,
"Adaptive Multi-Teacher Knowledge Distillation with Meta-Learning", ICME 2023, arXiv:2306.06634;
Rorozhl/MMKD ``train_meta.py`` with ``helper/meta_optimizer.py``), after L2T-ww (Jang et al.,
ICML 2019). Every ``meta_every`` steps, on the training batch (x, y) and from the student's
weights theta_0::

    theta_1 = theta_0 - lr * grad sum_k w_k(phi) KD_k(theta_0)     two KD-only virtual steps
    theta_2 = theta_1 - lr * grad sum_k w_k(phi) KD_k(theta_1)
    theta_3 = theta_2 - lr * grad CE(theta_2)                       one CE virtual step
    phi    <- Adam step on grad_phi CE(theta_3; x, y)

KD_k is T^2 KL(softmax(z_k / T) || softmax(s / T)) per sample, as their ``DistillKL(is_ca=True)``.
The virtual steps are discarded (their ``rollback``), the student then takes its real step with
the updated, detached weights. The weight network is their ``LogitsWeight``: concat(teacher
logits [K*C], student logits [C]) -> Linear(width // 2) -> ReLU -> Linear(K) -> softmax, with
PyTorch's default (random) initialisation. Deviations: the virtual steps are plain SGD at
``virtual_lr`` (theirs reuse the student's SGD optimizer, momentum and weight decay included,
at its learning rate); the meta update runs before the student's step of the same batch
(theirs after it); their optional hard-sample buffer for the outer loss (``--hard_buffer``, off
by default) and their feature-weighting branch (``beta`` 0 by default) are not implemented.

``form: bilevel`` is mtkd's earlier variant: one virtual step on (1 - alpha) CE + alpha KD, the
outer loss on a held-out labeled batch from the validation split (never the test split), and
the network below (student features added, zero-initialised last layer).

``form: joint`` is an end-to-end form (the weighting network trained jointly with the student,
no virtual step): the network is a gate, as in a mixture of experts (Jacobs et al., 1991),
trained on the labeled samples of each batch to make the weighted mixture of teacher
predictions match the label, -log sum_k w_k p_k(y), alongside the student's loss; the student
distills from the mixture with the weights detached.

Network of ``bilevel`` and ``joint`` (MMKD's LogitsWeight with the student's penultimate
features added, so the weights can depend on the input): concat(features [F], teacher logits
[K*C], student logits [C]), all detached ->
LayerNorm -> Linear(hidden) -> ReLU -> Linear(K) -> softmax over teachers. The last layer
starts at zero, so training starts from the plain mean (mtkd's choice; MMKD starts at random).
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call

from ..data.base import UNLABELED
from ..errors import ConfigError
from ..losses.kd import kd_loss_per_sample
from .base import Aggregate, AggregatorContext, Capabilities, mask_weights, mix, softened


class MetaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    form: Literal["mmkd", "bilevel", "joint"] = "mmkd"
    hidden: int | None = Field(None, gt=0, description="width of the meta-weight network (default: half its input "
                               "width for mmkd, as the authors' LogitsWeight; 64 otherwise)")
    meta_lr: float = Field(1e-3, gt=0, description="bilevel: Adam learning rate of the meta-weight network "
                           "(the joint form is trained by the student's optimizer)")
    meta_weight_decay: float = Field(1e-4, ge=0)
    meta_every: int = Field(5, gt=0, description="mmkd, bilevel: one meta update every N steps")
    virtual_lr: float = Field(0.05, gt=0, description="mmkd, bilevel: SGD step size of the virtual student steps")
    quiz_batch_size: int = Field(100, gt=0, description="bilevel: held-out labeled samples per meta update")


class MetaWeightNet(nn.Module):
    def __init__(self, feature_dim: int, num_teachers: int, num_classes: int, hidden: int | None,
                 logits_only: bool = False):
        """``logits_only``: MMKD's LogitsWeight (no features, no LayerNorm, random init, hidden = width // 2)."""
        super().__init__()
        self.logits_only = logits_only
        width = (0 if logits_only else feature_dim) + (num_teachers + 1) * num_classes
        if logits_only:
            self.net = nn.Sequential(nn.Linear(width, hidden or width // 2), nn.ReLU(),
                                     nn.Linear(hidden or width // 2, num_teachers))
        else:
            self.net = nn.Sequential(nn.LayerNorm(width, elementwise_affine=False), nn.Linear(width, hidden or 64),
                                     nn.ReLU(), nn.Linear(hidden or 64, num_teachers))
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor | None, teacher_logits: torch.Tensor, student_logits: torch.Tensor):
        """features [B, F] (unused when logits_only), teacher_logits [K, B, C], student_logits [B, C] -> [B, K]."""
        parts = [teacher_logits.transpose(0, 1).flatten(1), student_logits.detach()]
        if not self.logits_only:
            parts.insert(0, features.detach())
        return torch.softmax(self.net(torch.cat(parts, 1)), dim=-1)


def per_teacher_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(p_k || q) for every sample and teacher: [B, K]."""
    # the student's [B, C] broadcasts against the teachers' softened [K, B, C] -> [K, B]
    return kd_loss_per_sample(student_logits, softened(teacher_logits, temperature), temperature).t()


class MetaAggregator(nn.Module):
    description = "meta-weight network: per-sample weights from student features + predictions (MMKD)"
    Options = MetaOptions

    def __init__(self, ctx: AggregatorContext, options: MetaOptions | None = None):
        super().__init__()
        self.options = o = options or MetaOptions()
        # what this form needs and gives: mmkd reads logits only; mmkd and bilevel update the network
        # before the student's step (and log the outer loss); joint trains it through an extra loss term
        self.capabilities = Capabilities(needs_features=o.form != "mmkd", looks_ahead=o.form != "joint",
                                         adds_losses=o.form == "joint", logs=o.form != "joint")
        if not ctx.feature_dim and o.form != "mmkd":
            raise ConfigError("aggregator 'meta' needs the student's feature width (a student with an nn.Linear head)")
        self.net = MetaWeightNet(ctx.feature_dim or 0, ctx.num_teachers, ctx.num_classes, o.hidden,
                                 logits_only=o.form == "mmkd")
        self.val_data = ctx.val_data
        if o.form in ("mmkd", "bilevel"):
            if o.form == "bilevel" and (ctx.val_data is None or len(ctx.val_data) == 0):
                raise ConfigError("aggregator 'meta' (form: bilevel) needs a labeled validation split for its "
                                  "held-out batches: set data.val_fraction > 0 (or pass val_data to mtkd.distill)")
            # its own optimizer: the student's loss never reaches phi in this form
            self.meta_optimizer = torch.optim.Adam(self.net.parameters(), lr=o.meta_lr, weight_decay=o.meta_weight_decay)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._aux: dict[str, torch.Tensor] = {}
        self._logged: dict[str, torch.Tensor] = {}

    # -- state beyond parameters (the meta optimizer), so a resumed run continues exactly
    def get_extra_state(self):
        return {"optimizer": self.meta_optimizer.state_dict()} if self.options.form != "joint" else {}

    def set_extra_state(self, state):
        if state and self.options.form != "joint":
            self.meta_optimizer.load_state_dict(state["optimizer"])

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                student_logits: torch.Tensor | None = None, features: torch.Tensor | None = None, **_) -> Aggregate:
        if student_logits is None or (features is None and self.options.form != "mmkd"):
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

    def before_step(self, student: nn.Module, features, x: torch.Tensor, y: torch.Tensor,
                    teacher_logits: torch.Tensor, alive: torch.Tensor, temperature: float,
                    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        """Bilevel form: one meta update of phi through a virtual student step (see the module doc).

        student: the model being distilled; features: its penultimate-feature hook (``.value``
        [B, F] after a forward); teacher_logits [K, B, C] of this batch; alive [K] marks teachers
        not dropped from it; loss(student_logits, kd): the recipe's own loss, for the inner step."""
        o = self.options
        step = int(self.steps_done)
        self.steps_done += 1
        if o.form == "joint" or step % o.meta_every:
            return
        if o.form == "mmkd":
            self._mmkd_update(student, x, y, teacher_logits, alive, temperature)
            return
        params = dict(student.named_parameters())
        logits = functional_call(student, params, (x,))
        w = self.net(features.value, teacher_logits, logits)
        if not bool(alive.all()):
            w = mask_weights(w, alive)
        kd = (w * per_teacher_kd(logits, teacher_logits, temperature)).sum(1).mean()
        inner = loss(logits, kd)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        virtual = {name: p - o.virtual_lr * g for (name, p), g in zip(params.items(), grads)}
        xq, yq = self._quiz_batch(x.device)
        outer = F.cross_entropy(functional_call(student, virtual, (xq,)), yq)
        self.meta_optimizer.zero_grad(set_to_none=True)
        outer.backward(inputs=list(self.net.parameters()))
        self.meta_optimizer.step()
        self._logged = {"meta_outer": outer.detach()}

    def _mmkd_update(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor,
                     alive: torch.Tensor, temperature: float) -> None:
        """MMKD's meta update (see the module doc): two KD-only virtual steps, one CE virtual step,
        then phi moves down the gradient of the CE on the same batch after them."""
        from ..losses import ce_loss

        labeled = y != UNLABELED
        if not bool(labeled.any()):  # no label in the batch: no outer loss
            return
        lr = self.options.virtual_lr
        theta = dict(student.named_parameters())

        def virtual_step(params, loss):
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True, allow_unused=True)
            return {n: p if g is None else p - lr * g for (n, p), g in zip(params.items(), grads)}

        for _ in range(2):  # KD only: sum_k w_k(phi) KD_k, per sample, averaged over the batch
            logits = functional_call(student, theta, (x,))  # [B, C]
            w = self.net(None, teacher_logits, logits)  # [B, K], depends on phi
            if not bool(alive.all()):
                w = mask_weights(w, alive)
            theta = virtual_step(theta, (w * per_teacher_kd(logits, teacher_logits, temperature)).sum(1).mean())
        theta = virtual_step(theta, ce_loss(functional_call(student, theta, (x,)), y))  # CE only
        outer = ce_loss(functional_call(student, theta, (x,)), y)
        self.meta_optimizer.zero_grad(set_to_none=True)
        outer.backward(inputs=list(self.net.parameters()))
        self.meta_optimizer.step()
        self._logged = {"meta_outer": outer.detach()}
