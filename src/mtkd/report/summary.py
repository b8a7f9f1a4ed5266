"""``summary.json`` (the contract in DESIGN.md) and the comparison table printed to the console."""
from __future__ import annotations

import torch

from ..config import Config
from ..data import DataSplits
from .agreement import agreement_matrix
from .calibration import DEFAULT_BINS, ece_from_bins, reliability_bins


def teacher_faults(records: list[dict]) -> dict[str, int]:
    """Batches each teacher was dropped from (distill.on_teacher_error: drop), from metrics.jsonl."""
    counts: dict[str, int] = {}
    for r in records:
        if r.get("event") == "teacher_dropped":
            counts[r["teacher"]] = counts.get(r["teacher"], 0) + 1
    return counts


def calibration_and_agreement(named_probs: list[tuple[str, torch.Tensor]], labels: torch.Tensor,
                              bins: int = DEFAULT_BINS) -> dict:
    """summary.json's "calibration" (reliability bins per model) and "agreement" (pairwise top-1
    agreement matrix) from each model's test probabilities [N, C] and the labels [N]."""
    calibration = {"bins": bins, "models": []}
    for name, probs in named_probs:
        rb = reliability_bins(probs, labels, bins)
        calibration["models"].append({"name": name, "ece": round(ece_from_bins(rb), 4), "count": rb["count"],
                                      "accuracy": [round(a, 4) for a in rb["accuracy"]],
                                      "confidence": [round(c, 4) for c in rb["confidence"]]})
    if len(named_probs) < 2:  # nothing to agree with
        return {"calibration": calibration}
    preds = torch.stack([probs.argmax(1) for _, probs in named_probs])  # [M, N]
    matrix = agreement_matrix(preds)
    return {"calibration": calibration,
            "agreement": {"models": [n for n, _ in named_probs],
                          "matrix": [[round(float(v), 4) for v in row] for row in matrix]}}


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
    for key in ("calibration", "agreement"):  # added later; older summaries lack them
        if results.get(key):
            summary[key] = results[key]
    if results.get("assistants"):  # TAKD's intermediate models
        summary["assistants"] = results["assistants"]
    if results.get("peers"):  # online recipes: peers, leader or fused model trained beside the student
        summary["peers"] = results["peers"]
    if faults:
        summary["teacher_faults"] = faults
    if summary["ensemble"] is None:
        del summary["ensemble"]
    return summary


def table_records(summary: dict) -> list[tuple[str, str, str, dict]]:
    """(model, role, arch, record) for each row of the comparison table, in display order."""
    recs = [(t["name"], "teacher", t["arch"], t) for t in summary["teachers"]]
    if "ensemble" in summary:
        rule = summary["ensemble"].get("rule") or f"mean of {len(summary['teachers'])}"
        recs.append(("ensemble", rule, "-", summary["ensemble"]))
    recs += [(a["name"], f"assistant (level {a['level']})", a["arch"], a) for a in summary.get("assistants", [])]
    if "scratch" in summary:
        recs.append(("student", "from scratch", summary["scratch"]["arch"], summary["scratch"]))
    recs += [(p["name"], p["role"], p["arch"], p) for p in summary.get("peers", [])]
    role = "from scratch" if summary["recipe"] == "scratch" else f"distilled ({summary['recipe']}, {summary['aggregator']})"
    if "peers" in summary:  # an online recipe: no teacher, so no aggregator
        role = f"student ({summary['recipe']})"
    recs.append(("student", role, summary["student"]["arch"], summary["student"]))
    return recs


def table_rows(summary: dict) -> list[list[str]]:
    """[model, role, arch, params, test accuracy, ms per 1,000 examples] for each model."""
    return [[name, role, arch, f"{rec['params']:,}", f"{100 * rec['accuracy']:.1f} %", f"{rec['ms_per_1000']:.2f}"]
            for name, role, arch, rec in table_records(summary)]


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


def _ece_cells(summary: dict) -> list[str]:
    """ECE of each row of :func:`table_rows`, in its order ("-" where a summary predates ECE)."""
    return [f"{100 * r['ece']:.1f} %" if "ece" in r else "-" for *_, r in table_records(summary)]


def markdown_table(summary: dict) -> str:
    """The comparison table, plus expected calibration error (15 bins) before the timing column."""
    rows = [r[:5] + [e] + r[5:] for r, e in zip(table_rows(summary), _ece_cells(summary))]
    header = HEADER[:5] + ["ECE"] + HEADER[5:]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
