"""Library models on real images, offline: scikit-learn's digits resized to 16x16, augmented.

Per seed: three small teachers from timm and torchvision trained by mtkd on the augmented
labels, then a timm ViT student (a) from scratch, (b) distilled from the live teachers
(aggregator mean), (c) distilled from the view cache (distill.cache_views recorded views per
sample). Every run goes through the same pipeline as `mtkd run`. Reports test accuracy
(mean ± std over seeds) and the distillation stage's examples per second, live vs cached.

    python benchmarks/vision.py                      # 3 seeds; results in benchmarks/results/vision.{json,md}
    python benchmarks/vision.py --seeds 0 --steps 100    # a quick look
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mtkd.config import parse_config
from mtkd.pipeline import run_pipeline

TEACHERS = [("effnet", "timm:test_efficientnet", {}), ("resnet", "timm:test_resnet", {}),
            ("mobilenet", "torchvision:mobilenet_v3_small", {})]
STUDENT = {"arch": "timm:test_vit", "options": {"img_size": 16, "patch_size": 4}}
AUGMENT = [{"RandomResizedCrop": {"size": [16, 16], "scale": [0.7, 1.0], "antialias": True}},
           {"RandomAffine": {"degrees": 10}}]


def config(seed: int, out: Path, steps: int, teachers: list[dict], **distill) -> dict:
    return {"seed": seed, "data": {"name": "digits", "size": [16, 16], "augment": AUGMENT, "seed": seed},
            "teachers": teachers, "student": STUDENT,
            "distill": {"steps": steps, "batch_size": 64, "lr": 3e-3, "eval_every": steps, "log_every": 50,
                        "checkpoint_every": steps, **distill},
            "output": {"dir": str(out), "plots": False, "tracking": []}}


def run(raw: dict) -> tuple[dict, dict]:
    out = Path(raw["output"]["dir"])
    run_pipeline(parse_config(raw), out, progress=False, log=lambda m: None)
    return json.loads((out / "summary.json").read_text()), json.loads((out / "stages.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400, help="teacher and student steps")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vision")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = Path(tmp) / f"s{seed}"
            teachers = [{"name": n, "arch": a, "options": o, "train": {"steps": args.steps, "batch_size": 64,
                                                                        "lr": 3e-3}} for n, a, o in TEACHERS]
            live, live_stages = run(config(seed, base / "live", args.steps, teachers, baseline=True))
            trained = [{"name": t["name"], "checkpoint": str(base / "live" / "teachers" / f"{t['name']}.pt")}
                       for t in teachers]
            cached, cached_stages = run(config(seed, base / "cached", args.steps, trained, cache="always",
                                               cache_views=args.views))
            row = {"seed": seed,
                   "teachers": {t["name"]: t["accuracy"] for t in live["teachers"]},
                   "ensemble": live["ensemble"]["accuracy"] if "ensemble" in live else None,
                   "scratch": live["scratch"]["accuracy"], "kd_live": live["student"]["accuracy"],
                   "kd_views": cached["student"]["accuracy"],
                   "live_examples_per_s": live_stages["distill"]["examples_per_second"],
                   "cached_examples_per_s": cached_stages["distill"]["examples_per_second"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    wall = time.perf_counter() - started

    def ms(key):
        vals = [100 * r[key] for r in rows]
        return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.1f}"

    ratio = [r["cached_examples_per_s"] / r["live_examples_per_s"] for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "rows": rows, "wall_s": round(wall, 1)}, indent=1))
    lines = [f"digits 16x16, augmented; {args.steps} steps (batch 64); seeds {args.seeds}; test accuracy %, "
             "mean ± std", "",
             "| model | accuracy |", "|---|---:|"]
    for name, arch, _ in TEACHERS:
        vals = [100 * r["teachers"][name] for r in rows]
        lines.append(f"| teacher {name} ({arch}) | {statistics.mean(vals):.1f} |")
    lines += [f"| student {STUDENT['arch']} alone | {ms('scratch')} |",
              f"| student, KD (mean) from live teachers | {ms('kd_live')} |",
              f"| student, KD (mean) from the view cache ({args.views} views) | {ms('kd_views')} |", "",
              f"distillation examples/s, cached / live: {', '.join(f'{r:.2f}' for r in ratio)} "
              f"(mean {statistics.mean(ratio):.2f}x; wall-clock on a shared machine)", "",
              f"wall time {wall:.0f} s"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
