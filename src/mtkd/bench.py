"""``mtkd bench``: what distillation costs, measured in one process and reported as ratios.

Settings (every one trains the same student with the same batches, batch size and steps):
- ``student_only``: the student alone (recipe ``scratch``) through the library's Trainer;
- ``hand_loop`` (K teachers): a minimal plain-PyTorch loop doing the same math as ``offline``
  with the ``mean`` aggregator: no-grad teacher forwards, mean of softened probabilities,
  (1 - alpha) CE on labeled samples + alpha T^2 KL, Adam, the same cosine schedule;
- ``live`` (K teachers): the library's ``offline`` recipe with FrozenTeachers, through the Trainer;
- ``turns`` (K teachers): ``live`` with the teachers kept in CPU memory and moved onto the device one
  at a time per batch (``distill.teachers_on_device: 1``; on the CPU nothing moves, so this measures
  the bookkeeping alone);
- ``cached`` (K teachers): the same with teacher outputs read from the on-disk cache.

Teachers are untrained (random) ``cnn1d`` models: step time does not depend on what the
weights are. Repeats are interleaved round-robin over the settings, so load from other
processes hits every setting alike, and the median over repeats is reported. Peak memory
is the process's peak resident set size during the setting's repeats (CPU; reset through
/proc/self/clear_refs on Linux), or ``torch.cuda.max_memory_allocated`` on a GPU.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from .cache import BuildReport, CacheOptions, build_cache, open_cached_teachers
from .options import DistillConfig
from .data import load_dataset
from .models import build_model, parse_model
from .pipeline import resolve_device
from .options import NoOptions
from .recipes import ScratchRecipe
from .recipes.build import build_recipe
from .teachers import FrozenTeacher, run_teachers
from .teachers.placement import DeviceTurns
from .errors import ConfigError
from .io import write_json
from .rundir import check_new_file
from .precision import grad_scaler
from .trainer import lr_factor
from .precision import autocast
from .data import BatchLoader
from .trainer import Trainer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="write one record per measured setting to this file")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("--teachers", default="1,2,4,8", help="teacher counts K to measure (default 1,2,4,8)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat (default 20)")
    p.add_argument("--repeats", type=int, default=25,
                   help="repeats per setting, interleaved over the settings; the median is reported (default 25)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before the first repeat")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--samples", type=int, default=2000, help="labeled MNIST-1D samples (80%% train)")
    p.add_argument("--unlabeled", type=int, default=5000, help="unlabeled pool size (the goal uses 100000)")
    p.add_argument("--teacher-channels", type=int, default=25, help="width of each cnn1d teacher")
    p.add_argument("--student-hidden", default="100,100", help="hidden sizes of the MLP student")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="autocast for every setting")
    p.add_argument("--modes", default="student_only,hand_loop,live,cached", help="settings to measure")
    p.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                   help="what a step's time is: wall clock, or this process's CPU time (auto: CPU time on the "
                        "CPU, which other processes on a shared machine do not inflate; wall clock on a GPU)")
    p.add_argument("--cache-dir", type=Path, help="where the cache is built (default: a temporary directory)")


# ---------------------------------------------------------------- memory

def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
    except OSError:
        pass


def _peak_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- the settings

class _HandLoop:
    """Plain PyTorch, the same math as recipe ``offline`` + aggregator ``mean`` + the Trainer."""

    def __init__(self, student, teachers, data, cfg, device, amp):
        import torch


        self.scaler = grad_scaler(device, amp)
        self.student, self.teachers, self.cfg, self.device, self.amp = student, teachers, cfg, device, amp
        self.x, self.y = data.x, data.y
        self.opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.gen = torch.Generator().manual_seed(0)
        self.order, self.pos = torch.randperm(len(self.x), generator=self.gen), 0
        self.step = 0

    def run(self, steps: int) -> None:
        import torch
        import torch.nn.functional as F


        T, a, b = self.cfg.temperature, self.cfg.alpha, self.cfg.batch_size
        for _ in range(steps):
            if self.pos >= len(self.order):
                self.order, self.pos = torch.randperm(len(self.x), generator=self.gen), 0
            rows = self.order[self.pos:self.pos + b]
            self.pos += b
            x, y = self.x[rows].to(self.device), self.y[rows].to(self.device)
            with autocast(self.device, self.amp):
                with torch.no_grad():
                    t = torch.stack([m(x) for m in self.teachers])  # [K, B, C]
                    target = torch.softmax(t / T, dim=-1).mean(0)  # [B, C]
                s = self.student(x)  # [B, C]
                log_q = F.log_softmax(s / T, dim=-1)
                kd = (torch.xlogy(target, target) - target * log_q).sum(-1).mean() * T * T
                labeled = y >= 0
                ce = F.cross_entropy(s[labeled], y[labeled]) if bool(labeled.any()) else s.sum() * 0
                loss = (1 - a) * ce + a * kd
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is not None:  # fp16 on CUDA
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            self.sched.step()
            self.step += 1


class _LibraryRun:
    """A recipe driven by the library's Trainer, run ``steps`` more steps at a time."""

    def __init__(self, recipe, data, cfg, device, amp):

        self.trainer = Trainer(recipe, BatchLoader(data, cfg.batch_size, shuffle=True, seed=0), cfg,
                               stage="bench", device=device, progress=False, amp=amp)
        self.trainer.cfg = cfg
        self.target = 0

    def run(self, steps: int) -> None:
        self.target += steps
        self.trainer.cfg.steps = self.target  # the schedule reads the same cfg object
        self.trainer.fit()


