"""Cross-architecture distillation on MNIST-1D: plain KD, FitNet-style hints, TAKD with one
assistant and TAS, against the student alone, for teacher/student pairs of different
architectures, over several seeds (mean and standard deviation of the student's test accuracy).

    python benchmarks/cross_arch.py                          # 3 seeds, about 12 minutes of one core
    python benchmarks/cross_arch.py --seeds 0 --steps 300    # a quick look
    python benchmarks/cross_arch.py --seeds 0 --pairs "cnn1d -> transformer" --methods tas --tas nce_weight=0

Pairs: a transformer teacher -> a small 1-D CNN student, and the reverse, a 1-D CNN teacher ->
a small transformer student. Every method runs through the real pipeline (``run_pipeline`` with
a config, as ``mtkd run`` does): recipes ``scratch``, ``offline`` (KD, mean of one teacher),
``features`` (KD + hints at one inner layer and the penultimate features), ``assistant`` (TAKD:
teacher -> one assistant of the student's family, larger -> student) and ``tas``. Data: MNIST-1D
generated once and stored as an .npz under benchmarks/.cache (with an unlabeled pool, the
transfer set of every distillation method); teachers are trained once per seed and cached there.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml

import mtkd
from mtkd.config import _model, parse_config
from mtkd.models.files import save_model_file
from mtkd.pipeline import run_pipeline

CACHE = Path(__file__).parent / ".cache" / "cross_arch"
PAIRS = {
    "transformer -> cnn1d": {
        "teacher": ({"arch": "transformer"}, {"steps": 3000, "lr": 3e-3, "warmup_steps": 200}),
        "student": {"arch": "cnn1d", "channels": 8},
        "assistant": {"arch": "cnn1d", "channels": 16},
        # the student's second conv block [8, 10] <- the first encoder layer's tokens [10, 32]; penultimate features
        "hints": [{"student": "features.3", "teacher": "encoder.layers.0"}, {}],
    },
    "cnn1d -> transformer": {
        "teacher": ({"arch": "cnn1d"}, {"steps": 3000}),
        "student": {"arch": "transformer", "dim": 16, "heads": 2, "layers": 1},
        "assistant": {"arch": "transformer", "dim": 32, "heads": 4, "layers": 1},
        # the student's patch embedding [10, 16] <- the teacher's second conv block [25, 10]; penultimate
        "hints": [{"student": "embed", "teacher": "features.3"}, {}],
    },
}
METHODS = ["scratch", "kd", "fitnet", "takd", "tas"]
DEFAULT_JSON = Path(__file__).parent / "results" / "cross_arch.json"


def _init_worker():
    torch.set_num_threads(1)


def make_data(unlabeled: int) -> Path:
    path = CACHE / f"mnist1d_u{unlabeled}.npz"
    if not path.exists():
        d = mtkd.load_dataset("mnist1d", num_samples=5000, seed=0, unlabeled=unlabeled)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x_train=torch.cat([d.train.x, d.val.x]).numpy(), y_train=torch.cat([d.train.y, d.val.y]).numpy(),
                 x_test=d.test.x.numpy(), y_test=d.test.y.numpy(), x_unlabeled=d.unlabeled.x.numpy())
        tmp.replace(path)
    return path


def _data_cfg(data_path: Path) -> dict:
    return {"name": "npz", "path": str(data_path), "seed": 0}


def train_teacher(job):
    data_path, pair, seed = job
    spec, train = PAIRS[pair]["teacher"]
    path = CACHE / f"seed{seed}" / f"{spec['arch']}.pt"
    if path.exists():
        return pair, seed, 0.0
    data = mtkd.load_dataset(**_data_cfg(data_path))
    torch.manual_seed(1000 + seed)
    arch = _model(dict(spec), "teacher")
    model = mtkd.build_model(arch, data.input_shape, 10)
    start = time.perf_counter()
    mtkd.train(model, mtkd.BatchLoader(data.train, 100, seed=seed), progress=False, **train)
    save_model_file(path, model, arch, data.input_shape, 10)
    return pair, seed, time.perf_counter() - start


def config(data_path: Path, pair: str, method: str, seed: int, steps: int, tas: dict | None = None) -> dict:
    p = PAIRS[pair]
    distill = {"steps": steps, "batch_size": 100, "eval_every": steps, "checkpoint_every": steps, "log_every": 100}
    distill.update({
        "scratch": {"recipe": "scratch"},
        "kd": {"recipe": "offline"},
        "fitnet": {"recipe": "features", "hints": p["hints"]},
        "takd": {"recipe": "assistant", "assistants": [dict(p["assistant"], name="ta")]},
        "tas": {"recipe": "tas", **(tas or {})},
    }[method])
    teacher_file = CACHE / f"seed{seed}" / f"{p['teacher'][0]['arch']}.pt"
    return {"seed": seed, "data": _data_cfg(data_path), "teachers": [{"name": "teacher", "checkpoint": str(teacher_file)}],
            "student": p["student"], "distill": distill, "output": {"plots": False}}


def run(job):
    data_path, pair, method, seed, steps, tas = job
    raw = config(data_path, pair, method, seed, steps, tas)
    if method == "scratch":
        raw["teachers"] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_pipeline(parse_config(raw), Path(tmp) / "run", progress=False, log=lambda _: None)
        seconds = time.perf_counter() - start
    return {"pair": pair, "method": method, "seed": seed, "accuracy": summary["student"]["accuracy"],
            "student_params": summary["student"]["params"], "seconds": round(seconds, 1),
            "teacher_accuracy": summary["teachers"][0]["accuracy"] if summary["teachers"] else None,
            "assistant_accuracy": summary["assistants"][0]["accuracy"] if "assistants" in summary else None}


def _stats(values):
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def table(results, args) -> str:
    lines = [f"MNIST-1D (3,600 labeled + 400 validation, {args.unlabeled:,} unlabeled, 1,000 test), "
             f"{args.steps} student steps (batch 100), teachers 3000 steps, seeds {args.seeds} "
             "(mean ± std of test accuracy, %)", "",
             "| pair (teacher -> student) | teacher | student alone | KD | FitNet hints | TAKD (assistant) | TAS |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for pair in PAIRS:
        rows = [r for r in results if r["pair"] == pair]
        acc = {m: [r["accuracy"] for r in rows if r["method"] == m] for m in METHODS}
        teacher = _stats([r["teacher_accuracy"] for r in rows if r["method"] == "kd"])
        ta = _stats([r["assistant_accuracy"] for r in rows if r["method"] == "takd"])
        params = next(r["student_params"] for r in rows)
        lines.append(f"| {pair} ({params:,} params) | {teacher} | {_stats(acc['scratch'])} | {_stats(acc['kd'])} | "
                     f"{_stats(acc['fitnet'])} | {_stats(acc['takd'])} (TA {ta}) | {_stats(acc['tas'])} |")
    return "\n".join(lines)


def partial_table(results, args) -> str:
    """Mean ± std per pair and method of a partial run (e.g. one method, or an ablation)."""
    lines = [f"MNIST-1D ({args.unlabeled:,} unlabeled), {args.steps} student steps, seeds {args.seeds}"
             + (f", TAS options {' '.join(args.tas)}" if args.tas else "") + " (mean ± std of test accuracy, %)", "",
             "| pair (teacher -> student) | method | accuracy | seeds done |", "|---|---|---:|---|"]
    for pair in args.pairs:
        for method in args.methods:
            rows = [r for r in results if r["pair"] == pair and r["method"] == method]
            if rows:
                lines.append(f"| {pair} | {method} | {_stats([r['accuracy'] for r in rows])} | "
                             f"{', '.join(str(r['seed']) for r in rows)} |")
    return "\n".join(lines)


def _write_json(args, results, wall: float) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"steps": args.steps, "unlabeled": args.unlabeled, "seeds": args.seeds,
                                     "pairs": args.pairs, "methods": args.methods, "tas": args.tas,
                                     "wall_seconds": round(wall, 1), "results": results}, indent=1) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--unlabeled", type=int, default=8000)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--tas", nargs="*", default=[], metavar="KEY=VALUE",
                        help="options of recipe tas, e.g. nce_weight=0 (values parsed as YAML)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help="where the results go (a partial run is stored only when this is given)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data_path = make_data(args.unlabeled)
    with ProcessPoolExecutor(args.jobs, initializer=_init_worker) as pool:
        for pair, seed, seconds in pool.map(train_teacher, [(data_path, p, s) for s in args.seeds for p in args.pairs]):
            if seconds:
                print(f"trained teacher of {pair} (seed {seed}) in {seconds:.0f} s", file=sys.stderr)
        tas = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.tas)}
        jobs = [(data_path, p, m, s, args.steps, tas) for s in args.seeds for p in args.pairs for m in args.methods]
        results = []
        for r in pool.map(run, jobs):
            results.append(r)
            print(f"{r['pair']:>22} {r['method']:>8} seed {r['seed']}: {100 * r['accuracy']:.1f} % "
                  f"({r['seconds']} s)", file=sys.stderr)
    if set(args.pairs) != set(PAIRS) or set(args.methods) != set(METHODS) or args.tas:
        if args.json != DEFAULT_JSON:  # a partial run (e.g. an ablation) is stored only where asked
            _write_json(args, results, time.perf_counter() - start)
            md = partial_table(results, args) + f"\n\nCommand: `python benchmarks/cross_arch.py {shlex.join(argv)}`\n"
            args.json.with_suffix(".md").write_text(md)
        return results  # printed above; the full table's results are kept
    md = table(results, args)
    wall = time.perf_counter() - start
    md += f"\n\nWall time {wall / 60:.1f} min with {args.jobs} worker processes of one thread each " \
          f"(`python benchmarks/cross_arch.py --steps {args.steps} --unlabeled {args.unlabeled} --jobs {args.jobs}`).\n"
    print(md)
    _write_json(args, results, wall)
    args.json.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
