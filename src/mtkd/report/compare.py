"""``mtkd report RUN_DIR [RUN_DIR ...]``: finished runs side by side.

Reads each run's ``summary.json``, ``config.yaml`` and ``metrics.jsonl``; runs whose configs
are equal except for the top-level ``seed`` (and ``output``) form one group, reported as
mean ± sample standard deviation over its seeds. Writes ``report.md``, ``comparison.json``
and plots to the output directory; the run directories are only read.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import flatten_config
from ..errors import MtkdError
from ..io import write_json, write_text
from ..trainer import MetricsLog


@dataclass
class RunRecord:
    path: Path
    summary: dict
    config: dict
    records: list[dict]


@dataclass
class Group:
    label: str
    runs: list[RunRecord] = field(default_factory=list)


def load_run(path: str | Path) -> RunRecord:
    """One finished run directory; a clear error for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise MtkdError(f"{path} is not a directory; give run directories written by `mtkd run` or `mtkd demo`")
    if not (path / "summary.json").is_file():
        what = "an unfinished run (no summary.json yet); finish it by running the same command again" \
            if (path / "config.yaml").is_file() else "not an mtkd run directory (no summary.json, no config.yaml)"
        raise MtkdError(f"{path} is {what}")
    try:
        summary = json.loads((path / "summary.json").read_text())
        config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MtkdError(f"{path}: summary.json or config.yaml cannot be read ({type(exc).__name__}); "
                        "is this an mtkd run directory?") from None
    if not isinstance(summary, dict) or not {"student", "teachers", "recipe"} <= set(summary):
        raise MtkdError(f"{path}/summary.json is not an mtkd summary (keys student, teachers, recipe missing)")
    return RunRecord(path, summary, config if isinstance(config, dict) else {}, MetricsLog(path / "metrics.jsonl").read())


def _flat(obj) -> dict[str, str]:
    """{"distill.aggregator": '"mean"', "teachers.0.arch": '"cnn1d"', ...} for labels."""
    return {k: json.dumps(v) for k, v in flatten_config(obj).items()}


def _seedless(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("seed", "output")}


def group_runs(runs: list[RunRecord]) -> list[Group]:
    """Runs with the same config apart from ``seed`` form one group; a group's label names the
    config keys that set it apart from the others (or the recipe and aggregator if only one)."""
    groups: dict[str, Group] = {}
    for run in runs:
        # a run without config.yaml never groups with another
        key = json.dumps(_seedless(run.config), sort_keys=True, default=str) if run.config else str(run.path)
        groups.setdefault(key, Group("")).runs.append(run)
    flats = [_flat(_seedless(g.runs[0].config)) for g in groups.values()]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({f.get(k) for f in flats}) > 1]
    for g, f in zip(groups.values(), flats):
        s = g.runs[0].summary
        if len(groups) == 1 or not differing:
            g.label = f"{s['recipe']}, {s['aggregator']}"
        else:
            shown = [f"{k}={json.loads(f[k]) if k in f else '-'}" for k in separating_keys(flats, differing)]
            g.label = ", ".join(shown)
        if len(groups) > 1 and sum(1 for other in groups.values() if other.label == g.label) > 1:
            g.label += f" [{g.runs[0].path.name}]"
    return list(groups.values())


def separating_keys(flats: list[dict], differing: list[str]) -> list[str]:
    """The few keys that tell the groups apart: keys every group has and names (data.name,
    distill.recipe, ...) first, each kept only if it splits groups that the earlier keys left
    together; keys that follow from another (a data set's own options) are not shown."""
    def priority(k: str):
        everywhere = all(k in f for f in flats)
        named = k.rsplit(".", 1)[-1] in ("name", "recipe", "aggregator", "arch")
        return (not everywhere, not named, k.count("."), k)

    chosen: list[str] = []
    classes = [list(range(len(flats)))]  # groups not yet told apart
    for k in sorted(differing, key=priority):
        split = []
        for members in classes:
            by_value: dict = {}
            for i in members:
                by_value.setdefault(flats[i].get(k), []).append(i)
            split.extend(by_value.values())
        if len(split) > len(classes):
            chosen.append(k)
            classes = split
        if all(len(c) == 1 for c in classes):
            break
    return chosen


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


# metrics compared per group: (name in comparison.json, column title, how to read it from a summary, scale)
METRICS = [
    ("student_accuracy", "student acc. (%)", lambda s: s["student"]["accuracy"], 100.0),
    ("student_ece", "student ECE (%)", lambda s: s["student"].get("ece"), 100.0),
    ("ensemble_accuracy", "ensemble acc. (%)", lambda s: s.get("ensemble", {}).get("accuracy"), 100.0),
    ("ensemble_ece", "ensemble ECE (%)", lambda s: s.get("ensemble", {}).get("ece"), 100.0),
    ("scratch_accuracy", "scratch acc. (%)", lambda s: s.get("scratch", {}).get("accuracy"), 100.0),
    ("student_ms_per_1000", "student ms / 1k", lambda s: s["student"].get("ms_per_1000"), 1.0),
    ("distill_seconds", "distill s", lambda s: s.get("timing", {}).get("distill_seconds"), 1.0),
]


