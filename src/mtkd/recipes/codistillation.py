"""Codistillation: copies of one model trained in parallel, each on its own data shard, each
distilling from stale copies of the others that are exchanged every N steps.

Anil, Pereyra, Passos, Ormandi, Dahl and Hinton, "Large scale distributed neural network
training through online distillation", ICLR 2018 (arXiv:1804.03235), Algorithm 1. Copy i,
after ``burn_in`` steps of ordinary training, minimizes on its shard D_i

    L_i = (1 - alpha) * CE(z_i, y) + alpha * T^2 * KL( mean_{j != i} softmax(z~_j / T) || softmax(z_i / T) )

where z~_j are the predictions of copy j's parameters as they were at the last exchange
(stale: every ``exchange_every`` steps each copy sends its weights to the others, which keep
predicting with them until the next exchange). The paper's loss is CE plus the distillation
term at T = 1: ``temperature: 1, alpha: 0.5`` here (same directions, half the scale).

The burn-in is on by default, as in Algorithm 1 ("n_burn_in" steps of ordinary training, so the
copies' predictions are worth distilling from before they are used): ``burn_in_fraction``
(10 %) of the run's steps, or ``burn_in`` steps when given (0 turns it off). The paper leaves
the length problem-specific; 10 % is mtkd's choice.

Run it with ``torchrun`` (gloo on CPU, NCCL on GPU): one copy per process, process r trains on
shard r (the samples whose index % world_size == r), and an exchange is an all_gather of the
copies' flattened weights; only rank 0 writes the run directory, its copy is the student and
the others (as of the last exchange, which happens once more at the end) are reported as
peers. Launched without torchrun, the ``copies`` copies live in one process and each step's
batch is split among them by the same rule, so the shards are the same but each copy sees
``batch_size / copies`` samples per step.

Copies start from different random initializations (copy r from the run's seed and r).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .. import distributed
from ..errors import MtkdError
from ..losses import ce_loss, kd_loss
from .peers import fresh_copy
from .base import Traits


class CodistillationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    exchange_every: int = Field(50, gt=0, description="steps between exchanges of the copies' weights")
    burn_in: int | None = Field(None, ge=0, description="steps of CE alone before distillation starts "
                                "(Algorithm 1's burn-in); default: burn_in_fraction of the steps")
    burn_in_fraction: float = Field(0.1, ge=0, lt=1, description="burn-in as a fraction of the run's steps, "
                                    "when burn_in is not given")
    copies: int = Field(2, ge=2, description="copies in one process when not launched by torchrun "
                                             "(under torchrun: one per process)")


def flat_state(model: nn.Module) -> torch.Tensor:
    """Every parameter and floating-point buffer of ``model``, flattened into one vector [P]."""
    tensors = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
    return torch.cat([t.reshape(-1) for t in tensors])


@torch.no_grad()
def load_flat_state(model: nn.Module, vector: torch.Tensor) -> None:
    """Inverse of :func:`flat_state`: copy ``vector`` [P] into ``model``'s parameters and buffers."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(vector[offset:offset + n].view_as(t))
        offset += n


def codistillation_target(stale_logits: torch.Tensor, own: int, temperature: float) -> torch.Tensor:
    """Soft target of copy ``own``: the mean over the other copies j of softmax(z~_j / T).

    stale_logits [N, B, C] (the copies' stale predictions on copy ``own``'s samples) -> [B, C].
    """
    others = [j for j in range(stale_logits.shape[0]) if j != own]
    return torch.softmax(stale_logits[others] / temperature, dim=-1).mean(0)


