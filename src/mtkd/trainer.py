"""The training loop shared by every recipe: optimizer, warm-up + cosine schedule, evaluation
every N steps, best and last checkpoints, exact resume, progress bar, ``metrics.jsonl``.

The recipe decides what one step computes (a dict of named losses); the trainer
backpropagates ``"loss"``, steps the optimizer over the recipe's parameters (the student,
plus anything learnable the recipe owns; frozen teachers are never among them), and logs
every term.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import BatchLoader, IndexedTensorDataset
from .errors import MtkdError
from .io import load_torch, save_torch
from .precision import autocast, grad_scaler
from .seeding import rng_state, set_rng_state

CHECKPOINT_FORMAT = "mtkd.train/1"


class TrainingDiverged(MtkdError):
    """A loss became NaN or infinite."""


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then cosine decay to 0 (or constant)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Accept ``(x, y)``, ``(x, y, index)`` or a dict with x/input, y/label(s), index."""
    if isinstance(batch, dict):
        x = batch.get("x", batch.get("input"))
        y = batch.get("y", batch.get("label", batch.get("labels")))
        return x, y, batch.get("index")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    raise MtkdError("a training batch must be (x, y), (x, y, index) or a dict with 'x' and 'y'; "
                    f"got {type(batch).__name__}")


def _endless(loader: Iterable, skip: int) -> Iterator:
    """Batches forever. A BatchLoader resumes from its own state; any other loader is
    fast-forwarded by ``skip`` batches (exact only if its order repeats per epoch)."""
    if isinstance(loader, BatchLoader):
        while True:
            yield from loader
    first = True
    while True:
        got_any = False
        for i, batch in enumerate(loader):
            got_any = True
            if first and i < skip:
                continue
            yield batch
        if not got_any:
            raise MtkdError("the training data loader yielded no batches")
        first = False


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu",
                   batch_size: int = 1000) -> torch.Tensor:
    """Logits [N, C] of ``model`` on inputs ``x`` [N, ...], in eval mode, batched."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def accuracy(model: nn.Module, data: IndexedTensorDataset, device: torch.device | str = "cpu") -> float:
    """Fraction of ``data`` that ``model`` classifies correctly."""
    logits = predict_logits(model, data.x, device)
    return float((logits.argmax(1) == data.y).float().mean())


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl``; on resume, drops the
    records a stage wrote after its last checkpoint so no step is logged twice."""

    def __init__(self, path: str | Path | None, trackers: list | None = None):
        self.path = Path(path) if path else None
        if self.path is not None:
            from .rundir import note_written

            note_written(self.path)  # appended to directly, so listed in the run's marker now
        self.trackers = list(trackers or [])  # mtkd.tracking: TensorBoard, MLflow; each gets every record

    def write(self, record: dict) -> None:
        from . import distributed

        if not distributed.is_main():  # one process logs: rank 0 sees the same records as the others
            return
        for tracker in self.trackers:
            tracker.log(record)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate(self, stage: str, after_step: int) -> None:
        for tracker in self.trackers:
            tracker.truncate(stage, after_step)
        if self.path is None or not self.path.exists():
            return
        from .io import write_text

        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if rec.get("stage") == stage and rec.get("step", 0) > after_step:
                continue
            kept.append(line)
        write_text(self.path, "".join(k + "\n" for k in kept))

    def read(self) -> list[dict]:
        if self.path is None or not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records


def shard(batch_size: int) -> slice | None:
    """This process's rows of a global batch under torchrun: a contiguous, near-equal share
    (None: the whole batch, outside torchrun or when the batch has fewer rows than processes)."""
    from . import distributed

    world = distributed.world_size()
    if world == 1 or batch_size < world:
        return None
    bounds = [batch_size * r // world for r in range(world + 1)]
    return slice(bounds[distributed.rank()], bounds[distributed.rank() + 1])


def average_gradients(params: list[nn.Parameter]) -> None:
    """Data-parallel gradient sync (what DDP's reducer does, in one flat all-reduce per step):
    every process ends the step with the mean of all processes' gradients. A parameter with no
    gradient on any process keeps none, so optimizers skip it exactly as in one process."""
    import torch.distributed as dist

    if not params:
        return
    # [sum of numel + len(params)]: every gradient, then one has-a-gradient flag per parameter
    flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device)
                      for p in params] + [torch.tensor([float(p.grad is not None) for p in params],
                                                       device=params[0].device)])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    flags = flat[-len(params):].tolist()
    offset = 0
    for p, flag in zip(params, flags):
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone() if flag > 0 else None
        offset += n


