"""PNG plots for report.md, drawn on matplotlib ``Figure`` objects (rendered by Agg when saved).

No pyplot: importing this module neither switches the user's matplotlib backend nor
registers figures with pyplot, and it is imported only when a report draws plots."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure


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


def _subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    """(figure, axes) like ``pyplot.subplots``, without pyplot's global state."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def plot_curves(records: list[dict], path: Path) -> bool:
    loss, acc = _by_stage(records, "loss"), _by_stage(records, "val_accuracy")
    if not loss:
        return False
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    for stage, (xs, ys) in loss.items():
        axes[0].plot(xs, ys, label=stage)
    axes[0].set(title="training loss", xlabel="step", ylabel="loss", yscale="log")
    for stage, (xs, ys) in acc.items():
        axes[1].plot(xs, [100 * y for y in ys], marker="o", ms=3, label=stage)
    axes[1].set(title="validation accuracy", xlabel="step", ylabel="accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a language-model run has no validation accuracy
            ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_teacher_weights(records: list[dict], path: Path) -> bool:
    keys = sorted({k for r in records if r.get("stage") == "distill" for k in r if k.startswith("weight/")})
    if not keys:
        return False
    fig, ax = _subplots(figsize=(6, 4))
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
    fig, ax = _subplots(figsize=(6, 4))
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
    fig, ax = _subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    bars = ax.bar(range(len(rows)), [100 * r[1] for r in rows], color="tab:blue")
    for b, r in zip(bars, rows):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{100 * r[1]:.1f}%\n{r[2]:,} p",
                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 110), title="test accuracy")
    _save(fig, path)
    return True


def plot_reliability(models: list[dict], bins: int, path: Path) -> bool:
    """Reliability diagrams (Guo et al. 2017, Fig. 1), one panel per model: accuracy of each
    equal-width confidence bin (bars), the gap to the bin's mean confidence (red), the diagonal
    a calibrated model would follow. models: summary.json's calibration["models"]."""
    if not models:
        return False
    cols = min(4, len(models))
    rows = (len(models) + cols - 1) // cols
    fig, axes = _subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    width = 1.0 / bins
    lefts = [m * width for m in range(bins)]
    for ax, rec in zip(axes.flat, models):
        filled = [i for i, c in enumerate(rec["count"]) if c > 0]
        acc = [rec["accuracy"][i] for i in filled]
        conf = [rec["confidence"][i] for i in filled]
        ax.bar([lefts[i] for i in filled], acc, width=width, align="edge", color="tab:blue",
               edgecolor="black", linewidth=0.5, label="accuracy")
        # the gap spans accuracy..confidence, inside the bar when the model is under-confident
        ax.bar([lefts[i] for i in filled], [abs(c - a) for a, c in zip(acc, conf)],
               bottom=[min(a, c) for a, c in zip(acc, conf)], width=width, align="edge", fill=False,
               hatch="///", edgecolor="tab:red", linewidth=0.5, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        # how many samples each bin holds (a fraction, on the same 0..1 axis): sparse bins weigh little in the ECE
        n = max(1, sum(rec["count"]))
        shares = [c / n for c in rec["count"]]
        ax.stairs(shares, [m * width for m in range(bins + 1)], color="tab:orange", linewidth=1.5, zorder=5,
                  label="share of samples")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{rec['name']}\nECE {100 * rec['ece']:.1f} %")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    _save(fig, path)
    return True


def plot_agreement(names: list[str], matrix: list[list[float]], path: Path) -> bool:
    """Heatmap of the pairwise top-1 agreement matrix on the test split, values printed in the cells."""
    if len(names) < 2:
        return False
    n = len(names)
    fig, ax = _subplots(figsize=(1.0 * n + 2.5, 0.9 * n + 1.8))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    for i in range(n):
        for j in range(n):
            value = matrix[i][j]
            ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=8,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_title("top-1 agreement on the test split (%)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    _save(fig, path)
    return True


def plot_compare_accuracy(groups: list[dict], path: Path) -> bool:
    """Grouped bars, one group per compared configuration: student, ensemble and from-scratch
    test accuracy, mean with a ± one standard deviation error bar over seeds."""
    if not groups:
        return False
    series = [("student_accuracy", "student", "tab:blue"), ("ensemble_accuracy", "ensemble", "tab:orange"),
              ("scratch_accuracy", "student (scratch)", "tab:gray")]
    series = [s for s in series if any(s[0] in g for g in groups)]
    width = 0.8 / len(series)
    fig, ax = _subplots(figsize=(max(5, 1.6 * len(groups) + 2), 4.2))
    for k, (key, label, color) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        means = [100 * g[key]["mean"] if key in g else 0 for g in groups]
        stds = [100 * g[key]["std"] if key in g else 0 for g in groups]
        ax.bar(xs, means, width=width, yerr=stds, capsize=3, color=color, label=label)
        for x, m, sd, g in zip(xs, means, stds, groups):
            if key in g:
                ax.text(x, m + sd + 1, f"{m:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), [f"{g['label']}\n(n={len(g['runs'])})" for g in groups],
                  rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 122), title="test accuracy (mean ± std over seeds)")
    ax.legend(fontsize=8, loc="upper center", ncol=len(series))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def plot_compare_curves(groups: list[tuple[str, list[list[dict]]]], path: Path, stage: str = "distill") -> bool:
    """Loss and validation accuracy of ``stage`` over steps: one line per run, one colour per group.
    groups: (label, [metrics records of each run])."""
    if not any(r.get("stage") == stage and "loss" in r for _, runs in groups for recs in runs for r in recs):
        return False
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, runs) in enumerate(groups):
        color = colors[n % len(colors)]
        for k, recs in enumerate(runs):
            loss = _by_stage(recs, "loss").get(stage)
            acc = _by_stage(recs, "val_accuracy").get(stage)
            if loss:
                axes[0].plot(*loss, color=color, alpha=0.8, label=label if k == 0 else None)
            if acc:
                axes[1].plot(acc[0], [100 * y for y in acc[1]], color=color, alpha=0.8, marker="o", ms=2,
                             label=label if k == 0 else None)
    axes[0].set(title=f"training loss ({stage})", xlabel="step", ylabel="loss", yscale="log")
    axes[1].set(title=f"validation accuracy ({stage})", xlabel="step", ylabel="accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
    return True
