"""Library models on real images, offline: scikit-learn's digits resized to 16x16, augmented.

Per seed: three small teachers from timm and torchvision trained by mtkd on the augmented
labels, then a timm ViT student (a) from scratch, (b) distilled from the live teachers
(aggregator mean), (c) distilled from the view cache (distill.cache_views recorded views per
sample), (d) the same with the confidence aggregator. Every run goes through the same pipeline as `mtkd run`. Reports test accuracy
(mean ± std over seeds) and the distillation stage's examples per second, live vs cached.

    python benchmarks/vision.py                      # 3 seeds; results in benchmarks/results/vision.{json,md}
    python benchmarks/vision.py --seeds 0 --steps 100    # a quick look
    python benchmarks/vision.py --part tas           # TAS, CNN -> ViT and ViT -> CNN; results in vision_tas.*
    python benchmarks/vision.py --part overhead      # mtkd vs a hand-written loop; results in vision_overhead.*
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


CNN = {"arch": "timm:test_resnet"}  # the TAS pairs: a timm CNN and the ViT student's architecture
VIT_TEACHER = {"arch": "timm:test_vit", "options": {"img_size": 16, "patch_size": 4}}


def merged(args):
    """The rows of the per-seed result files ``args.merge`` (seeds run as separate processes), the
    same args with their steps and views, and their summed wall time."""
    parts = [json.loads(Path(f).read_text()) for f in args.merge]
    args.steps = int(parts[0]["args"]["steps"])
    args.views = int(parts[0]["args"].get("views", args.views))
    return [r for part in parts for r in part["rows"]], args, sum(part["wall_s"] for part in parts)


def tas_part(args) -> None:
    """TAS on real pairs, per seed: CNN teacher -> ViT student and ViT teacher -> CNN student, each
    run with its student trained alone (baseline) and with plain KD (mean) for comparison."""
    if args.merge:
        return write_tas(*merged(args))
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            row = {"seed": seed}
            for pair, teacher, student in (("cnn_to_vit", CNN, STUDENT), ("vit_to_cnn", VIT_TEACHER, CNN)):
                base = Path(tmp) / f"s{seed}" / pair
                teachers = [{"name": "t", **teacher, "train": {"steps": args.steps, "batch_size": 64, "lr": 3e-3}}]
                raw = config(seed, base / "tas", args.steps, teachers, recipe="tas", baseline=True)
                raw["student"] = student
                tas, _ = run(raw)
                kd_raw = config(seed, base / "kd", args.steps,
                                [{"name": "t", "checkpoint": str(base / "tas" / "teachers" / "t.pt")}])
                kd_raw["student"] = student
                kd, _ = run(kd_raw)
                row[pair] = {"teacher": tas["teachers"][0]["accuracy"], "scratch": tas["scratch"]["accuracy"],
                             "kd": kd["student"]["accuracy"], "tas": tas["student"]["accuracy"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_tas(rows, args, time.perf_counter() - started)


def write_tas(rows: list[dict], args, wall: float) -> None:
    args.seeds = [r["seed"] for r in rows]
    out = args.out.with_name(args.out.name + "_tas")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                    "rows": rows, "wall_s": round(wall, 1)}, indent=1))
    lines = [f"digits 16x16, augmented; {args.steps} steps (batch 64); seeds {args.seeds}; test accuracy %, "
             "mean ± std", "", "| pair | teacher | student alone | KD (mean) | TAS |", "|---|---:|---:|---:|---:|"]
    for pair, label in (("cnn_to_vit", f"{CNN['arch']} -> {STUDENT['arch']}"),
                        ("vit_to_cnn", f"{VIT_TEACHER['arch']} -> {CNN['arch']}")):
        cells = []
        for key in ("teacher", "scratch", "kd", "tas"):
            vals = [100 * r[pair][key] for r in rows]
            cells.append(f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"wall time {wall:.0f} s (summed over the runs)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    combine(args.out)


def overhead_part(args) -> None:
    """Per-step process CPU time of the library's offline + mean recipe with K = 3 live library
    teachers against a hand-written PyTorch loop doing the same math (mtkd.bench's), interleaved
    repeats (paired), one thread, no augmentation; the teachers are randomly initialised (the
    time of a step does not depend on the weights)."""
    import copy
    import types

    from mtkd.bench import _HandLoop, _LibraryRun, _measure
    from mtkd.data import load_dataset
    from mtkd.models.sources import build, parse
    from mtkd.options import DistillConfig, NoOptions
    from mtkd.recipes.build import build_recipe
    from mtkd.teachers import FrozenTeacher

    data = load_dataset("digits", size=[16, 16])
    transfer = data.transfer_set()
    cfg = DistillConfig(steps=10**9, batch_size=64, eval_every=10**9, checkpoint_every=10**9)
    torch.manual_seed(0)
    teachers = [build(parse({"arch": a, "options": o}, "teacher", "teacher"), data.input_shape, 10).eval()
                for _, a, o in TEACHERS]
    student0 = build(parse(dict(STUDENT), "student", "student"), data.input_shape, 10)
    frozen = [FrozenTeacher(m, n, 10) for m, (n, _, _) in zip(teachers, TEACHERS)]
    recipe = build_recipe("offline", copy.deepcopy(student0), frozen, cfg, recipe_options=NoOptions(),
                          aggregator_options=NoOptions(), num_classes=10, input_shape=data.input_shape,
                          example=None, device=torch.device("cpu"), monitor=False).recipe
    settings = [({"mode": "hand_loop", "teachers": 3},
                 _HandLoop(copy.deepcopy(student0), teachers, transfer, cfg, torch.device("cpu"), "off")),
                ({"mode": "live", "teachers": 3}, _LibraryRun(recipe, transfer, cfg, torch.device("cpu"), "off"))]
    # with augmentation: live teachers on each augmented batch vs the view cache (args.views recorded views)
    from mtkd.cache.views import ViewSource
    from mtkd.data import BatchLoader

    augmented = load_dataset("digits", size=[16, 16], augment=AUGMENT)
    transfer_aug = augmented.transfer_set()
    live_aug = build_recipe("offline", copy.deepcopy(student0), frozen, cfg, recipe_options=NoOptions(),
                            aggregator_options=NoOptions(), num_classes=10, input_shape=data.input_shape,
                            example=None, device=torch.device("cpu"), monitor=False).recipe
    views = ViewSource(transfer_aug.x, transfer_aug.index, augmented.augment, 0, args.views)
    cache_cfg = cfg.model_copy(update={"cache": "always", "cache_views": args.views})
    tmp = tempfile.TemporaryDirectory()
    cached = build_recipe("offline", copy.deepcopy(student0), frozen, cache_cfg, recipe_options=NoOptions(),
                          aggregator_options=NoOptions(), num_classes=10, input_shape=data.input_shape,
                          example=None, device=torch.device("cpu"), monitor=False, transfer=transfer_aug,
                          views=views, cache_dir=tmp.name).recipe
    for mode, rec, augment in (("live_augmented", live_aug, augmented.augment), ("cached_views", cached, views)):
        run_ = _LibraryRun(rec, transfer_aug, cfg, torch.device("cpu"), "off")
        run_.trainer.loader = BatchLoader(transfer_aug, cfg.batch_size, shuffle=True, seed=0, augment=augment)
        settings.append(({"mode": mode, "teachers": 3}, run_))
    opts = types.SimpleNamespace(warmup=10, repeats=args.repeats, steps=10, clock="cpu")
    started = time.perf_counter()
    records = _measure(settings, opts, torch.device("cpu"))
    wall = time.perf_counter() - started
    tmp.cleanup()
    step = {r["mode"]: r for r in records}
    speedup = step["live_augmented"]["step_seconds"] / step["cached_views"]["step_seconds"]
    speedup_min = step["live_augmented"]["step_seconds_min"] / step["cached_views"]["step_seconds_min"]
    live = next(r for r in records if r["mode"] == "live")
    out = args.out.with_name(args.out.name + "_overhead")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"records": records, "repeats": args.repeats, "steps": 10,
                                                    "views": args.views, "cached_speedup": round(speedup, 3),
                                                    "cached_speedup_min": round(speedup_min, 3),
                                                    "wall_s": round(wall, 1)}, indent=1))
    lines = [f"K = 3 live teachers ({', '.join(a for _, a, _ in TEACHERS)}), student {STUDENT['arch']}, digits "
             f"16x16, batch 64, 1 thread; process CPU time per step, {args.repeats} interleaved repeats of 10 steps",
             "", "| loop | step ms (median) | min-max ms |", "|---|---:|---:|"]
    for r in records:
        lines.append(f"| {r['mode']} | {1000 * r['step_seconds']:.1f} | "
                     f"{1000 * r['step_seconds_min']:.1f}-{1000 * r['step_seconds_max']:.1f} |")
    lines += ["", f"mtkd / hand-written loop (no augmentation): {live['ratio_to_hand_loop']:.3f}x (medians), "
                  f"{live['ratio_to_hand_loop_min']:.3f}x (minimums); goal <= 1.02x",
              "", f"augmented batches, live teachers / view cache ({args.views} views): {speedup:.2f}x faster per "
                  f"step from the cache (medians), {speedup_min:.2f}x (minimums); goal >= 3x"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    combine(args.out)


PARTS = (("kd", "Scratch, KD and the view cache"), ("tas", "TAS on CNN -> ViT and ViT -> CNN"),
         ("overhead", "Overhead of live library teachers against a hand-written loop"))


def combine(out: Path) -> None:
    """vision.{md,json}: the parts measured so far (vision_kd, vision_tas, vision_overhead), one
    section each, for the documentation page."""
    sections, raw = [], {}
    for part, title in PARTS:
        path = out.with_name(f"{out.name}_{part}")
        if path.with_suffix(".md").exists():
            sections.append(f"## {title}\n\n" + path.with_suffix(".md").read_text().strip())
            raw[part] = json.loads(path.with_suffix(".json").read_text())
    seeds = sorted({r["seed"] for part in ("kd", "tas") for r in raw.get(part, {}).get("rows", [])})
    out.with_suffix(".md").write_text("\n\n".join(sections) + "\n")
    out.with_suffix(".json").write_text(json.dumps({**({"seeds": seeds} if seeds else {}), **raw}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["kd", "tas", "overhead"], default="kd",
                   help="kd: scratch / KD live / KD from the view cache; tas: TAS on CNN -> ViT and ViT -> CNN; "
                        "overhead: mtkd vs a hand-written loop, K = 3 live teachers")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400, help="teacher and student steps")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--repeats", type=int, default=15, help="overhead: interleaved repeats")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vision")
    p.add_argument("--merge", nargs="+", help="kd, tas: write the table of these per-seed .json results instead")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.part == "tas":
        return tas_part(args)
    if args.part == "overhead":
        return overhead_part(args)
    if args.merge:  # per-seed result files (seeds run as separate processes) -> one table
        return write_kd(*merged(args))
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
                                               cache_views=args.views, cache_dir=str(base / "cache")))
            # the same recorded views and cache entries, weighted per sample by the teachers' confidence
            confident, _ = run(config(seed, base / "confidence", args.steps, trained, cache="always",
                                      cache_views=args.views, cache_dir=str(base / "cache"), aggregator="confidence"))
            row = {"seed": seed,
                   "teachers": {t["name"]: t["accuracy"] for t in live["teachers"]},
                   "ensemble": live["ensemble"]["accuracy"] if "ensemble" in live else None,
                   "scratch": live["scratch"]["accuracy"], "kd_live": live["student"]["accuracy"],
                   "kd_views": cached["student"]["accuracy"],
                   "kd_views_confidence": confident["student"]["accuracy"],
                   "live_examples_per_s": live_stages["distill"]["examples_per_second"],
                   "cached_examples_per_s": cached_stages["distill"]["examples_per_second"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_kd(rows, args, time.perf_counter() - started)


def write_kd(rows: list[dict], args, wall: float) -> None:
    args.seeds = [r["seed"] for r in rows]

    def ms(key):
        vals = [100 * r[key] for r in rows]
        return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.1f}"

    ratio = [r["cached_examples_per_s"] / r["live_examples_per_s"] for r in rows]
    out = args.out.with_name(args.out.name + "_kd")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "rows": rows, "wall_s": round(wall, 1)}, indent=1))
    lines = [f"digits 16x16, augmented; {args.steps} steps (batch 64); seeds {args.seeds}; test accuracy %, "
             "mean ± std", "",
             "| model | accuracy |", "|---|---:|"]
    for name, arch, _ in TEACHERS:
        vals = [100 * r["teachers"][name] for r in rows]
        lines.append(f"| teacher {name} ({arch}) | {statistics.mean(vals):.1f} |")
    lines += [f"| student {STUDENT['arch']} alone | {ms('scratch')} |",
              f"| student, KD (mean) from live teachers | {ms('kd_live')} |",
              f"| student, KD (mean) from the view cache ({args.views} views) | {ms('kd_views')} |",
              f"| student, KD (confidence) from the view cache ({args.views} views) | {ms('kd_views_confidence')} |", "",
              f"distillation examples/s, cached / live: {', '.join(f'{r:.2f}' for r in ratio)} "
              f"(mean {statistics.mean(ratio):.2f}x; wall-clock on a shared machine)", "",
              f"wall time {wall:.0f} s (summed over the runs)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    combine(args.out)


if __name__ == "__main__":
    main()
