"""PNG plots for report.md, drawn with matplotlib's non-interactive Agg backend."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _by_stage(records: list[dict], key: str) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for r in records:
        if key in r:
            xs, ys = series[r["stage"]]
            xs.append(r["step"])
            ys.append(r[key])
    return dict(series)


def _save(fig, path: Path) -> None:
    from ..io import _atomic

    fig.tight_layout()
    _atomic(path, lambda h: fig.savefig(h, format="png", dpi=110), "wb")
    plt.close(fig)


def plot_curves(records: list[dict], path: Path) -> bool:
    loss, acc = _by_stage(records, "loss"), _by_stage(records, "val_accuracy")
    if not loss:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for stage, (xs, ys) in loss.items():
        axes[0].plot(xs, ys, label=stage)
    axes[0].set(title="training loss", xlabel="step", ylabel="loss", yscale="log")
    for stage, (xs, ys) in acc.items():
        axes[1].plot(xs, [100 * y for y in ys], marker="o", ms=3, label=stage)
    axes[1].set(title="validation accuracy", xlabel="step", ylabel="accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_teacher_weights(records: list[dict], path: Path) -> bool:
    keys = sorted({k for r in records if r.get("stage") == "distill" for k in r if k.startswith("weight/")})
    if not keys:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if r.get("stage") == "distill" and key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key.split("/", 1)[1])
    ax.set(title="mean teacher weight per batch (distill)", xlabel="step", ylabel="weight", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_monitor(records: list[dict], path: Path) -> bool:
    """Agreement of the student with each teacher and the ensemble, and its accuracy, on the
    validation split during distillation (``distill.monitor_every``; see mtkd.monitoring)."""
    keys = sorted({k for r in records if r.get("stage") == "distill" for k in r
                   if k.startswith("monitor/") and not isinstance(r[k], list)})
    if not keys:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if r.get("stage") == "distill" and key in r]
        label = key.removeprefix("monitor/").replace("agree/", "agrees with ")
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=3, label=label,
                linestyle="--" if key == "monitor/accuracy" else "-")
    ax.set(title="student vs teachers on the validation split", xlabel="step", ylabel="%", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_accuracy(rows: list[tuple[str, float, int]], path: Path) -> bool:
    """Bar chart of test accuracy, labelled with parameter counts. rows: (label, accuracy, params)."""
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    bars = ax.bar(range(len(rows)), [100 * r[1] for r in rows], color="tab:blue")
    for b, r in zip(bars, rows):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{100 * r[1]:.1f}%\n{r[2]:,} p",
                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 110), title="test accuracy")
    _save(fig, path)
    return True
