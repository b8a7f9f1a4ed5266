"""Library models on real images, offline: scikit-learn's digits resized to 16x16, augmented.

Per seed: three small teachers from timm and torchvision trained by mtkd on the augmented
labels, then a timm ViT student (a) from scratch, (b) distilled from the live teachers
(aggregator mean), (c) distilled from the view cache (distill.cache_views recorded views per
sample), (d) the same with the confidence aggregator. Every run goes through the same pipeline as `mtkd run`. Reports test accuracy
(mean ± std over seeds) and the distillation stage's examples per second, live vs cached.

    python benchmarks/vision.py                      # 3 seeds; results in benchmarks/results/vision.{json,md}
    python benchmarks/vision.py --seeds 0 --steps 100 --teacher-steps 100   # a quick look
    python benchmarks/vision.py --part views --views 32   # the cached arms with 32 recorded views; vision_views.*
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

# name, model spec: three small library CNNs; torchvision's MobileNetV3 halves the resolution five
# times, so it gets the digits at 64x64 (resized for it on the fly), the others at the data's 16x16
TEACHERS = [("effnet", {"arch": "timm:test_efficientnet"}), ("resnet", {"arch": "timm:test_resnet"}),
            ("mobilenet", {"arch": "torchvision:mobilenet_v3_small", "input": {"size": [64, 64]}})]
STUDENT = {"arch": "timm:test_vit", "options": {"img_size": 16, "patch_size": 4}}
AUGMENT = [{"RandomResizedCrop": {"size": [16, 16], "scale": [0.7, 1.0], "antialias": True}},
           {"RandomAffine": {"degrees": 10}}]
CNN_LR, VIT_LR = 3e-3, 1e-3  # Adam; the ViTs diverge at 3e-3 on this data (24 % after 600 steps, 94 % at 1e-3)
WARMUP = 100  # linear warm-up steps of every student: without it one ViT student of three never left chance


def lr_for(spec: dict) -> float:
    return VIT_LR if "vit" in spec["arch"] else CNN_LR


def to_train(spec: dict, name: str, steps: int) -> dict:
    """A teacher entry that mtkd trains first (``steps`` steps, batch 64)."""
    return {"name": name, **spec, "train": {"steps": steps, "batch_size": 64, "lr": lr_for(spec)}}


def config(seed: int, out: Path, steps: int, teachers: list[dict], student: dict = STUDENT, **distill) -> dict:
    return {"seed": seed, "data": {"name": "digits", "size": [16, 16], "augment": AUGMENT, "seed": seed},
            "teachers": teachers, "student": student,
            "distill": {"steps": steps, "batch_size": 64, "lr": lr_for(student), "warmup_steps": WARMUP,
                        "eval_every": steps,
                        "log_every": 50, "checkpoint_every": steps, **distill},
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
    args.teacher_steps = int(parts[0]["args"].get("teacher_steps", args.teacher_steps))
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
                tas, _ = run(config(seed, base / "tas", args.steps, [to_train(teacher, "t", args.teacher_steps)],
                                    student, recipe="tas", baseline=True))
                kd, _ = run(config(seed, base / "kd", args.steps,
                                   [{"name": "t", "checkpoint": str(base / "tas" / "teachers" / "t.pt")}], student))
                row[pair] = {"teacher": tas["teachers"][0]["accuracy"], "scratch": tas["scratch"]["accuracy"],
                             "kd": kd["student"]["accuracy"], "tas": tas["student"]["accuracy"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_tas(rows, args, time.perf_counter() - started)


def mean_std(vals: list[float]) -> str:
    """'mean ± sample standard deviation' of accuracies in % (0 for a single seed)."""
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.1f}"


def save_rows(args, part: str, rows: list[dict], wall: float) -> Path:
    """vision_PART.json beside ``args.out``: the arguments, the per-seed rows and the wall time;
    returns the path without suffix, for the part's .md."""
    args.seeds = [r["seed"] for r in rows]
    out = args.out.with_name(f"{args.out.name}_{part}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                    "rows": rows, "wall_s": round(wall, 1)}, indent=1))
    return out


def publish(out: Path, lines: list[str], page: Path) -> None:
    """The part's table in ``out``.md, printed, and the combined page ``page``.{md,json} rewritten."""
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    combine(page)


def settings_line(args) -> str:
    return (f"digits 16x16, augmented; teachers {args.teacher_steps} steps, students {args.steps} steps (batch 64, "
            f"Adam, lr {CNN_LR:g} for CNNs, {VIT_LR:g} for ViTs, students warmed up over {WARMUP} steps); seeds "
            f"{args.seeds}; test accuracy %, mean ± std")


def write_tas(rows: list[dict], args, wall: float) -> None:
    out = save_rows(args, "tas", rows, wall)
    lines = [settings_line(args), "", "| pair | teacher | student alone | KD (mean) | TAS |", "|---|---:|---:|---:|---:|"]
    for pair, label in (("cnn_to_vit", f"{CNN['arch']} -> {STUDENT['arch']}"),
                        ("vit_to_cnn", f"{VIT_TEACHER['arch']} -> {CNN['arch']}")):
        cells = [mean_std([100 * r[pair][key] for r in rows]) for key in ("teacher", "scratch", "kd", "tas")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"wall time {wall:.0f} s (summed over the runs)"]
    publish(out, lines, args.out)


# Real small models for the speed table (randomly initialised: the time of a step does not depend on
# the weights): three teachers far larger than the student, as in FKD's setting, on 32x32 digits
# with FKD's augmentation (random resized crops and flips).
SPEED_TEACHERS = [("resnet18", {"arch": "timm:resnet18"}), ("convnext_atto", {"arch": "timm:convnext_atto"}),
                  ("vit_tiny", {"arch": "timm:vit_tiny_patch16_224", "options": {"img_size": 32, "patch_size": 4}})]
SPEED_STUDENT = {"arch": "timm:test_vit", "options": {"img_size": 32, "patch_size": 4}}
SPEED_AUGMENT = [{"RandomResizedCrop": {"size": [32, 32], "scale": [0.35, 1.0], "antialias": True}},
                 {"RandomHorizontalFlip": {}}]


def step_times(teacher_specs, student_spec, size: int, augment_spec, args, hand_loop: bool) -> list[dict]:
    """Per-step process CPU time (one thread, interleaved repeats of 10 steps) of the library's
    offline + mean recipe with K live teachers, of the same with augmented batches, and of the view
    cache (``args.views`` recorded views) on the same augmented batches; with ``hand_loop`` also
    the hand-written PyTorch loop of ``mtkd bench`` (same math as ``live``, no augmentation)."""
    import copy
    import types

    from mtkd.bench import _HandLoop, _LibraryRun, _measure
    from mtkd.cache.views import ViewSource
    from mtkd.data import BatchLoader, load_dataset
    from mtkd.models.sources import build, parse
    from mtkd.options import DistillConfig, NoOptions
    from mtkd.recipes.build import build_recipe
    from mtkd.teachers import FrozenTeacher

    cpu = torch.device("cpu")
    data = load_dataset("digits", size=[size, size])
    augmented = load_dataset("digits", size=[size, size], augment=augment_spec)
    transfer, transfer_aug = data.transfer_set(), augmented.transfer_set()
    cfg = DistillConfig(steps=10**9, batch_size=64, eval_every=10**9, checkpoint_every=10**9)
    torch.manual_seed(0)
    teachers = [build(parse(dict(spec), "teacher", "teacher"), data.input_shape, 10).eval()
                for _, spec in teacher_specs]
    student0 = build(parse(dict(student_spec), "student", "student"), data.input_shape, 10)
    frozen = [FrozenTeacher(m, name, 10) for m, (name, _) in zip(teachers, teacher_specs)]

    def recipe(config, **cached):
        return build_recipe("offline", copy.deepcopy(student0), frozen, config, recipe_options=NoOptions(),
                            aggregator_options=NoOptions(), num_classes=10, input_shape=data.input_shape,
                            example=None, device=cpu, monitor=False, **cached).recipe

    settings = []
    if hand_loop:
        settings += [({"mode": "hand_loop", "teachers": len(teachers)}, _HandLoop(copy.deepcopy(student0), teachers, transfer, cfg, cpu, "off")),
                     ({"mode": "live", "teachers": len(teachers)}, _LibraryRun(recipe(cfg), transfer, cfg, cpu, "off"))]
    views = ViewSource(transfer_aug.x, transfer_aug.index, augmented.augment, 0, args.views)
    tmp = tempfile.TemporaryDirectory()
    cached = recipe(cfg.model_copy(update={"cache": "always", "cache_views": args.views}),
                    transfer=transfer_aug, views=views, cache_dir=tmp.name)
    for mode, rec, augment in (("live_augmented", recipe(cfg), augmented.augment), ("cached_views", cached, views)):
        run_ = _LibraryRun(rec, transfer_aug, cfg, cpu, "off")
        run_.trainer.loader = BatchLoader(transfer_aug, cfg.batch_size, shuffle=True, seed=0, augment=augment)
        settings.append(({"mode": mode, "teachers": len(teachers)}, run_))
    opts = types.SimpleNamespace(warmup=10, repeats=args.repeats, steps=10, clock="cpu")
    records = _measure(settings, opts, cpu)
    tmp.cleanup()
    return records


def ratio(step: dict, a: str, b: str, key: str = "step_seconds") -> float:
    return step[a][key] / step[b][key]


def overhead_part(args) -> None:
    """Paired per-step CPU times: the library against a hand-written loop (K = 3 live test-size
    library teachers), and live teachers against the view cache, with the test-size teachers of
    the accuracy runs and with real small teachers far larger than the student."""
    started = time.perf_counter()
    tables = []
    for label, teachers, student, size, augment, hand in (
            ("test-size teachers (the accuracy runs' models)", TEACHERS, STUDENT, 16, AUGMENT, True),
            ("real small teachers, larger than the student", SPEED_TEACHERS, SPEED_STUDENT, 32, SPEED_AUGMENT, False)):
        records = step_times(teachers, student, size, augment, args, hand)
        step = {r["mode"]: r for r in records}
        tables.append({"label": label, "teachers": [spec["arch"] for _, spec in teachers], "student": student["arch"],
                       "size": size, "augment": augment, "records": records,
                       "cached_speedup": round(ratio(step, "live_augmented", "cached_views"), 3),
                       "cached_speedup_min": round(ratio(step, "live_augmented", "cached_views", "step_seconds_min"), 3),
                       **({"overhead": round(ratio(step, "live", "hand_loop"), 4),
                           "overhead_min": round(ratio(step, "live", "hand_loop", "step_seconds_min"), 4)}
                          if hand else {})})
        print(json.dumps(tables[-1]), flush=True)
    wall = time.perf_counter() - started
    out = args.out.with_name(args.out.name + "_overhead")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"tables": tables, "repeats": args.repeats, "steps": 10,
                                                    "views": args.views, "wall_s": round(wall, 1)}, indent=1))
    lines = [f"batch 64, 1 thread, process CPU time per step, {args.repeats} interleaved repeats of 10 steps; "
             f"view cache with {args.views} recorded views per sample"]
    for t in tables:
        lines += ["", f"**{t['label']}**: K = 3 live teachers ({', '.join(t['teachers'])}), student {t['student']}, "
                      f"digits {t['size']}x{t['size']}", "", "| loop | step ms (median) | min-max ms |", "|---|---:|---:|"]
        for r in t["records"]:
            lines.append(f"| {r['mode']} | {1000 * r['step_seconds']:.1f} | "
                         f"{1000 * r['step_seconds_min']:.1f}-{1000 * r['step_seconds_max']:.1f} |")
        if "overhead" in t:
            lines += ["", f"mtkd / hand-written loop (no augmentation): {t['overhead']:.3f}x (medians), "
                          f"{t['overhead_min']:.3f}x (minimums); goal <= 1.02x"]
        lines += ["", f"augmented batches, live teachers / view cache: {t['cached_speedup']:.2f}x faster per step from "
                      f"the cache (medians), {t['cached_speedup_min']:.2f}x (minimums); goal >= 3x"]
    publish(out, lines, args.out)


