"""Every aggregator on MNIST-1D over several seeds, in a good and a mixed teacher pool, plus the
semi-supervised gain. Prints mean and standard deviation of the student's test accuracy.

    python benchmarks/aggregators.py                      # 3 seeds, about 15 minutes on 2 cores
    python benchmarks/aggregators.py --seeds 0 --steps 1000 --unlabeled 2000   # a quick look
    python benchmarks/aggregators.py --parts semi --semi-configs 3 --good cnn transformer  # UEKD before/after
    python benchmarks/aggregators.py --parts aggregators --aggregators mean entropy meta meta/bilevel \
        --seeds 0 --jobs 1 --json seed0.json     # one seed; run seeds as separate processes, then
    python benchmarks/aggregators.py --parts aggregators --aggregators mean entropy meta meta/bilevel \
        --merge seed0.json seed1.json seed2.json --json all.json --out all.md

Good pool: three competent teachers of different architectures (1-D CNN, GRU, transformer).
Mixed pool: the good pool plus a weak teacher (linear, ~30 %) and a confidently wrong one (a CNN
trained on systematically permuted labels, y -> (y + 1) mod 10). The student is an MLP 100-100
distilled on the labeled samples plus an unlabeled pool. Teachers are trained once per seed and
kept in benchmarks/.cache; their outputs on the transfer set are computed once per run
(PrecomputedTeacher), which gives the same targets as live teachers, faster.
`weighted` is left out: with equal weights it is `mean`, and its weights are the user's choice.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

import mtkd
from mtkd.models.files import load_model_file, save_model_file
from mtkd.config import _model
from mtkd.teachers import FrozenTeacher, PrecomputedTeacher

GOOD = {
    "cnn": ({"arch": "cnn1d"}, {"steps": 6000}),
    "gru": ({"arch": "gru", "hidden": 64}, {"steps": 3000}),
    "transformer": ({"arch": "transformer"}, {"steps": 3000, "lr": 3e-3, "warmup_steps": 200}),
}
BAD = {
    "linear": ({"arch": "linear"}, {"steps": 1000}),
    "permuted": ({"arch": "cnn1d"}, {"steps": 4000}),  # trained on labels (y + 1) mod 10
}
# recipe semi_supervised: (aggregator, options). First the form before UEKD's labeled-data scheme
# (CE only on labeled batches, global validation-accuracy weights), then the default (UEKD), then
# the other selections
SEMI = [("accuracy", {"labeled": "none"}), ("accuracy", {}), ("mean", {}),
        ("accuracy", {"selection": "weight", "floor": 0.1}), ("accuracy", {"selection": "sample"}),
        ("accuracy", {"selection": "uniform"}), ("accuracy", {"selection": "uniform", "unlabeled_batch_size": 300})]
AGGREGATORS = ["mean", "accuracy", "best", "confidence", "entropy", "adaptive_temperature", "aekd", "meta"]
# named forms that --aggregators also accepts: "name/form" runs aggregator name with option form
FORMS = ["meta/bilevel", "meta/joint"]
CACHE = Path(__file__).parent / ".cache"


def _init_worker():
    torch.set_num_threads(1)


@functools.lru_cache(maxsize=2)
def _load(unlabeled: int):
    return mtkd.load_dataset("mnist1d", num_samples=5000, seed=0, unlabeled=unlabeled)


def _data(args):
    return _load(args["unlabeled"])  # generated once per worker process


def train_teacher(job):
    args, seed, name = job
    spec, train = {**GOOD, **BAD}[name]
    path = CACHE / f"u{args['unlabeled']}" / f"seed{seed}" / f"{name}.pt"
    if path.exists():
        return name, seed, 0.0
    data = _data(args)
    torch.manual_seed(1000 * seed + sorted({**GOOD, **BAD}).index(name))
    arch = _model(dict(spec), name)
    model = mtkd.build_model(arch, data.input_shape, 10)
    train_set = data.train
    if name == "permuted":
        train_set = mtkd.IndexedTensorDataset(data.train.x, (data.train.y + 1) % 10, data.train.index)
    start = time.perf_counter()
    mtkd.train(model, mtkd.BatchLoader(train_set, 100, seed=seed), progress=False, **train)
    save_model_file(path, model, arch, data.input_shape, 10)
    return name, seed, time.perf_counter() - start


def distill(job):
    args, seed, pool, aggregator, recipe, transfer, options = job
    data = _data(args)
    names = list(args["good"]) + (list(BAD) if pool == "mixed" else [])
    x_all = data.transfer_set()
    teachers = {}
    for name in names:
        model, _ = load_model_file(CACHE / f"u{args['unlabeled']}" / f"seed{seed}" / f"{name}.pt")
        teachers[name] = PrecomputedTeacher(FrozenTeacher(model, name, 10), x_all.x, x_all.index)
    torch.manual_seed(seed)
    student = mtkd.build_model("mlp", data.input_shape, 10)
    dataset = x_all if transfer == "pool" else data.train
    loader = mtkd.BatchLoader(dataset, 100, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.jsonl"
        start = time.perf_counter()
        if recipe == "scratch":
            mtkd.train(student, mtkd.BatchLoader(data.train, 100, seed=seed), steps=args["steps"], progress=False)
        else:
            mtkd.distill(student, teachers, loader, recipe=recipe, aggregator=aggregator, steps=args["steps"],
                         val_data=(data.val.x, data.val.y), unlabeled=data.unlabeled, seed=seed,
                         metrics_path=metrics, progress=False, **options)
        seconds = time.perf_counter() - start
        records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    weights = {n: statistics.fmean(r[f"weight/{n}"] for r in records if f"weight/{n}" in r) for n in names} \
        if records else {}
    return {"seed": seed, "pool": pool, "aggregator": aggregator, "recipe": recipe, "transfer": transfer,
            "options": options,
            "accuracy": mtkd.accuracy(student, data.test), "seconds": round(seconds, 1), "mean_weights": weights}


def _split(spec: str) -> tuple[str, dict]:
    """'meta/bilevel' -> ('meta', {'form': 'bilevel'}); 'mean' -> ('mean', {})."""
    name, _, form = spec.partition("/")
    return name, ({"form": form} if form else {})


def _label(spec: str) -> str:
    name, options = _split(spec)
    return f"`{name}` (form: {options['form']})" if options else f"`{name}`"


def _describe(options):
    return ", ".join(f"{k}: {v}" for k, v in options.items()) or \
        "defaults (labeled: uekd, selection: weight, floor: 1.0)"


def _stats(values):
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--unlabeled", type=int, default=25000)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--parts", nargs="+", default=["aggregators", "semi"], choices=["aggregators", "semi"])
    parser.add_argument("--semi-configs", type=int, default=len(SEMI), help="run the first N semi-supervised forms")
    parser.add_argument("--aggregators", nargs="+", default=AGGREGATORS, choices=AGGREGATORS + FORMS,
                        help="the aggregators of the pool comparison (name/form: that form of the aggregator)")
    parser.add_argument("--good", nargs="+", default=list(GOOD), choices=list(GOOD), help="the good pool's teachers")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "aggregators.json")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    parser.add_argument("--merge", type=Path, nargs="+", default=[],
                        help="run nothing: make the tables from these result files (e.g. one run per seed, each "
                             "with --seeds N, run as separate processes), with the same other arguments")
    args = parser.parse_args(argv)
    shared = {"steps": args.steps, "unlabeled": args.unlabeled, "good": args.good}
    semi = SEMI[:args.semi_configs] if "semi" in args.parts else []
    start = time.perf_counter()
    needed = args.good + (list(BAD) if "aggregators" in args.parts else [])
    results = [r for f in args.merge for r in json.loads(f.read_text())["results"]]
    if args.merge:
        args.seeds = sorted({r["seed"] for r in results})
    with ProcessPoolExecutor(args.jobs, initializer=_init_worker) as pool:
        for seed in [] if args.merge else args.seeds:  # seed by seed: an interrupted run still has whole comparisons
            for name, _, seconds in pool.map(train_teacher, [(shared, seed, n) for n in needed]):
                if seconds:
                    print(f"trained teacher {name} (seed {seed}) in {seconds:.0f} s", file=sys.stderr)
            jobs = [(shared, seed, p, name, "offline", "pool", options)
                    for p in ("good", "mixed") for name, options in map(_split, args.aggregators)] \
                if "aggregators" in args.parts else [(shared, seed, "good", "mean", "offline", "pool", {})]
            jobs = [(shared, seed, "good", a, "semi_supervised", "labeled", opts) for a, opts in semi] + jobs
            jobs += [(shared, seed, "good", "mean", "offline", "labeled", {}),
                     (shared, seed, "good", "-", "scratch", "labeled", {})]
            for r in pool.map(distill, jobs):
                results.append(r)
                print(f"{r['recipe']:>15} {r['pool']:>5} {r['aggregator']:>20} seed {r['seed']} {r['options']}: "
                      f"{100 * r['accuracy']:.1f} % ({r['seconds']} s)", file=sys.stderr, flush=True)

    # teacher accuracies, for the table's header
    data = _data(shared)
    teacher_acc = {}
    for name in needed:
        accs = [mtkd.accuracy(load_model_file(CACHE / f"u{args.unlabeled}" / f"seed{s}" / f"{name}.pt")[0], data.test)
                for s in args.seeds]
        teacher_acc[name] = _stats(accs)

    def pick(**kw):
        return [r for r in results if all(r[k] == v for k, v in kw.items())]

    lines = [f"MNIST-1D, MLP 100-100 student, {args.steps} steps, {args.unlabeled:,} unlabeled, good pool "
             f"{', '.join(args.good)}, "
             f"seeds {args.seeds} (mean ± std of test accuracy, %)", "",
             "teachers: " + ", ".join(f"{n} {m:.1f} ± {s:.1f}" for n, (m, s) in teacher_acc.items()), "",
             *(["| aggregator | good pool | mixed pool | change | weight on linear + permuted (mixed) |",
                "|---|---:|---:|---:|---:|"] if "aggregators" in args.parts else [])]
    for spec in args.aggregators if "aggregators" in args.parts else []:
        a, options = _split(spec)
        good = _stats([r["accuracy"] for r in pick(pool="good", aggregator=a, recipe="offline", transfer="pool",
                                                   options=options)])
        mixed_runs = pick(pool="mixed", aggregator=a, recipe="offline", transfer="pool", options=options)
        mixed = _stats([r["accuracy"] for r in mixed_runs])
        bad_weight = statistics.fmean(r["mean_weights"]["linear"] + r["mean_weights"]["permuted"] for r in mixed_runs)
        lines.append(f"| {_label(spec)} | {good[0]:.1f} ± {good[1]:.1f} | {mixed[0]:.1f} ± {mixed[1]:.1f} | "
                     f"{mixed[0] - good[0]:+.1f} | {bad_weight:.2f} |")
    lines += ["", "| semi-supervised (good pool) | accuracy |", "|---|---:|"]
    rows = [("student from scratch (labels only)", pick(recipe="scratch")),
            ("offline `mean`, labeled samples only", pick(recipe="offline", transfer="labeled")),
            ("offline `mean`, labeled + unlabeled pool", pick(recipe="offline", transfer="pool", pool="good",
                                                               aggregator="mean", options={})),
            *[(f"`semi_supervised` + `{a}`, {_describe(o)}", pick(recipe="semi_supervised", aggregator=a, options=o))
              for a, o in semi]]
    for label, runs in rows:
        m, s = _stats([r["accuracy"] for r in runs])
        lines.append(f"| {label} | {m:.1f} ± {s:.1f} |")
    if args.merge:
        lines.append(f"\n(merged from {', '.join(f.name for f in args.merge)}; per-run times in their `seconds`)")
    else:
        lines.append(f"\n({time.perf_counter() - start:.0f} s in all, {args.jobs} processes)")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(args.json), "out": args.out and str(args.out), "merge": [str(f) for f in args.merge]}
    args.json.write_text(json.dumps({"args": vars(args) | paths, "teachers": teacher_acc,
                                     "results": results}, indent=1))


if __name__ == "__main__":
    main()
