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

from . import distributed
from .options import TrainConfig
from .data import BatchLoader, IndexedTensorDataset
from .errors import MtkdError
from .io import load_torch, save_torch
from .compiling import channels_last_batch, slow_down, speed_up
from .parallel import FullyShardedStudent, data_parallel, split_loader
from .precision import autocast, grad_scaler
from .seeding import rng_state, set_rng_state
from .io import write_text

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
    fast-forwarded by ``skip`` batches (exact only if its order repeats per epoch). A
    ``DistributedSampler`` is told each pass's epoch, so every pass is a new shuffle."""
    if isinstance(loader, BatchLoader):
        while True:
            yield from loader
    from .parallel import distributed_sampler

    sampler = distributed_sampler(loader)
    first, epoch = True, 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        epoch += 1
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
        # one copy per torchrun process, each with its own checkpoint (codistillation)
        self.independent = distributed.world_size() > 1 and recipe.traits.shards_data
        if self.independent and self.checkpoint is not None:  # student.pt -> student.rank1.pt
            self.checkpoint = self.checkpoint.with_name(
                f"{self.checkpoint.stem}.rank{distributed.rank()}{self.checkpoint.suffix}")
        self.optimizer = make_optimizer(recipe.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.step = 0
        self.elapsed = 0.0  # seconds spent in training steps, summed over resumes
        self.best_accuracy = -1.0
        self.last_val_accuracy: float | None = None
        # None: read the loss's finiteness every step on one CPU process, else at host reads (see fit)
        self.check_every_step: bool | None = None
        self.fsdp: FullyShardedStudent | None = None  # while fit() trains a sharded student
        self._pending_shards: Path | None = None  # a sharded checkpoint's directory, loaded once fit() has sharded

    # ------------------------------------------------------------ checkpoints
    def _state(self, weights: bool = True) -> dict:
        """The checkpoint; ``weights=False``: without the recipe's and optimizer's state (sharded checkpoints
        keep those in their own directory)."""
        if weights:
            recipe = self.fsdp.model_state() if self.fsdp else self.recipe.state_dict()
            optimizer = self.fsdp.optimizer_state(self.optimizer) if self.fsdp else self.optimizer.state_dict()
        else:
            recipe = optimizer = None
        return {
            "format": CHECKPOINT_FORMAT, "stage": self.stage, "fingerprint": self.fingerprint,
            "step": self.step, "elapsed": self.elapsed, "best_accuracy": self.best_accuracy,
            "recipe": recipe, "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
            "loader": self.loader.state_dict() if isinstance(self.loader, BatchLoader) else None,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def save_checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        if self.fsdp is not None and getattr(self.cfg, "sharded_checkpoints", False):
            self._save_sharded()
            return
        save_torch(self.checkpoint, self._state(), every_rank=self.independent)

    def drop_checkpoint(self) -> None:
        """Delete the finished stage's checkpoint (and its shard directory, if sharded)."""
        if self.checkpoint is None:
            return
        self.checkpoint.unlink(missing_ok=True)
        if distributed.is_main() and self._shards_root().is_dir():
            import shutil

            shutil.rmtree(self._shards_root(), ignore_errors=True)

    def _shards_root(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name + ".shards")  # student.pt -> student.pt.shards/

    def _save_sharded(self) -> None:
        """FSDP2 without a gather: every process writes its shards (torch.distributed.checkpoint) into
        ``<checkpoint>.shards/step-N``, built under a temporary name and renamed when complete; then the
        checkpoint file (everything but the weights and optimizer state, which it names the directory of)
        replaces the previous one, and older step directories go. A kill at any point leaves the last
        complete checkpoint in place."""
        import shutil

        from .parallel import save_shards
        from .rundir import note_written

        root = self._shards_root()
        final, tmp = root / f"step-{self.step:06d}", root / f".step-{self.step:06d}.tmp"
        if distributed.is_main():
            note_written(root)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.barrier()
        save_shards(tmp, self.recipe, self.optimizer)  # a collective: every process writes its own part
        distributed.barrier()
        if distributed.is_main():
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            state = self._state(weights=False)
            save_torch(self.checkpoint, {**state, "shards": final.name})
            for old in root.iterdir():
                if old.name != final.name:
                    shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()

    def resume(self) -> bool:
        """Load the checkpoint if there is one; True if training continues from it."""
        if self.checkpoint is None:
            return False
        if not self.checkpoint.exists():
            # a run stopped before this stage's first checkpoint starts the stage over: drop the
            # records it logged, or metrics.jsonl would hold those steps twice
            if any(r.get("stage") == self.stage for r in self.metrics.read()):
                self.metrics.truncate(self.stage, 0)
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
        if state.get("shards"):  # a sharded checkpoint: weights and optimizer load once the student is (or is not) sharded
            self._pending_shards = self._shards_root() / state["shards"]
            if not self._pending_shards.is_dir():
                raise MtkdError(f"checkpoint {self.checkpoint} names the shard directory {self._pending_shards}, "
                                "which is missing; restore it, delete the checkpoint or use --restart")
        else:
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
    def _reads_host(self, step: int) -> bool:
        """Whether the trainer reads values on the host after ``step`` (logs, evaluates, saves)."""
        cfg = self.cfg
        return (step == cfg.steps or step % cfg.log_every == 0 or step % cfg.eval_every == 0
                or step % cfg.checkpoint_every == 0 or bool(cfg.save_every and step % cfg.save_every == 0)
                or bool(self.monitor is not None and self.monitor_every and step % self.monitor_every == 0))

    def _diverged(self, losses: dict[str, torch.Tensor], what: str) -> None:
        terms = {k: round(float(v.detach()), 6) for k, v in losses.items()}
        last = self.checkpoint if self.checkpoint and self.checkpoint.exists() else "none written yet"
        raise TrainingDiverged(f"{self.stage}: loss became {what} (terms {terms}); last good checkpoint: {last}")

    def _evaluate(self) -> None:
        if self.val_data is None:
            return
        acc = accuracy(self.recipe.student, self.val_data, self.device)
        self.last_val_accuracy = acc
        self.metrics.write({"stage": self.stage, "step": self.step, "val_accuracy": acc})
        if acc > self.best_accuracy:
            self.best_accuracy = acc
            if self.best_path is not None:
                save_torch(self.best_path, self._student_state())

    def fit(self) -> "Trainer":
        cfg = self.cfg
        self.recipe.to(self.device)
        self.resume()
        if self.step >= cfg.steps:
            return self
        # torchrun: each process trains on its share of every batch (data parallel, torch's
        # DistributedDataParallel), unless the recipe trains an independent copy per process on its
        # own shard (codistillation: no gradient averaging)
        parallel = distributed.world_size() > 1 and not self.independent
        cut = split_loader(self.loader, parallel)  # True: this loader gives every process whole batches
        step_fn = self.recipe.step
        if parallel and getattr(cfg, "parallel", "ddp") == "fsdp":
            self._shard(cfg)
        elif parallel:
            step_fn = data_parallel(self.recipe, self.device, sync_batchnorm=getattr(cfg, "sync_batchnorm", False))
        if self._pending_shards is not None:  # into the sharded student, or into the plain one (DCP reshards)
            from .parallel import load_shards

            load_shards(self._pending_shards, self.recipe, self.optimizer)
            self._pending_shards = None
        channels_last = getattr(cfg, "channels_last", False)  # distill.compile / channels_last (mtkd.compiling)
        speed_up(self.recipe.student, getattr(cfg, "compile", False), channels_last, self.device)
        # finiteness of the loss: read on the host every step on one CPU process (free there, and the
        # error names the exact step); otherwise kept on the device and read at the next step that
        # logs, evaluates or saves (a host read is a device sync on a GPU), and agreed by all processes
        every_step = self.device.type == "cpu" and not parallel if self.check_every_step is None \
            else self.check_every_step
        bad = torch.zeros((), dtype=torch.bool, device=self.device)  # a non-finite loss since the last read
        checked = self.step  # the last step known to be finite
        batches = _endless(self.loader, self.step if not isinstance(self.loader, BatchLoader) else 0)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.stage,
                   disable=None if self.progress and distributed.is_main() else True,
                   dynamic_ncols=True, leave=False)
        self.recipe.train()
        try:
            while self.step < cfg.steps:
                started = time.perf_counter()
                x, y, index = unpack_batch(next(batches))
                rows = distributed.batch_rows(len(x)) if cut else None
                if rows is not None:
                    x, y, index = x[rows], y[rows], index[rows] if index is not None else None
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if channels_last:
                    x = channels_last_batch(x)
                with autocast(self.device, self.amp):
                    losses = step_fn(x, y, index)
                events = self.recipe.events  # e.g. a teacher dropped from this batch
                for event in events:
                    self.metrics.write({"stage": self.stage, "step": self.step + 1, **event})
                events.clear()
                loss = losses["loss"]
                if every_step:
                    if not torch.isfinite(loss):
                        self._diverged(losses, f"{float(loss.detach())} at step {self.step + 1}")
                else:
                    bad |= ~torch.isfinite(loss.detach())
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:  # fp16: scale the loss so small gradients do not underflow
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()  # under DDP: gradients averaged over processes, bucket by bucket
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)  # skipped when a gradient overflowed (on any process)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                self.elapsed += time.perf_counter() - started
                bar.update(1)
                if not every_step and self._reads_host(self.step):
                    if parallel:
                        import torch.distributed as dist

                        flag = bad.to(torch.int32)
                        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                        bad = flag.bool()
                    if bool(bad):
                        self._diverged(losses, f"non-finite between step {checked + 1} and step {self.step} "
                                               "(checked on the device, read when the trainer logs or saves)")
                    checked = self.step
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = {"stage": self.stage, "step": self.step, "lr": self.scheduler.get_last_lr()[0]}
                    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])  # [terms]
                    if parallel:  # log the mean over every process's share of the batch
                        values = distributed.mean_over_ranks(values)
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
                    save_torch(self.snapshot_dir / f"step-{self.step:06d}.pt", self._student_state())
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            slow_down(self.recipe.student)
        if self.fsdp is not None:  # the caller's student module, trained, whole, on every process
            self.fsdp.finish()
            self.fsdp = None
        return self

    def _shard(self, cfg: TrainConfig) -> None:
        """FSDP2: shard the student and rebuild the optimizer and schedule over the shards, keeping
        their (possibly resumed) state."""
        if self.monitor is not None or getattr(cfg, "monitor_every", 0):
            raise MtkdError("distill.parallel: 'fsdp' runs the student on every process together; "
                            "distill.monitor_every (rank 0 alone) cannot be used with it; set it to 0")
        self.fsdp = FullyShardedStudent(self.recipe, self.device, self.amp)
        optimizer_state, scheduler_state = self.optimizer.state_dict(), self.scheduler.state_dict()
        self.optimizer = make_optimizer(self.recipe.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        if optimizer_state["state"]:  # resumed (a fresh optimizer has no state to carry over)
            self.fsdp.load_optimizer_state(self.optimizer, optimizer_state)
        self.scheduler.load_state_dict(scheduler_state)

    def _student_state(self) -> dict:
        """The student's weights on the CPU, whole (gathered from the shards under FSDP)."""
        if self.fsdp is not None:
            return {k.removeprefix("student."): v.detach().cpu() for k, v in self.fsdp.model_state().items()
                    if k.startswith("student.")}
        return {k: v.detach().cpu() for k, v in self.recipe.student.state_dict().items()}