def _time(setting, steps: int, device, clock: str) -> float:
    now = time.process_time if clock == "cpu" else time.perf_counter
    _sync(device)
    start = now()
    setting.run(steps)
    _sync(device)
    return (now() - start) / steps


def _clock(args, device) -> str:
    if args.clock != "auto":
        return args.clock
    return "cpu" if device.type == "cpu" else "wall"


# ---------------------------------------------------------------- main

def run_bench(args) -> tuple[list[dict], dict]:
    import copy

    import torch


    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ks = sorted({int(k) for k in str(args.teachers).split(",") if k.strip()})
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    data = load_dataset("mnist1d", num_samples=args.samples, seed=0, unlabeled=args.unlabeled)
    transfer = data.transfer_set()
    cfg = DistillConfig(steps=10**9, batch_size=args.batch_size, eval_every=10**9, checkpoint_every=10**9)
    hidden = [int(h) for h in args.student_hidden.split(",") if h.strip()]
    student_cfg = parse_model({"arch": "mlp", "hidden": hidden}, "student")
    teacher_cfg = parse_model({"arch": "cnn1d", "channels": args.teacher_channels}, "teacher")
    torch.manual_seed(0)
    teacher_models = [build_model(teacher_cfg, data.input_shape, data.num_classes).to(device).eval()
                      for _ in range(max(ks))]
    torch.manual_seed(1)
    student0 = build_model(student_cfg, data.input_shape, data.num_classes)

    def student():
        return copy.deepcopy(student0).to(device)

    def offline(teachers):  # the library's offline + mean recipe, built as `mtkd run` builds it
        return build_recipe("offline", student(), teachers, cfg, recipe_options=NoOptions(),
                            aggregator_options=NoOptions(), num_classes=data.num_classes,
                            input_shape=data.input_shape, example=None, device=device, monitor=False).recipe

    info = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "threads": args.threads, "samples": len(transfer), "batch_size": args.batch_size,
            "steps": args.steps, "repeats": args.repeats, "amp": args.amp, "torch": torch.__version__,
            "teacher": f"cnn1d channels={args.teacher_channels}", "student": f"mlp hidden={hidden}",
            "clock": _clock(args, device)}
    settings: list[tuple[dict, object]] = []
    if "student_only" in modes:
        settings.append(({"mode": "student_only", "teachers": 0},
                         _LibraryRun(ScratchRecipe(student()), transfer, cfg, device, args.amp)))
    if "hand_loop" in modes:
        for k in ks:
            settings.append(({"mode": "hand_loop", "teachers": k},
                             _HandLoop(student(), teacher_models[:k], transfer, cfg, device, args.amp)))
    if "live" in modes:
        for k in ks:
            frozen = [FrozenTeacher(m, f"t{i}", data.num_classes) for i, m in enumerate(teacher_models[:k])]
            settings.append(({"mode": "live", "teachers": k}, _LibraryRun(offline(frozen), transfer, cfg, device,
                                                                            args.amp)))
    if "turns" in modes:  # live teachers kept in CPU memory, one at a time on the device (teachers_on_device: 1)
        for k in ks:
            turns = DeviceTurns(1, device)
            frozen = [FrozenTeacher(copy.deepcopy(m), f"t{i}", data.num_classes).take_turns(turns)
                      for i, m in enumerate(teacher_models[:k])]
            settings.append(({"mode": "turns", "teachers": k}, _LibraryRun(offline(frozen), transfer, cfg, device,
                                                                             args.amp)))
    if "cached" in modes:
        with tempfile.TemporaryDirectory() as scratch:
            root = args.cache_dir or Path(scratch) / "cache"
            loaders = [(f"t{i}", (lambda m=m: m)) for i, m in enumerate(teacher_models)]
            _reset_peak(device)
            started = time.perf_counter()
            report = build_cache(loaders, transfer, root, CacheOptions(amp=args.amp), device,
                                 preprocessing="bench")
            info["cache_build_seconds"] = round(time.perf_counter() - started, 3)
            info["cache_built"] = len(report.built)
            info["cache_mib"] = round(report.bytes / 2**20, 3)
            info["cache_build_peak_mib"] = round(_peak_mib(device), 1)
            pool = [c.to(device) for c in open_cached_teachers(report, transfer)]
            pools = {k: [c.to(device) for c in open_cached_teachers(
                BuildReport(report.entries[:k], data_fingerprint=report.data_fingerprint), transfer)] for k in ks}
            # one epoch of lookups for every teacher, twice: the second reads from the page cache
            for epoch in (1, 2):
                _sync(device)
                started = time.perf_counter()
                for i in range(0, len(transfer), args.batch_size):
                    xb = transfer.x[i:i + args.batch_size].to(device)
                    run_teachers(pool, xb, transfer.index[i:i + args.batch_size])
                _sync(device)
                info[f"epoch{epoch}_lookup_seconds"] = round(time.perf_counter() - started, 4)
            for k in ks:
                settings.append(({"mode": "cached", "teachers": k},
                                 _LibraryRun(offline(pools[k]), transfer, cfg, device, args.amp)))
            records = _measure(settings, args, device)
    else:
        records = _measure(settings, args, device)
    return records, info