class CodistillationRecipe(nn.Module):
    description = ("Codistillation: copies on data shards distil from stale copies of each other "
                   "(torchrun: one copy per process)")
    traits = Traits(uses_unlabeled=True, shards_data=True, online=True, finishes=True)
    Options = CodistillationOptions

    def __init__(self, student: nn.Module, temperature: float = 1.0, alpha: float = 0.5, options: CodistillationOptions | None = None,
                 seed: int = 0, student_config: BaseModel | None = None,
                 steps: int = 0):
        super().__init__()
        self.events: list[dict] = []  # nothing to report per step (the Recipe protocol's field)
        self.options = o = options or CodistillationOptions()
        # steps of CE alone before the distillation term starts (Algorithm 1's burn-in)
        self.burn_in = o.burn_in if o.burn_in is not None else int(o.burn_in_fraction * steps)
        self.temperature, self.alpha = temperature, alpha
        self.dist = distributed.world_size() > 1
        self.rank = distributed.rank() if self.dist else 0
        n = distributed.world_size() if self.dist else o.copies
        self.num_copies = n
        self.student_config = student_config  # the copies' model config, to save them as model files
        if self.rank > 0:  # every process built the same student from the run's seed: re-draw this copy
            student.load_state_dict(fresh_copy(student, seed * 7919 + self.rank).state_dict())
        self.student = student
        # in one process, copies 1..n-1 train here too; under torchrun they live in the other processes
        self.live = nn.ModuleList([] if self.dist else [fresh_copy(student, seed * 7919 + r) for r in range(1, n)])
        # stale[j]: copy j's weights at the last exchange (stale[own] is kept but never read)
        self.stale = nn.ModuleList([fresh_copy(student, 0) for _ in range(n)])
        for p in self.stale.parameters():
            p.requires_grad_(False)  # never trained: the trainer's optimizer skips them
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._checked = False

    def copies(self) -> list[nn.Module]:
        """The copies this process trains (one under torchrun, all of them otherwise)."""
        return [self.student, *self.live]

    # ---------------------------------------------------------------- the exchange
    def exchange(self) -> list[torch.Tensor]:
        """Every copy's current weights into ``stale``; returns them, [N] vectors of length P."""
        if self.dist:
            mine = flat_state(self.student).contiguous()
            gathered = [torch.empty_like(mine) for _ in range(self.num_copies)]
            dist.all_gather(gathered, mine)  # copy j's weights from process j
        else:
            gathered = [flat_state(m).clone() for m in self.copies()]
        for stale, vector in zip(self.stale, gathered):
            load_flat_state(stale, vector)
        return gathered

    def finish(self) -> None:
        """After the last step: one more exchange, so the reported copies are the final ones."""
        self.exchange()

    def extra_models(self) -> list[dict]:
        models = self.live if not self.dist else [m for j, m in enumerate(self.stale) if j != self.rank]
        return [{"name": f"copy{j + 2}", "role": "copy (codistillation)", "module": m, "config": self.student_config,
                 "arch": type(self.student).__name__} for j, m in enumerate(models)]

    def _check_in_step(self) -> None:
        """Under torchrun, every process must resume from the same step, or the exchanges would not meet."""
        if not self.dist or self._checked:
            return
        steps = [torch.zeros_like(self.steps_done) for _ in range(self.num_copies)]
        dist.all_gather(steps, self.steps_done.clone())
        if len({int(s) for s in steps}) > 1:
            raise MtkdError(f"codistillation: the processes resumed from different steps {[int(s) for s in steps]} "
                            "(a checkpoint write was cut short on some of them); use --restart")
        self._checked = True

    # ---------------------------------------------------------------- one step
    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self._check_in_step()
        o, step = self.options, int(self.steps_done)
        if step % o.exchange_every == 0:
            self.exchange()
        self.steps_done += 1
        distilling = step >= self.burn_in
        if self.dist:  # this process's copy, on this process's shard (the pipeline shards the data)
            parts = [(self.rank, self.student, x, y)]
        else:  # copy r takes the samples of its shard: index % copies == r
            key = index.to(x.device) if index is not None else torch.arange(len(x), device=x.device)
            parts = [(r, m, x[key % self.num_copies == r], y[key % self.num_copies == r])
                     for r, m in enumerate(self.copies())]
        total, logged = 0.0, {}
        for r, model, xr, yr in parts:
            logits = model(xr)  # [B_r, C]
            ce = ce_loss(logits, yr)
            if distilling and len(xr):
                self.stale.eval()  # predictions only: no dropout, no batch-norm statistics updates
                with torch.no_grad():
                    stale_logits = torch.stack([m(xr) for m in self.stale])  # [N, B_r, C]
                target = codistillation_target(stale_logits, r, self.temperature)
                kd = kd_loss(logits, target, self.temperature)
                loss = (1 - self.alpha) * ce + self.alpha * kd
            else:  # burn-in: ordinary training
                kd = logits.sum() * 0.0
                loss = ce
            total = total + loss
            suffix = "" if r == self.rank else f"/copy{r + 1}"
            logged[f"ce{suffix}"], logged[f"kd{suffix}"] = ce, kd
        return {"loss": total, **logged}


__all__ = ["CodistillationOptions", "CodistillationRecipe", "codistillation_target", "flat_state", "load_flat_state"]