def trained_in(run_dir: Path, teachers: list[dict]) -> list[dict]:
    """Teacher entries reading the checkpoints that the run in ``run_dir`` trained."""
    return [{"name": t["name"], "checkpoint": str(run_dir / "teachers" / f"{t['name']}.pt")} for t in teachers]


def from_cache(seed: int, base: Path, name: str, args, teachers: list[dict], **distill) -> tuple[dict, dict]:
    """A student distilled from the view cache under ``base / "cache"`` (args.views recorded views)."""
    return run(config(seed, base / name, args.steps, teachers, cache="always", cache_views=args.views,
                      cache_dir=str(base / "cache"), **distill))


def views_part(args) -> None:
    """The view cache with ``args.views`` recorded views per sample, per seed: the same teachers as
    the kd part (same seed, same training), then the student from the cache with the mean and the
    confidence aggregators; compare with the kd part's live-teacher rows of the same seeds."""
    if args.merge:
        return write_views(*merged(args))
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = Path(tmp) / f"s{seed}"
            teachers = [to_train(spec, name, args.teacher_steps) for name, spec in TEACHERS]
            cached, _ = from_cache(seed, base, "cached", args, teachers)  # trains the teachers first
            confident, _ = from_cache(seed, base, "confidence", args, trained_in(base / "cached", teachers),
                                      aggregator="confidence")
            row = {"seed": seed, "teachers": {t["name"]: t["accuracy"] for t in cached["teachers"]},
                   "kd_views": cached["student"]["accuracy"], "kd_views_confidence": confident["student"]["accuracy"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_views(rows, args, time.perf_counter() - started)


def write_views(rows: list[dict], args, wall: float) -> None:
    rows = [{k: v for k, v in r.items() if k != "cache_build_s"} for r in rows]  # an early version's empty field
    out = save_rows(args, "views", rows, wall)

    def ms(key):
        return mean_std([100 * r[key] for r in rows])

    lines = [f"the kd part's teachers and settings; {args.views} recorded views per sample; seeds {args.seeds}; "
             "test accuracy %, mean ± std", "", "| model | accuracy |", "|---|---:|",
             f"| student, KD (mean) from the view cache ({args.views} views) | {ms('kd_views')} |",
             f"| student, KD (confidence) from the view cache ({args.views} views) | {ms('kd_views_confidence')} |",
             "", f"wall time {wall:.0f} s (summed over the runs)"]
    publish(out, lines, args.out)


PARTS = (("kd", "Scratch, KD and the view cache"), ("views", "More recorded views"), ("tas", "TAS on CNN -> ViT and ViT -> CNN"),
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
    seeds = sorted({r["seed"] for part in ("kd", "views", "tas") for r in raw.get(part, {}).get("rows", [])})
    out.with_suffix(".md").write_text("\n\n".join(sections) + "\n")
    out.with_suffix(".json").write_text(json.dumps({**({"seeds": seeds} if seeds else {}), **raw}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["kd", "views", "tas", "overhead"], default="kd",
                   help="kd: scratch / KD live / KD from the view cache; tas: TAS on CNN -> ViT and ViT -> CNN; "
                        "overhead: mtkd vs a hand-written loop, K = 3 live teachers")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1000, help="student steps")
    p.add_argument("--teacher-steps", type=int, default=800, help="steps of each teacher's training")
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
    if args.part == "views":
        return views_part(args)
    if args.merge:  # per-seed result files (seeds run as separate processes) -> one table
        return write_kd(*merged(args))
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = Path(tmp) / f"s{seed}"
            teachers = [to_train(spec, name, args.teacher_steps) for name, spec in TEACHERS]
            live, live_stages = run(config(seed, base / "live", args.steps, teachers, baseline=True))
            trained = trained_in(base / "live", teachers)
            cached, cached_stages = from_cache(seed, base, "cached", args, trained)
            # the same recorded views and cache entries, weighted per sample by the teachers' confidence
            confident, _ = from_cache(seed, base, "confidence", args, trained, aggregator="confidence")
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
    def ms(key):
        return mean_std([100 * r[key] for r in rows])

    speedups = [r["cached_examples_per_s"] / r["live_examples_per_s"] for r in rows]
    out = save_rows(args, "kd", rows, wall)
    lines = [settings_line(args), "", "| model | accuracy |", "|---|---:|"]
    for name, spec in TEACHERS:
        lines.append(f"| teacher {name} ({spec['arch']}) | {mean_std([100 * r['teachers'][name] for r in rows])} |")
    if all(r.get("ensemble") is not None for r in rows):
        lines.append(f"| ensemble of the teachers (mean of probabilities) | {ms('ensemble')} |")
    lines += [f"| student {STUDENT['arch']} alone | {ms('scratch')} |",
              f"| student, KD (mean) from live teachers | {ms('kd_live')} |",
              f"| student, KD (mean) from the view cache ({args.views} views) | {ms('kd_views')} |",
              f"| student, KD (confidence) from the view cache ({args.views} views) | {ms('kd_views_confidence')} |", "",
              f"distillation examples/s, cached / live: {', '.join(f'{r:.2f}' for r in speedups)} "
              f"(mean {statistics.mean(speedups):.2f}x; wall-clock on a shared machine)", "",
              f"wall time {wall:.0f} s (summed over the runs)"]
    publish(out, lines, args.out)


if __name__ == "__main__":
    main()
