"""The README's Python quickstart against the same work through the CLI, paired and interleaved
(A B A B ...), each in a fresh process without OMP_NUM_THREADS, so the API's own thread default
is what is measured (the CLI's is distill.threads: 1).

    python benchmarks/api_vs_cli.py                  # full size: two teachers x 1,500 steps, student 3,000 steps
    python benchmarks/api_vs_cli.py --scale 0.1 --pairs 2   # a quick look

Work in both: MNIST-1D with a 10,000-sample unlabeled pool; teachers cnn1d and gru (hidden 32)
trained on the labels; an MLP 100 student distilled on labeled + pool (offline, mean, T = 4,
alpha = 0.9). The CLI also evaluates and writes its report (a few seconds). Prints wall seconds
and process CPU seconds (user + sys of the child) per run, and the API / CLI ratios.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

API = """
import torch
from torch import nn
import mtkd

torch.manual_seed(0)
data = mtkd.load_dataset("mnist1d", unlabeled=10000)
labeled = mtkd.BatchLoader(data.train, batch_size=100)
teachers = {{"cnn": mtkd.build_model("cnn1d", data.input_shape, 10),
            "gru": mtkd.build_model("gru", data.input_shape, 10, hidden=32)}}
for teacher in teachers.values():
    mtkd.train(teacher, labeled, steps={teacher_steps}, progress=False)
student = nn.Sequential(nn.Flatten(), nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 10))
transfer = mtkd.BatchLoader(data.transfer_set(), batch_size=100)
mtkd.distill(student, teachers, transfer, steps={steps}, temperature=4.0, alpha=0.9, progress=False)
print("student:", mtkd.accuracy(student, data.test))
"""

CONFIG = """
seed: 0
data: {{name: mnist1d, unlabeled: 10000}}
teachers:
  - {{name: cnn, arch: cnn1d, train: {{steps: {teacher_steps}}}}}
  - {{name: gru, arch: gru, hidden: 32, train: {{steps: {teacher_steps}}}}}
student: {{arch: mlp, hidden: [100]}}
distill: {{recipe: offline, aggregator: mean, temperature: 4.0, alpha: 0.9, steps: {steps}}}
output: {{plots: false, tracking: []}}
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="A B pairs (default 2)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (default 1)")
    args = parser.parse_args()
    teacher_steps, steps = max(1, round(1500 * args.scale)), max(1, round(3000 * args.scale))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as tmp:
        script, config = Path(tmp) / "quickstart.py", Path(tmp) / "quickstart.yaml"
        script.write_text(API.format(teacher_steps=teacher_steps, steps=steps))
        config.write_text(CONFIG.format(teacher_steps=teacher_steps, steps=steps))
        runs = {"api": [], "cli": []}
        for pair in range(args.pairs):
            runs["api"].append(timed([sys.executable, str(script)], env))
            runs["cli"].append(timed([sys.executable, "-m", "mtkd", "run", str(config), "--out",
                                      str(Path(tmp) / f"run{pair}"), "--no-progress"], env))
            print(f"pair {pair}: api {runs['api'][-1][0]:.1f} s wall / {runs['api'][-1][1]:.1f} s CPU, "
                  f"cli {runs['cli'][-1][0]:.1f} s wall / {runs['cli'][-1][1]:.1f} s CPU", flush=True)
    for i, what in enumerate(("wall", "CPU")):
        a = statistics.median(r[i] for r in runs["api"])
        c = statistics.median(r[i] for r in runs["cli"])
        print(f"median {what} seconds: api {a:.1f}, cli {c:.1f}, api / cli = {a / c:.2f}")
    print(f"torch threads available: {os.cpu_count()} CPUs; teacher steps {teacher_steps}, student steps {steps}")


if __name__ == "__main__":
    main()
