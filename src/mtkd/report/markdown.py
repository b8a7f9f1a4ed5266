"""report.md: the comparison table, data and timing, and the plots."""
from __future__ import annotations

from pathlib import Path

from ..io import write_text
from .summary import markdown_table


def write_report(out: Path, summary: dict, records: list[dict], plots: bool = True) -> None:
    lines = [f"# mtkd run: {summary['dataset']}, recipe `{summary['recipe']}`, aggregator `{summary['aggregator']}`", "",
             f"Seed {summary['seed']}. Data: {summary['data']['train']:,} labeled train, {summary['data']['val']:,} "
             f"validation, {summary['data']['unlabeled']:,} unlabeled, {summary['data']['test']:,} test samples.", "",
             "## Test accuracy", "", markdown_table(summary), "",
             "Accuracy is on the held-out test split. ECE: expected calibration error over 15 equal-width "
             "confidence bins (Guo et al., ICML 2017); 0 is perfectly calibrated. Inference time is the median "
             "over 5 passes of one batch of up to 1,000 test examples (the ensemble runs every teacher).", ""]
    t = summary["timing"]
    if t["steps"]:
        lines += [f"Distillation: {t['steps']:,} steps in {t['distill_seconds']:.1f} s "
                  f"({t['examples_per_second']:,.0f} examples/s).", ""]
    if "agreement" in summary:
        lines += ["## Agreement", "", "Fraction of test samples on which two models predict the same class (%).", "",
                  agreement_table(summary["agreement"]), ""]
    if "continual" in summary:
        lines += continual_table(summary["continual"])
    lines += monitor_table(records)
    if plots:
        # matplotlib loads only here, when a report draws plots
        from .plots import plot_accuracy, plot_agreement, plot_curves, plot_monitor, plot_reliability, \
            plot_teacher_weights

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
                    plot_teacher_weights(records, out / "plots" / "teacher_weights.png")),
                   ("monitor.png", "Agreement of the student with its teachers (validation split)",
                    plot_monitor(records, out / "plots" / "monitor.png"))]
        if "calibration" in summary:
            cal = summary["calibration"]
            figures.append(("reliability.png", "Reliability diagrams",
                            plot_reliability(cal["models"], cal["bins"], out / "plots" / "reliability.png")))
        if "agreement" in summary:
            agr = summary["agreement"]
            figures.append(("agreement.png", "Agreement matrix",
                            plot_agreement(agr["models"], agr["matrix"], out / "plots" / "agreement.png")))
        lines += ["## Plots", ""]
        for file, title, made in figures:
            if made:
                lines += [f"### {title}", "", f"![{title}](plots/{file})", ""]
    write_text(out / "report.md", "\n".join(lines))


def agreement_table(agreement: dict) -> str:
    """summary.json's agreement matrix as a markdown table, in %."""
    names = agreement["models"]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, row in zip(names, agreement["matrix"]):
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
    return "\n".join(lines)


def continual_table(c: dict) -> list[str]:
    """Test accuracy on every task seen so far, after each task (recipe continual)."""
    kind = "distillation (per-task teachers + LwF)" if c["distillation"] else "plain fine-tuning (no distillation)"
    n = len(c["tasks"])
    lines = ["## Accuracy on every task seen so far, after each task", "",
             f"Tasks (classes): {c['tasks']}; {kind}. Class-incremental: argmax over every class seen so far; "
             "task-aware: argmax within the task's own classes.", "",
             "| after task | " + " | ".join(f"task {j}" for j in range(n)) + " | average | task-aware average |",
             "|---|" + "---:|" * (n + 2)]
    for t, (row, avg, aware) in enumerate(zip(c["accuracy_after_task"], c["average_after_task"],
                                              c["task_aware_average_after_task"])):
        cells = [f"{100 * v:.1f} %" if v is not None else "-" for v in row] + ["-"] * (n - len(row))
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {100 * avg:.1f} % | {100 * aware:.1f} % |")
    return lines + [""]


def monitor_table(records: list[dict]) -> list[str]:
    """Agreement of the student with the teachers' ensemble per class, first and last monitored step."""
    monitored = [r for r in records if r.get("stage") == "distill" and "monitor/by_class" in r]
    if not monitored:
        return []
    first, last = monitored[0], monitored[-1]
    n = len(last["monitor/by_class"])

    def cells(r):
        return " | ".join("-" if v is None else f"{100 * v:.0f}" for v in r["monitor/by_class"])

    return ["## Where the student disagrees with its teachers", "",
            "Agreement (%) of the student's prediction with the teachers' ensemble on the validation split, "
            "per true class (`distill.monitor_every`):", "",
            "| step | " + " | ".join(f"class {c}" for c in range(n)) + " |", "|---|" + "---:|" * n,
            f"| {first['step']} | {cells(first)} |", *([f"| {last['step']} | {cells(last)} |"] if last is not first else []),
            ""]
