"""Learning over time and without a teacher on MNIST-1D: Pro-KD (progressive), Tf-KD (teacher_free:
self, virtual, reverse) and continual distillation (LwF + per-task teachers against fine-tuning),
each against the same architecture trained alone. 3 seeds, mean and standard deviation.

    python benchmarks/over_time.py                       # 3 seeds, about 6 minutes on one idle core
    python benchmarks/over_time.py --seeds 0 --steps 500 # a quick look
    python benchmarks/over_time.py --methods "teacher_free virtual" --out /tmp/tf  # some methods only

Per seed (teacher and student initialization, batch order; the data are the same):
- a 1-D CNN teacher (25 channels) trained on the labels, keeping 10 checkpoints along the way
  (cached in benchmarks/.cache), and the MLP 100-100 student trained alone (scratch);
- progressive: the MLP follows the CNN's 10 checkpoints, T annealed 4 -> 1, on the labeled
  samples plus an unlabeled pool; local_targets (ProKT): a fresh CNN trains alongside the MLP
  over the same data; offline KD from the trained CNN over the same data for reference;
- teacher_free on the labeled samples only (the paper's setting): self (the scratch MLP is the
  teacher of a fresh MLP), virtual (the authors' settings), reverse (the scratch MLP, a weak model, teaches a
  CNN; compared with the CNN alone, which is the teacher above);
- continual: classes [0-4] then [5-9]; the MLP fine-tuned on each task in turn (no
  distillation), with LwF only, and with LwF plus one CNN teacher per task (trained on that
  task's samples), through `mtkd run`'s pipeline; test accuracy on every task after each task.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import mtkd
from mtkd.models.files import load_model_file, save_model_file
from mtkd.config import _model
from mtkd.pipeline import run_pipeline
from mtkd.recipes.progressive import load_trajectory

CACHE = Path(__file__).parent / ".cache" / "over_time"
TEACHER = {"arch": "cnn1d", "channels": 25}
STUDENT = {"arch": "mlp", "hidden": [100, 100]}
KD = {"temperature": 4.0, "alpha": 0.9}
# the authors' ResNet18 / CIFAR-100 settings for Tf-KD_reg (experiments/base_experiments/*/params.json); a = 0.99
VIRTUAL = {"mode": "virtual", "temperature": 20.0, "alpha": 0.1, "multiplier": 100.0}
TASKS = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def _build(spec, data, seed):
    torch.manual_seed(seed)
    return mtkd.build_model(_model(dict(spec), "model"), data.input_shape, 10)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 1)


def teacher(data, seed, steps):
    """The CNN teacher with its trajectory (10 checkpoints), trained once per seed and cached."""
    folder = CACHE / f"steps{steps}" / f"seed{seed}"
    path = folder / "cnn.pt"
    if path.exists():
        model = load_model_file(path)[0]
        return model, load_trajectory(folder / "cnn", model)[:-1], 0.0
    model = _build(TEACHER, data, 1000 + seed)
    _, seconds = _timed(lambda: mtkd.train(model, mtkd.BatchLoader(data.train, 100, seed=seed), steps=steps,
                                           save_every=steps // 10, snapshot_dir=folder / "cnn", progress=False))
    save_model_file(path, model, _model(dict(TEACHER), "t"), data.input_shape, 10)
    return model, load_trajectory(folder / "cnn", model)[:-1], seconds


def continual_run(data_args, seed, steps, teacher_steps, mode):
    """One continual pipeline run: 'finetune' (no distillation), 'lwf' (no teacher), 'lwf+teachers'."""
    distill = {"recipe": "continual", "tasks": TASKS, "steps": steps, "schedule": "constant", "batch_size": 100,
               "distillation": mode != "finetune", "eval_every": steps, "log_every": steps, "checkpoint_every": steps}
    teachers = [{"name": "cnn", **TEACHER, "train": {"steps": teacher_steps, "eval_every": teacher_steps,
                                                     "checkpoint_every": teacher_steps}}]
    raw = {"seed": seed, "data": data_args, "teachers": teachers if mode == "lwf+teachers" else [],
           "student": STUDENT, "distill": distill, "output": {"plots": False}}
    with tempfile.TemporaryDirectory() as tmp:
        summary, seconds = _timed(lambda: run_pipeline(mtkd.parse_config(raw), Path(tmp) / "run", progress=False,
                                                       log=lambda m: None))
    c = summary["continual"]
    return {"method": f"continual/{mode}", "seed": seed, "accuracy": summary["student"]["accuracy"],
            "after_task": c["accuracy_after_task"], "average_after_task": c["average_after_task"],
            "task_aware_average_after_task": c["task_aware_average_after_task"],
            "teachers": [t["accuracy"] for t in summary["teachers"]], "seconds": seconds}


def one_seed(args, seed):
    data_args = {"name": "mnist1d", "num_samples": 5000, "seed": 0, "unlabeled": args.unlabeled}
    data = mtkd.load_dataset(**data_args)
    labeled = lambda: mtkd.BatchLoader(data.train, 100, seed=seed)  # noqa: E731
    pool = lambda: mtkd.BatchLoader(data.transfer_set(), 100, seed=seed)  # noqa: E731
    val = (data.val.x, data.val.y)
    common = {"steps": args.steps, "progress": False, "seed": seed}
    rows = []
    want = lambda method: not args.methods or method in args.methods  # noqa: E731

    def record(method, model, seconds, **extra):
        rows.append({"method": method, "seed": seed, "accuracy": mtkd.accuracy(model, data.test), "seconds": seconds,
                     **extra})
        print(f"{method:>28} seed {seed}: {100 * rows[-1]['accuracy']:.1f} % ({seconds} s)", file=sys.stderr)

    needs_cnn = [m for m in ("teacher (cnn1d)", "offline KD (pool)", "progressive (pool)", "teacher_free reverse (cnn)")
                 if want(m)]
    if needs_cnn:
        cnn, trajectory, seconds = teacher(data, seed, args.teacher_steps)
        record("teacher (cnn1d)", cnn, seconds, checkpoints=len(trajectory) + 1)

    scratch = _build(STUDENT, data, seed)
    _, seconds = _timed(lambda: mtkd.train(scratch, labeled(), **common))
    record("scratch (mlp)", scratch, seconds)

    for method, recipe in [("offline KD (pool)", "offline"), ("progressive (pool)", "progressive")]:
        if not want(method):
            continue
        extra = {"trajectories": {"cnn": trajectory}} if recipe == "progressive" else {}
        student = _build(STUDENT, data, seed)
        _, seconds = _timed(lambda: mtkd.distill(student, {"cnn": cnn}, pool(), recipe=recipe, val_data=val,
                                                 **KD, **extra, **common))
        record(method, student, seconds)

    # ProKT: a fresh CNN (the teacher's initialization) trains alongside the MLP, held near it
    if want("local_targets (pool)"):
        student, live = _build(STUDENT, data, seed), _build(TEACHER, data, 1000 + seed)
        _, seconds = _timed(lambda: mtkd.distill(student, {"cnn": live}, pool(), recipe="local_targets", **KD,
                                                 **common))
        record("local_targets (pool)", student, seconds, teacher_accuracy=mtkd.accuracy(live, data.test))

    if want("teacher_free self"):
        student = _build(STUDENT, data, seed)
        _, seconds = _timed(lambda: mtkd.distill(student, {"self": scratch}, labeled(), recipe="teacher_free",
                                                 mode="self", **KD, **common))
        record("teacher_free self", student, seconds)
    if want("teacher_free virtual"):
        student = _build(STUDENT, data, seed)
        _, seconds = _timed(lambda: mtkd.distill(student, {}, labeled(), recipe="teacher_free", **VIRTUAL, **common))
        record("teacher_free virtual", student, seconds)
    # Re-KD: the weak MLP teaches a CNN that starts where the CNN teacher started (same seed)
    if want("teacher_free reverse (cnn)"):
        strong = _build(TEACHER, data, 1000 + seed)
        _, seconds = _timed(lambda: mtkd.distill(strong, {"mlp": scratch}, labeled(), recipe="teacher_free",
                                                 mode="reverse", **KD, **{**common, "steps": args.teacher_steps}))
        record("teacher_free reverse (cnn)", strong, seconds)

    for mode in ("finetune", "lwf", "lwf+teachers"):
        if not want(f"continual/{mode}"):
            continue
        rows.append(continual_run(data_args, seed, args.steps, args.teacher_steps // 2, mode))
        r = rows[-1]
        print(f"{r['method']:>28} seed {seed}: after each task {r['average_after_task']} ({r['seconds']} s)",
              file=sys.stderr)
    return rows


def _stats(values):
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _cell(values):
    m, s = _stats(values)
    return f"{m:.1f} ± {s:.1f}"


def table(args, rows, seconds) -> str:
    def acc(method):
        return [r["accuracy"] for r in rows if r["method"] == method]

    n_seeds = len(args.seeds)
    lines = [f"MNIST-1D (3,600 labeled train, 1,000 test), seeds {args.seeds}, mean ± std of test accuracy (%). "
             f"Student MLP 100-100, {args.steps} steps, batch 100, Adam 1e-2 (cosine); teacher CNN (25 channels), "
             f"{args.teacher_steps} steps with 10 checkpoints; unlabeled pool {args.unlabeled:,} (progressive and "
             f"offline only). {seconds:.0f} s in all, one thread.", "",
             "| method | model | accuracy | same arch alone | change |", "|---|---|---:|---:|---:|"]
    scratch, cnn = acc("scratch (mlp)"), acc("teacher (cnn1d)")
    for method, model, alone in [
            ("progressive (pool)", "MLP", scratch), ("local_targets (pool)", "MLP", scratch),
            ("offline KD (pool)", "MLP", scratch),
            ("teacher_free self", "MLP", scratch), ("teacher_free virtual", "MLP", scratch),
            ("teacher_free reverse (cnn)", "CNN", cnn)]:
        got = acc(method)
        if len(got) != n_seeds or not alone:
            continue
        change = _stats(got)[0] - _stats(alone)[0]
        lines.append(f"| `{method}` | {model} | {_cell(got)} | {_cell(alone)} | {change:+.1f} |")
    joint = [r["teacher_accuracy"] for r in rows if r["method"] == "local_targets (pool)"]
    lines += ["", (f"teacher CNN: {_cell(cnn)}; " if cnn else "") + f"MLP alone: {_cell(scratch)}"
              + (f"; the CNN trained alongside the student by `local_targets`: {_cell(joint)}" if joint else "")
              + ".", "",
              f"Continual: classes {TASKS[0]} then {TASKS[1]}, {args.steps // 2} steps each (constant lr), "
              "test accuracy on the tasks seen so far (class-incremental: argmax over every class seen so far; "
              "task-aware: within the task's classes).", "",
              "| continual | task 0 after task 0 | task 0 after task 1 | task 1 after task 1 | average after task 1 "
              "| task-aware average after task 1 |", "|---|---:|---:|---:|---:|---:|"]
    for mode, label in [("finetune", "fine-tuning, no distillation (same arch alone)"), ("lwf", "LwF only"),
                        ("lwf+teachers", "LwF + one CNN teacher per task")]:
        runs = [r for r in rows if r["method"] == f"continual/{mode}"]
        if len(runs) != n_seeds:
            continue
        cols = [[r["after_task"][0][0] for r in runs], [r["after_task"][1][0] for r in runs],
                [r["after_task"][1][1] for r in runs], [r["average_after_task"][1] for r in runs],
                [r["task_aware_average_after_task"][1] for r in runs]]
        lines.append(f"| {label} | " + " | ".join(_cell(c) for c in cols) + " |")
    lines.append(f"| joint training on all classes (MLP alone, reference) | - | - | - | {_cell(scratch)} | - |")
    return "\n".join(lines)


def main(argv=None):
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000, help="student steps")
    parser.add_argument("--teacher-steps", type=int, default=3000)
    parser.add_argument("--unlabeled", type=int, default=10000)
    parser.add_argument("--methods", nargs="+", default=[], help="run only these methods (and the MLP alone); "
                        "names as in the table, e.g. 'teacher_free virtual' 'continual/lwf'")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "over_time")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [r for seed in args.seeds for r in one_seed(args, seed)]
    seconds = time.perf_counter() - start
    text = table(args, rows, seconds)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text + "\n")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.with_suffix(".json").write_text(json.dumps(
        {"args": settings, "kd": KD, "virtual": VIRTUAL, "tasks": TASKS, "seconds": round(seconds, 1),
         "results": rows}, indent=1))


if __name__ == "__main__":
    main()
