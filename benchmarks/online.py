"""Online distillation recipes on MNIST-1D over several seeds: each recipe against the same
architecture trained alone, and against offline distillation from separately trained teachers of
the same size. Prints mean and standard deviation of test accuracy; writes
benchmarks/results/online.json and .md.

    python benchmarks/online.py                       # 3 seeds, about 10 minutes of one core
    python benchmarks/online.py --seeds 0 --steps 500 # a quick look

Every run goes through the pipeline `mtkd run` uses (a run directory per run, in a temporary
folder); codistillation runs under torchrun with two CPU processes (gloo), one copy each.
Student: the small 1-D CNN (8 channels). Labeled samples only (no unlabeled pool), the setting
of the online-distillation papers. Each online recipe uses its paper's temperature and an equal
CE / KD weighting (alpha 0.5); offline KD uses the package defaults (T 4, alpha 0.9).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

STUDENT = {"arch": "cnn1d", "channels": 8}
# recipe -> (distill keys, what the cohort is)
ONLINE = {
    "mutual": ({"temperature": 1.0, "alpha": 0.5}, "2 peers (student + 1)"),
    "codistillation": ({"temperature": 1.0, "alpha": 0.5, "exchange_every": 50},
                       "2 copies, torchrun x 2 processes, half the data each"),
    "okddip": ({"temperature": 3.0, "alpha": 0.5}, "leader (student) + 3 auxiliary peers"),
    "ffl": ({"temperature": 3.0, "alpha": 0.5}, "2 sub-networks + fusion module"),
    "afd": ({"temperature": 3.0, "alpha": 0.5}, "2 peers + 2 discriminators"),
}


def base_config(seed: int, steps: int) -> dict:
    return {
        "seed": seed,
        "data": {"name": "mnist1d", "num_samples": 5000},
        "student": dict(STUDENT),
        "distill": {"steps": steps, "batch_size": 100, "lr": 0.01, "eval_every": steps, "log_every": 100,
                    "checkpoint_every": steps},
        "output": {"plots": False},
    }


def run(cfg: dict, out: Path, torchrun: bool = False) -> dict:
    """One `mtkd run` of ``cfg`` in ``out``; returns its summary."""
    out.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun \
        else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(launcher + ["-m", "mtkd", "run", str(path), "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({out.name}):\n{proc.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float]) -> str:
    m, s = stats([100 * v for v in values])
    return f"{m:.1f} ± {s:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--recipes", nargs="+", default=list(ONLINE), choices=list(ONLINE))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "online.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    results: dict = {"alone": [], "teachers": [], "offline": [], **{r: [] for r in args.recipes}}
    peers: dict = {r: {} for r in args.recipes}
    seconds: dict = {k: [] for k in results}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            # the student alone, two teachers of the same size trained alone, offline KD from them
            cfg = base_config(seed, args.steps)
            cfg["teachers"] = [{"name": f"t{i}", **STUDENT, "train": {"steps": args.steps, "eval_every": args.steps,
                                                                         "checkpoint_every": args.steps}}
                               for i in range(2)]
            cfg["distill"].update(recipe="offline", aggregator="mean", baseline=True)
            s = run(cfg, Path(tmp) / f"offline-{seed}")
            results["alone"].append(s["scratch"]["accuracy"])
            results["teachers"] += [t["accuracy"] for t in s["teachers"]]
            results["offline"].append(s["student"]["accuracy"])
            seconds["offline"].append(s["timing"]["distill_seconds"])
            seconds["alone"].append(s["stages"]["scratch"]["seconds"])
            print(f"seed {seed}: alone {s['scratch']['accuracy']:.3f}, teachers "
                  f"{[t['accuracy'] for t in s['teachers']]}, offline {s['student']['accuracy']:.3f}", flush=True)
            for recipe in args.recipes:
                options, _ = ONLINE[recipe]
                cfg = base_config(seed, args.steps)
                cfg["distill"].update(recipe=recipe, **options)
                s = run(cfg, Path(tmp) / f"{recipe}-{seed}", torchrun=recipe == "codistillation")
                results[recipe].append(s["student"]["accuracy"])
                seconds[recipe].append(s["timing"]["distill_seconds"])
                for p in s["peers"]:
                    peers[recipe].setdefault(p["name"], []).append(p["accuracy"])
                print(f"seed {seed}: {recipe} {s['student']['accuracy']:.3f} "
                      f"(peers {[(p['name'], p['accuracy']) for p in s['peers']]})", flush=True)
    wall = time.perf_counter() - started

    alone, offline = stats(results["alone"])[0], stats(results["offline"])[0]
    header = (f"MNIST-1D (4,000 train incl. 10 % validation / 1,000 test, no unlabeled pool), student "
              f"cnn1d 8 channels, {args.steps} steps, batch 100, Adam 1e-2 cosine, seeds {args.seeds} "
              f"(mean ± std of test accuracy, %)")
    lines = [header, "",
             "| method | cohort | student | vs alone | vs offline | other members | train s / run |",
             "|---|---|---:|---:|---:|---|---:|",
             f"| alone (`scratch`) | 1 network | {fmt(results['alone'])} | | | | "
             f"{stats(seconds['alone'])[0]:.0f} |",
             f"| `offline` from 2 teachers of the same size trained alone (`mean`, T 4, alpha 0.9) | 2 teachers, then "
             f"the student | {fmt(results['offline'])} | {100 * (offline - alone):+.1f} | | teachers "
             f"{fmt(results['teachers'])} | {stats(seconds['offline'])[0]:.0f} |"]
    for recipe in args.recipes:
        m = stats(results[recipe])[0]
        others = ", ".join(f"{name} {fmt(v)}" for name, v in peers[recipe].items())
        lines.append(f"| `{recipe}` | {ONLINE[recipe][1]} | {fmt(results[recipe])} | {100 * (m - alone):+.1f} | "
                     f"{100 * (m - offline):+.1f} | {others} | {stats(seconds[recipe])[0]:.0f} |")
    lines += ["", f"Command: `python benchmarks/online.py{' ' + ' '.join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ''}`; "
                  f"wall time {wall:.0f} s on a shared 2-core machine, one thread per process."]
    table = "\n".join(lines)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "accuracy": results,
                                     "peers": peers, "train_seconds": seconds, "wall_seconds": round(wall, 1)},
                                    indent=1))
    args.json.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