def summarize_group(group: Group) -> dict:
    """{"label", "runs", "seeds", metric: {"mean", "std", "n"}} over the group's runs."""
    out = {"label": group.label, "runs": [str(r.path) for r in group.runs],
           "seeds": [r.summary.get("seed") for r in group.runs],
           "recipe": group.runs[0].summary["recipe"], "aggregator": group.runs[0].summary["aggregator"],
           "student_params": group.runs[0].summary["student"]["params"]}
    for name, _, get, _ in METRICS:
        values = [v for v in (get(r.summary) for r in group.runs) if v is not None]
        if values:
            mean, std = mean_std(values)
            out[name] = {"mean": round(mean, 6), "std": round(std, 6), "n": len(values)}
    teachers: dict[str, dict[str, list[float]]] = {}
    for r in group.runs:
        for t in r.summary["teachers"]:
            for key in ("accuracy", "ece"):
                if key in t:
                    teachers.setdefault(t["name"], {}).setdefault(key, []).append(t[key])
    out["teachers"] = {name: {key: dict(zip(("mean", "std"), (round(v, 6) for v in mean_std(values))), n=len(values))
                              for key, values in stats.items()} for name, stats in teachers.items()}
    return out


def compare_runs(run_dirs: list[str | Path], out: str | Path, plots: bool = True) -> dict:
    """Write the side-by-side report of ``run_dirs`` into ``out``; returns comparison.json's contents."""

    if not run_dirs:
        raise MtkdError("give at least one run directory")
    runs = [load_run(p) for p in run_dirs]
    out = Path(out)
    resolved = {r.path.resolve() for r in runs}
    if out.resolve() in resolved:
        raise MtkdError(f"--out {out} is one of the run directories; its report.md would be overwritten, "
                        "choose another --out")
    from ..rundir import claim

    held, _ = claim(out, "report")  # a new or empty folder, or one an earlier report wrote; locked
    try:
        return _write_comparison(runs, out, plots)
    finally:
        held.release()


def _write_comparison(runs: list[RunRecord], out: Path, plots: bool) -> dict:
    from .plots import plot_compare_accuracy, plot_compare_curves

    groups = group_runs(runs)
    summaries = [summarize_group(g) for g in groups]

    metrics = [m for m in METRICS if any(m[0] in s for s in summaries)]  # leave out columns no run has
    header = ["group", "runs (seeds)"] + [title for _, title, _, _ in metrics]
    lines = ["# mtkd: runs compared", "",
             f"{len(runs)} run(s) in {len(groups)} group(s). Runs whose configs differ only in `seed` form one "
             "group; cells give mean ± sample standard deviation over its seeds (one value: that run's).", "",
             "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(metrics)]
    for g, s in zip(groups, summaries):
        cells = [g.label, f"{len(g.runs)} ({', '.join(str(x) for x in s['seeds'])})"]
        for name, _, get, scale in metrics:
            values = [v for v in (get(r.summary) for r in g.runs) if v is not None]
            cells.append(_pm(values, scale, 1 if scale == 100.0 else 2))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Teachers", "", "| group | teacher | test acc. (%) | ECE (%) |", "|---|---|---:|---:|"]
    for g, s in zip(groups, summaries):
        for name, stats in s["teachers"].items():
            cells = []
            for key in ("accuracy", "ece"):
                st = stats.get(key)
                cells.append("-" if st is None else f"{100 * st['mean']:.1f}" if st["n"] == 1
                             else f"{100 * st['mean']:.1f} ± {100 * st['std']:.1f}")
            lines.append(f"| {g.label} | {name} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Runs", "", "| run | group | seed | dataset | student | params | student acc. (%) | "
              "ECE (%) | ensemble acc. (%) | teachers (acc. %) |", "|---|---|---:|---|---|---:|---:|---:|---:|---|"]
    for g in groups:
        for r in g.runs:
            s = r.summary
            teachers = ", ".join(f"{t['name']} {100 * t['accuracy']:.1f}" for t in s["teachers"]) or "-"
            ens = f"{100 * s['ensemble']['accuracy']:.1f}" if "ensemble" in s else "-"
            ece = f"{100 * s['student']['ece']:.1f}" if "ece" in s["student"] else "-"
            lines.append(f"| {r.path} | {g.label} | {s.get('seed', '-')} | {s.get('dataset', '-')} | "
                         f"{s['student'].get('arch', '-')} | {s['student']['params']:,} | "
                         f"{100 * s['student']['accuracy']:.1f} | {ece} | {ens} | {teachers} |")
    lines.append("")
    if plots:
        made = [("accuracy.png", "Student test accuracy per group (mean ± std over seeds)",
                 plot_compare_accuracy(summaries, out / "plots" / "accuracy.png")),
                ("curves.png", "Distillation curves (one line per run, one colour per group)",
                 plot_compare_curves([(g.label, [r.records for r in g.runs]) for g in groups],
                                     out / "plots" / "curves.png"))]
        lines += ["## Plots", ""]
        for file, title, ok in made:
            if ok:
                lines += [f"### {title}", "", f"![{title}](plots/{file})", ""]
    comparison = {"groups": summaries}
    write_json(out / "comparison.json", comparison)
    write_text(out / "report.md", "\n".join(lines))
    return comparison