def _measure(settings, args, device) -> list[dict]:
    times: list[list[float]] = [[] for _ in settings]
    peaks = [0.0] * len(settings)
    for _, setting in settings:  # warm-up: allocator, caches, lazy init
        setting.run(args.warmup)
    for _ in range(args.repeats):
        for i, (_, setting) in enumerate(settings):
            _reset_peak(device)
            times[i].append(_time(setting, args.steps, device, _clock(args, device)))
            peaks[i] = max(peaks[i], _peak_mib(device))
    records = []
    for (meta, _), t, peak in zip(settings, times, peaks):
        records.append({**meta, "step_seconds": statistics.median(t), "step_seconds_min": min(t),
                        "step_seconds_max": max(t), "peak_memory_mib": round(peak, 1),
                        "memory": "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"})
    # ratios of medians, and of minimums: on a machine shared with other work the fastest
    # repeat is the one least disturbed, so both are given
    for stat, suffix in (("step_seconds", ""), ("step_seconds_min", "_min")):
        base = next((r[stat] for r in records if r["mode"] == "student_only"), None)
        hand = {r["teachers"]: r[stat] for r in records if r["mode"] == "hand_loop"}
        for r in records:
            r["ratio_to_student_only" + suffix] = round(r[stat] / base, 4) if base else None
            if r["mode"] in ("live", "turns") and r["teachers"] in hand:
                r["ratio_to_hand_loop" + suffix] = round(r[stat] / hand[r["teachers"]], 4)
    return records


