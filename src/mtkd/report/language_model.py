"""report.md of a language-model run: test perplexity of every model, overall and per domain."""
from __future__ import annotations

from pathlib import Path

from ..io import write_text


def lm_records(summary: dict) -> list[tuple[str, str, dict]]:
    """(model, role, record) for each row, in display order."""
    rows = [(t["name"], "teacher", t) for t in summary["teachers"]]
    if "ensemble" in summary:
        rows.append(("ensemble", summary["ensemble"]["rule"], summary["ensemble"]))
    if "scratch" in summary:
        rows.append(("student", "from scratch", summary["scratch"]))
    role = "from scratch" if summary["recipe"] == "scratch" else \
        f"distilled ({summary['recipe']}, {summary['aggregator']}, {summary['loss']})"
    rows.append(("student", role, summary["student"]))
    return rows


def _ppl(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def lm_table(summary: dict) -> str:
    """Markdown table: model, role, arch, params, test perplexity (all domains), one column per domain."""
    domains = summary["data"]["domains"]
    header = ["model", "role", "arch", "params", "perplexity (all)"] + [f"perplexity ({d})" for d in domains]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (2 + len(domains))) + "|"]
    for name, role, rec in lm_records(summary):
        cells = [name, role, rec.get("arch", "-"), f"{rec['params']:,}", _ppl(rec["perplexity"])]
        cells += [_ppl(rec["perplexity_by_domain"].get(d)) for d in domains]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_lm_report(out: Path, summary: dict, records: list[dict], plots: bool = True) -> None:
    data, t = summary["data"], summary["timing"]
    test_tokens = {d: v["tokens"] for d, v in data["tokens"]["test"].items()}
    lines = [f"# mtkd run: language model, recipe `{summary['recipe']}`"
             + (f", aggregator `{summary['aggregator']}`, loss `{summary['loss']}`" if summary["aggregator"] else ""), "",
             f"Seed {summary['seed']}. Data: {data['train']:,} train, {data['val']:,} validation and {data['test']:,} "
             f"test rows of {data['seq_len']} tokens; domains {', '.join(data['domains'])}; test tokens "
             + ", ".join(f"{d} {n:,}" for d, n in test_tokens.items()) + ".", "",
             "## Test perplexity", "", lm_table(summary), "",
             "Perplexity is exp of the mean negative log-likelihood of the next token over the test split's "
             "tokens (targets that would cross a document boundary and padding are left out); lower is better. "
             "The ensemble's probability of a token is the mean of its teachers' probabilities.", ""]
    if t["steps"]:
        lines += [f"Training: {t['steps']:,} steps in {t['distill_seconds']:.1f} s "
                  f"({t['tokens_per_second']:,.0f} tokens/s).", ""]
    if "cache" in summary:
        c = summary["cache"]
        lines += [f"Teachers read from the top-{c['k']} + tail token cache: {c['bytes_per_token']:.0f} bytes per token "
                  f"and teacher; KL(full || stored) {c['kl_mean']:.2e} nats per token on average (max "
                  f"{c['kl_max']:.2e}).", ""]
    if plots:
        from .plots import plot_curves, plot_teacher_weights

        figures = [("curves.png", "Training curves", plot_curves(records, out / "plots" / "curves.png")),
                   ("teacher_weights.png", "Teacher weights during distillation (mean over tokens)",
                    plot_teacher_weights(records, out / "plots" / "teacher_weights.png"))]
        made = [f for f in figures if f[2]]
        if made:
            lines += ["## Plots", ""]
            for file, title, _ in made:
                lines += [f"### {title}", "", f"![{title}](plots/{file})", ""]
    write_text(out / "report.md", "\n".join(lines))
