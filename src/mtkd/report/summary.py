"""``summary.json`` (the contract in DESIGN.md) and the comparison table printed to the console."""
from __future__ import annotations

from ..config import Config
from ..data import DataSplits


def teacher_faults(records: list[dict]) -> dict[str, int]:
    """Batches each teacher was dropped from (distill.on_teacher_error: drop), from metrics.jsonl."""
    counts: dict[str, int] = {}
    for r in records:
        if r.get("event") == "teacher_dropped":
            counts[r["teacher"]] = counts.get(r["teacher"], 0) + 1
    return counts


def build_summary(cfg: Config, data: DataSplits, results: dict, stages: dict, faults: dict | None = None) -> dict:
    distill_stage = stages.get("distill", {})
    summary = {
        "dataset": data.name,
        "recipe": cfg.distill.recipe,
        "aggregator": cfg.distill.aggregator,
        "seed": cfg.seed,
        "student": results["student"],
        "teachers": results["teachers"],
        "ensemble": results["ensemble"],
        "timing": {
            "distill_seconds": distill_stage.get("seconds", 0.0),
            "steps": distill_stage.get("steps", 0),
            "examples_per_second": distill_stage.get("examples_per_second", 0.0),
        },
        "data": {"train": len(data.train), "val": len(data.val) if data.val is not None else 0,
                 "unlabeled": len(data.unlabeled) if data.unlabeled is not None else 0, "test": len(data.test)},
        "stages": stages,
    }
    if results.get("scratch"):
        summary["scratch"] = results["scratch"]
    if results.get("peers"):  # online recipes: peers, leader or fused model trained beside the student
        summary["peers"] = results["peers"]
    if faults:
        summary["teacher_faults"] = faults
    if summary["ensemble"] is None:
        del summary["ensemble"]
    return summary


def table_rows(summary: dict) -> list[list[str]]:
    """[model, role, arch, params, test accuracy, ms per 1,000 examples] for each model."""
    rows = []

    def row(name, role, arch, rec):
        rows.append([name, role, arch, f"{rec['params']:,}", f"{100 * rec['accuracy']:.1f} %", f"{rec['ms_per_1000']:.2f}"])

    for t in summary["teachers"]:
        row(t["name"], "teacher", t["arch"], t)
    if "ensemble" in summary:
        row("ensemble", f"mean of {len(summary['teachers'])}", "-", summary["ensemble"])
    if "scratch" in summary:
        row("student", "from scratch", summary["scratch"]["arch"], summary["scratch"])
    for p in summary.get("peers", []):
        row(p["name"], p["role"], p["arch"], p)
    role = "from scratch" if summary["recipe"] == "scratch" else f"distilled ({summary['recipe']}, {summary['aggregator']})"
    if "peers" in summary:  # an online recipe: no teacher, so no aggregator
        role = f"student ({summary['recipe']})"
    row("student", role, summary["student"]["arch"], summary["student"])
    return rows


HEADER = ["model", "role", "arch", "params", "test accuracy", "ms / 1k examples"]


def format_table(summary: dict) -> str:
    rows = [HEADER] + table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    right = {3, 4, 5}
    lines = []
    for n, r in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(summary: dict) -> str:
    rows = table_rows(summary)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 3) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
