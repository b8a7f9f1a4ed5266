"""Does `mtkd select` pick a pool worth distilling from? MNIST-1D, a pool of seven teachers of
very different quality, three seeds: the student distilled from every teacher, from the subset
`select_teachers` keeps (on the validation split), and from the single best teacher.

    python benchmarks/selection.py                 # 3 seeds, about 6 minutes on one idle core
    python benchmarks/selection.py --seeds 0 --steps 300   # a quick look

Pool: three 1-D CNNs (two with 25 channels, from different initialisations, and one with 8), an MLP, a linear model, a CNN trained on permuted
labels (y -> (y + 1) mod 10: confidently wrong) and an untrained MLP (near uniform). Student:
MLP 100-100, offline KD with the `mean` aggregator on the labeled samples plus an unlabeled
pool. Teachers are trained once per seed and kept in benchmarks/.cache (git-ignored).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import mtkd
from mtkd.aggregation.coverage import class_masks
from mtkd.config import _model
from mtkd.io import write_json, write_text
from mtkd.models.files import load_model_file, save_model_file
from mtkd.selection import select_teachers
from mtkd.trainer import predict_logits

POOL = {  # name: (model keys, training keywords); steps 0 = left untrained
    "cnn": ({"arch": "cnn1d", "channels": 25}, {"steps": 3000}),
    "cnn_b": ({"arch": "cnn1d", "channels": 25}, {"steps": 3000}),  # same arch, another initialisation
    "cnn_small": ({"arch": "cnn1d", "channels": 8}, {"steps": 2000}),
    "mlp": ({"arch": "mlp", "hidden": [100, 100]}, {"steps": 1500}),
    "linear": ({"arch": "linear"}, {"steps": 500}),
    "permuted": ({"arch": "cnn1d", "channels": 8}, {"steps": 2000}),
    "untrained": ({"arch": "mlp", "hidden": [32]}, {"steps": 0}),
}
CACHE = Path(__file__).parent / ".cache" / "selection"


def teacher(data, seed: int, name: str):
    spec, train = POOL[name]
    path = CACHE / f"seed{seed}" / f"{name}.pt"
    if path.exists():
        return load_model_file(path)[0]
    torch.manual_seed(1000 * seed + sum(map(ord, name)))  # a seed per teacher name
    arch = _model(dict(spec), name)
    model = mtkd.build_model(arch, data.input_shape, 10)
    train_set = data.train
    if name == "permuted":
        train_set = mtkd.IndexedTensorDataset(data.train.x, (data.train.y + 1) % 10, data.train.index)
    if train["steps"]:
        mtkd.train(model, mtkd.BatchLoader(train_set, 100, seed=seed), progress=False, **train)
    save_model_file(path, model, arch, data.input_shape, 10)
    return model


def distill(data, teachers: dict, seed: int, steps: int) -> float:
    torch.manual_seed(seed)
    student = mtkd.build_model("mlp", data.input_shape, 10, hidden=[100, 100])
    mtkd.distill(student, teachers, mtkd.BatchLoader(data.transfer_set(), 100, seed=seed), steps=steps,
                 temperature=4.0, alpha=0.9, progress=False, seed=seed)
    return mtkd.accuracy(student, data.test)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500, help="distillation steps")
    parser.add_argument("--unlabeled", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "selection")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = mtkd.load_dataset("mnist1d", num_samples=4000, seed=0, unlabeled=args.unlabeled)
    records = []
    for seed in args.seeds:
        models = {name: teacher(data, seed, name) for name in POOL}
        names = list(models)
        probs = torch.stack([torch.softmax(predict_logits(m, data.val.x), -1) for m in models.values()])
        chosen, decisions = select_teachers(probs, data.val.y, names, class_masks(list(models.values()), 10))
        best = names[int(torch.argmax((probs.argmax(-1) == data.val.y).float().mean(1)))]
        record = {"seed": seed, "selected": [names[i] for i in chosen], "best_single": best, "accuracy": {},
                  "teachers": {n: mtkd.accuracy(m, data.test) for n, m in models.items()},
                  "decisions": [d.reason for d in decisions]}
        for label, subset in [("all", names), ("selected", record["selected"]), ("best single", [best])]:
            record["accuracy"][label] = distill(data, {n: models[n] for n in subset}, seed, args.steps)
            print(f"seed {seed}: {label:12s} {subset} -> {100 * record['accuracy'][label]:.1f} %", file=sys.stderr,
                  flush=True)
        records.append(record)

    def stat(values):
        values = [100 * v for v in values]
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"

    lines = [f"MNIST-1D (4,000 samples, {args.unlabeled:,} unlabeled), MLP 100-100 student, offline KD with `mean`, "
             f"{args.steps} steps, seeds {args.seeds} (mean ± std of test accuracy, %); "
             f"{time.perf_counter() - start:.0f} s in all", "",
             "teachers: " + ", ".join(f"{n} {stat([r['teachers'][n] for r in records])}" for n in POOL), "",
             "| distilled from | test accuracy | teachers (per seed) |", "|---|---:|---|"]
    for label in ["all", "selected", "best single"]:
        subsets = f"all {len(POOL)}" if label == "all" else "; ".join(
            ", ".join(r["selected"]) if label == "selected" else r["best_single"] for r in records)
        lines.append(f"| {label} | {stat([r['accuracy'][label] for r in records])} | {subsets} |")
    table = "\n".join(lines)
    print(table)
    write_json(args.out.with_suffix(".json"), {"args": {k: str(v) for k, v in vars(args).items()}, "records": records})
    write_text(args.out.with_suffix(".md"), table + "\n")


if __name__ == "__main__":
    main()