def format_table(records: list[dict], info: dict) -> str:
    lines = ["| mode | K | step ms (median) | min-max ms | x student alone (median / min) | "
             "x hand loop (median / min) | peak memory MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def pair(r, key):
        return f"{r[key]:.3f} / {r[key + '_min']:.3f}" if r.get(key) is not None else ""

    for r in records:
        lines.append(f"| {r['mode']} | {r['teachers']} | {r['step_seconds'] * 1e3:.3f} | "
                     f"{r['step_seconds_min'] * 1e3:.3f}-{r['step_seconds_max'] * 1e3:.3f} | "
                     f"{pair(r, 'ratio_to_student_only')} | {pair(r, 'ratio_to_hand_loop')} | "
                     f"{r['peak_memory_mib']:.0f} |")
    head = (f"device {info['device']}, {info['threads']} thread(s), torch {info['torch']}, amp {info['amp']}, "
            f"{'process CPU time' if info['clock'] == 'cpu' else 'wall-clock time'} per step; "
            f"{info['samples']} transfer samples, batch {info['batch_size']}, {info['steps']} steps x "
            f"{info['repeats']} repeats; teachers {info['teacher']}, student {info['student']}")
    out = [head, "", *lines]
    if "cache_build_seconds" in info:
        out += ["", f"cache: {info['cache_built']} teacher(s) built in {info['cache_build_seconds']:.2f} s, "
                    f"{info['cache_mib']:.2f} MiB on disk, build peak memory {info['cache_build_peak_mib']:.0f} MiB; "
                    f"one epoch of lookups for all teachers: {info['epoch1_lookup_seconds']:.3f} s, "
                    f"then {info['epoch2_lookup_seconds']:.3f} s"]
    return "\n".join(out)


def main(args) -> None:

    for name in ("steps", "repeats", "batch_size", "samples", "threads"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be positive (got {getattr(args, name)})")
    try:
        ks = [int(k) for k in str(args.teachers).split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--teachers: a comma-separated list of teacher counts, e.g. 1,2,4,8 (got {args.teachers!r})") from None
    if not ks or min(ks) <= 0:
        raise ConfigError(f"--teachers: teacher counts must be positive (got {args.teachers!r})")
    unknown = set(m.strip() for m in args.modes.split(",")) - {"student_only", "hand_loop", "live", "turns", "cached"}
    if unknown:
        raise ConfigError(f"--modes: unknown {sorted(unknown)}; choose from student_only, hand_loop, live, turns, "
                          "cached")
    if args.json is not None:  # before minutes of measuring: never replace a file mtkd was not told to
        check_new_file(args.json, args.overwrite, "--json")
        if not args.json.parent.is_dir():
            raise ConfigError(f"--json {args.json}: the folder {args.json.parent} does not exist; create it first")
    records, info = run_bench(args)
    print(format_table(records, info))
    if args.json:  # a list of records; each carries the run's settings, cached ones the cache's numbers
        cache_keys = [k for k in info if k.startswith(("cache_", "epoch"))]
        write_json(args.json, [{**r, **{k: v for k, v in info.items() if k not in cache_keys},
                                **({k: info[k] for k in cache_keys} if r["mode"] == "cached" else {})}
                               for r in records])
