"""How many transfer-set samples of the aggregator benchmark get different EBKD weights from the
earlier entropy aggregator and the current one (which gives 1/K each where every teacher is fully
certain, total entropy <= 1e-12, where the earlier one's weights did not sum to 1).

    python benchmarks/ebkd_degenerate.py     # after benchmarks/aggregators.py trained its teachers

Reads the teachers benchmarks/aggregators.py keeps in benchmarks/.cache, for seeds 0, 1, 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import mtkd
from mtkd.aggregation.entropy import ebkd_weights
from mtkd.models.files import load_model_file

CACHE = Path(__file__).parent / ".cache"
POOLS = {"good": ["cnn", "gru", "transformer"], "mixed": ["cnn", "gru", "transformer", "linear", "permuted"]}


def earlier_ebkd_weights(teacher_logits: torch.Tensor) -> torch.Tensor:
    """The entropy aggregator before the fix: [K, B, C] -> [B, K], shares clamped at 1e-12."""
    logq = torch.log_softmax(teacher_logits, dim=-1)
    entropy = -(logq.exp() * logq).sum(-1).t()  # [B, K]
    share = entropy / entropy.sum(1, keepdim=True).clamp_min(1e-12)
    return (1.0 - share) / (teacher_logits.shape[0] - 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--unlabeled", type=int, default=25000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fidelity_ebkd_degenerate.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = mtkd.load_dataset("mnist1d", num_samples=5000, seed=0, unlabeled=args.unlabeled)
    x = data.transfer_set().x
    lines = [f"MNIST-1D transfer set of the aggregator benchmark ({len(x):,} samples), teachers of "
             f"benchmarks/aggregators.py, seeds {args.seeds}", "",
             "| seed | pool | samples with total entropy <= 1e-12 | samples whose weights differ | "
             "max weight difference | smallest total entropy |", "|---|---|---:|---:|---:|---:|"]
    for seed in args.seeds:
        with torch.no_grad():
            logits = {}
            for name in POOLS["mixed"]:
                model = load_model_file(CACHE / f"u{args.unlabeled}" / f"seed{seed}" / f"{name}.pt")[0].eval()
                logits[name] = torch.cat([model(x[i:i + 2000]) for i in range(0, len(x), 2000)])  # [N, C]
        for pool, names in POOLS.items():
            z = torch.stack([logits[n] for n in names])  # [K, N, C]
            logq = torch.log_softmax(z, -1)
            total = (-(logq.exp() * logq).sum(-1)).sum(0)  # [N]
            difference = (ebkd_weights(z) - earlier_ebkd_weights(z)).abs().amax(1)  # [N]
            lines.append(f"| {seed} | {pool} | {int((total <= 1e-12).sum())} | {int((difference > 0).sum())} | "
                         f"{difference.max().item():.3g} | {total.min().item():.3g} |")
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text + "\n\nCommand: `python benchmarks/ebkd_degenerate.py`\n")


if __name__ == "__main__":
    main()