def broadcast_parameters(module: nn.Module) -> None:
    """Start every process from rank 0's parameters and buffers."""
    import torch.distributed as dist

    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


class Trainer:
    """Runs ``cfg.steps`` steps of ``recipe`` over ``loader``.

    recipe: an ``nn.Module`` with ``.student`` and ``step(x, y, index) -> dict`` (see mtkd.recipes).
    checkpoint: path of the resumable checkpoint; if it exists, training continues from it.
    best_path: where the student's weights with the best validation accuracy are kept.
    """

    def __init__(self, recipe: nn.Module, loader: Iterable, cfg: TrainConfig, *, stage: str = "train",
                 val_data: IndexedTensorDataset | None = None, checkpoint: str | Path | None = None,
                 best_path: str | Path | None = None, metrics: MetricsLog | None = None,
                 device: torch.device | str = "cpu", progress: bool = True, fingerprint: str = "",
                 force: bool = False, amp: str | None = None, snapshot_dir: str | Path | None = None,
                 monitor: Callable[[], dict] | None = None, monitor_every: int | None = None):
        self.recipe, self.loader, self.cfg, self.stage = recipe, loader, cfg, stage
        self.val_data = val_data
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.best_path = Path(best_path) if best_path else None
        self.metrics = metrics or MetricsLog(None)
        self.device = torch.device(device)
        self.progress = progress
        self.fingerprint = fingerprint
        self.force = force  # resume a checkpoint written under another config or code version
        # "off", "bf16" or "fp16": autocast around each step (see mtkd.precision); by default the
        # config's own (distill.amp; a teacher's train section has none and trains in fp32)
        self.amp = amp if amp is not None else getattr(cfg, "amp", "off")
        self.scaler = grad_scaler(self.device, self.amp)
        # cfg.save_every > 0: the student's weights every N steps go to snapshot_dir/step-NNNNNN.pt
        # (the training trajectory that recipe progressive follows)
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        # monitor() -> {name: value}: a look at the student (e.g. agreement with the teachers on the
        # validation split, see mtkd.monitoring), logged every monitor_every steps
        self.monitor = monitor
        self.monitor_every = monitor_every if monitor_every is not None else getattr(cfg, "monitor_every", 0)
        from . import distributed

        # one copy per torchrun process, each with its own checkpoint (codistillation)
        self.independent = distributed.world_size() > 1 and getattr(recipe, "shards_data", False)
        if self.independent and self.checkpoint is not None:  # student.pt -> student.rank1.pt
            self.checkpoint = self.checkpoint.with_name(
                f"{self.checkpoint.stem}.rank{distributed.rank()}{self.checkpoint.suffix}")
        self.optimizer = make_optimizer(recipe.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.step = 0
        self.elapsed = 0.0  # seconds spent in training steps, summed over resumes
        self.best_accuracy = -1.0
        self.last_val_accuracy: float | None = None

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "stage": self.stage, "fingerprint": self.fingerprint,
            "step": self.step, "elapsed": self.elapsed, "best_accuracy": self.best_accuracy,
            "recipe": self.recipe.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
            "loader": self.loader.state_dict() if isinstance(self.loader, BatchLoader) else None,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def save_checkpoint(self) -> None:
        if self.checkpoint is not None:
            save_torch(self.checkpoint, self._state(), every_rank=self.independent)

    def resume(self) -> bool:
        """Load the checkpoint if there is one; True if training continues from it."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        try:
            state = load_torch(self.checkpoint)
        except Exception as exc:  # truncated or foreign file: refuse rather than guess
            raise MtkdError(f"checkpoint {self.checkpoint} is damaged or truncated and cannot be read "
                            f"({type(exc).__name__}: {exc}); delete it or use --restart") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise MtkdError(f"{self.checkpoint} is not an mtkd training checkpoint; delete it or use --restart")
        if state.get("fingerprint") != self.fingerprint and not self.force:
            raise MtkdError(f"checkpoint {self.checkpoint} was written by a different configuration or mtkd "
                            "version; use --restart to start over, or --force to continue from it anyway")
        self.recipe.load_state_dict(state["recipe"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        if state["loader"] is not None and isinstance(self.loader, BatchLoader):
            self.loader.load_state_dict(state["loader"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.elapsed, self.best_accuracy = state["step"], state["elapsed"], state["best_accuracy"]
        self.metrics.truncate(self.stage, self.step)
        return True

    # ------------------------------------------------------------ loop
    def _evaluate(self) -> None:
        if self.val_data is None:
            return
        acc = accuracy(self.recipe.student, self.val_data, self.device)
        self.last_val_accuracy = acc
        self.metrics.write({"stage": self.stage, "step": self.step, "val_accuracy": acc})
        if acc > self.best_accuracy:
            self.best_accuracy = acc
            if self.best_path is not None:
                save_torch(self.best_path, {k: v.detach().cpu() for k, v in self.recipe.student.state_dict().items()})

    def fit(self) -> "Trainer":
        from . import distributed

        cfg = self.cfg
        self.recipe.to(self.device)
        self.resume()
        if self.step >= cfg.steps:
            return self
        # torchrun: each process trains on its share of every batch (data parallel), unless the
        # recipe trains an independent copy per process on its own shard (codistillation)
        parallel = distributed.world_size() > 1 and not self.independent
        if parallel:
            broadcast_parameters(self.recipe)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
        batches = _endless(self.loader, self.step if not isinstance(self.loader, BatchLoader) else 0)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.stage,
                   disable=None if self.progress and distributed.is_main() else True,
                   dynamic_ncols=True, leave=False)
        self.recipe.train()
        try:
            while self.step < cfg.steps:
                started = time.perf_counter()
                x, y, index = unpack_batch(next(batches))
                rows = shard(len(x)) if parallel else None
                if rows is not None:
                    x, y, index = x[rows], y[rows], index[rows] if index is not None else None
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                with autocast(self.device, self.amp):
                    losses = self.recipe.step(x, y, index)
                events = getattr(self.recipe, "events", [])  # e.g. a teacher dropped from this batch
                for event in events:
                    self.metrics.write({"stage": self.stage, "step": self.step + 1, **event})
                events.clear()
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    terms = {k: round(float(v.detach()), 6) for k, v in losses.items()}
                    last = self.checkpoint if self.checkpoint and self.checkpoint.exists() else "none written yet"
                    raise TrainingDiverged(f"{self.stage}: loss became {float(loss.detach())} at step {self.step + 1} "
                                           f"(terms {terms}); last good checkpoint: {last}")
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:  # fp16: scale the loss so small gradients do not underflow
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
                if parallel:
                    average_gradients(params)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)  # skipped when a gradient overflowed (on any process)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self.elapsed += time.perf_counter() - started
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = {"stage": self.stage, "step": self.step, "lr": self.scheduler.get_last_lr()[0]}
                    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])  # [terms]
                    if parallel:  # log the mean over every process's share of the batch
                        import torch.distributed as dist

                        dist.all_reduce(values)
                        values /= distributed.world_size()
                    record.update(zip(losses, values.tolist()))
                    self.metrics.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    self._evaluate()
                    self.recipe.train()
                if self.monitor is not None and self.monitor_every and self.step % self.monitor_every == 0:
                    self.metrics.write({"stage": self.stage, "step": self.step, **self.monitor()})
                    self.recipe.train()
                if self.snapshot_dir is not None and cfg.save_every and self.step % cfg.save_every == 0:
                    save_torch(self.snapshot_dir / f"step-{self.step:06d}.pt",
                               {k: v.detach().cpu() for k, v in self.recipe.student.state_dict().items()})
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        return self
