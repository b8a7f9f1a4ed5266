"""Throughput of distillation with K = 1, 2, 4, 8 teachers, live and cached, against training the
student alone and against a minimal hand-written PyTorch loop (``mtkd bench``), in three settings:

    default  the `mtkd bench` defaults: MNIST-1D, 1,600 train + 5,000 unlabeled, MLP 100-100 student
    wide     the same with a wider student (MLP 1000-1000), where the student's own step dominates
    pool     the goal's setting: a 100,000-sample unlabeled pool, 8 teachers, cached vs student alone;
             reports the cache's build time, size and the time of one epoch of lookups

    python benchmarks/throughput.py            # all three, about 5 minutes on one idle core
    python benchmarks/throughput.py --only default

Writes benchmarks/results/throughput.json (a list of records, one per measured setting, each
naming its run) and throughput.md (the tables).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from mtkd.bench import add_arguments, format_table, run_bench
from mtkd.io import write_json, write_text

RUNS = {
    "default": [],
    "wide": ["--student-hidden", "1000,1000"],
    "pool": ["--unlabeled", "100000", "--teachers", "1,8", "--modes", "student_only,cached"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), action="append", help="run only these settings")
    cli = parser.parse_args()
    torch.set_num_threads(1)
    results = Path(__file__).parent / "results"
    records, tables = [], ["# mtkd bench: throughput (benchmarks/throughput.py)", ""]
    for name in cli.only or list(RUNS):
        bench_parser = argparse.ArgumentParser()
        add_arguments(bench_parser)
        args = bench_parser.parse_args(RUNS[name])
        started = time.perf_counter()
        recs, info = run_bench(args)
        wall = time.perf_counter() - started
        table = format_table(recs, info)
        print(f"\n## {name} ({wall:.0f} s)\n\n{table}", flush=True)
        tables += [f"## {name}: `mtkd bench {' '.join(RUNS[name])}` ({wall:.0f} s wall)", "", table, ""]
        cache_keys = [k for k in info if k.startswith(("cache_", "epoch"))]
        for r in recs:
            records.append({"run": name, **r, **{k: v for k, v in info.items() if k not in cache_keys},
                            **({k: info[k] for k in cache_keys} if r["mode"] == "cached" else {})})
    done = {r["run"] for r in records}
    old_json, old_md = results / "throughput.json", results / "throughput.md"
    if cli.only and old_json.exists():  # keep the other settings' results from an earlier run
        import json

        records = [r for r in json.loads(old_json.read_text()) if r["run"] not in done] + records
        kept = [part for part in old_md.read_text().split("\n## ")[1:] if part.split(":")[0] not in done]
        tables += ["## " + part for part in kept]
    write_json(old_json, records)
    write_text(old_md, "\n".join(tables))


if __name__ == "__main__":
    sys.exit(main())
