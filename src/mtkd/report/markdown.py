"""report.md: the comparison table, data and timing, and the plots."""
from __future__ import annotations

from pathlib import Path

from ..io import write_text
from .plots import plot_accuracy, plot_curves, plot_teacher_weights
from .summary import markdown_table


def write_report(out: Path, summary: dict, records: list[dict], plots: bool = True) -> None:
    lines = [f"# mtkd run: {summary['dataset']}, recipe `{summary['recipe']}`, aggregator `{summary['aggregator']}`", "",
             f"Seed {summary['seed']}. Data: {summary['data']['train']:,} labeled train, {summary['data']['val']:,} "
             f"validation, {summary['data']['unlabeled']:,} unlabeled, {summary['data']['test']:,} test samples.", "",
             "## Test accuracy", "", markdown_table(summary), "",
             "Accuracy is on the held-out test split. Inference time is the median over 5 passes "
             "of one batch of up to 1,000 test examples (the ensemble runs every teacher).", ""]
    t = summary["timing"]
    if t["steps"]:
        lines += [f"Distillation: {t['steps']:,} steps in {t['distill_seconds']:.1f} s "
                  f"({t['examples_per_second']:,.0f} examples/s).", ""]
    if plots:
        bars = [(tr["name"], tr["accuracy"], tr["params"]) for tr in summary["teachers"]]
        if "ensemble" in summary:
            bars.append(("ensemble", summary["ensemble"]["accuracy"], summary["ensemble"]["params"]))
        if "scratch" in summary:
            bars.append(("student (scratch)", summary["scratch"]["accuracy"], summary["scratch"]["params"]))
        bars += [(p["name"], p["accuracy"], p["params"]) for p in summary.get("peers", [])]
        bars.append((f"student ({summary['recipe']})", summary["student"]["accuracy"], summary["student"]["params"]))
        figures = [("accuracy.png", "Test accuracy and parameters", plot_accuracy(bars, out / "plots" / "accuracy.png")),
                   ("curves.png", "Training curves", plot_curves(records, out / "plots" / "curves.png")),
                   ("teacher_weights.png", "Teacher weights during distillation",
                    plot_teacher_weights(records, out / "plots" / "teacher_weights.png"))]
        lines += ["## Plots", ""]
        for file, title, made in figures:
            if made:
                lines += [f"### {title}", "", f"![{title}](plots/{file})", ""]
    write_text(out / "report.md", "\n".join(lines))
