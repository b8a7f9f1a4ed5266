"""Choosing which teachers to distill from (``mtkd select``).

Greedy forward selection on a labeled validation split, as in Caruana, Niculescu-Mizil,
Crew and Ksikes, "Ensemble Selection from Libraries of Models" (ICML 2004), here without
replacement and with a diversity term; the score and the stopping rule are our heuristic:

    score(S) = accuracy(S) + diversity_weight * diversity(S)

accuracy(S): validation accuracy of the mean of the members' probabilities (each class
renormalised over the teachers that cover it, as in training); diversity(S): the mean over
pairs of members of the disagreement measure of Kuncheva and Whitaker, "Measures of
Diversity in Classifier Ensembles" (Machine Learning, 2003): the fraction of samples one
member classifies correctly and the other does not (0 for a single teacher).

The first teacher is the most accurate alone. Each round adds the candidate with the
highest score(S + k) among those that (1) are accurate alone: at least ``accuracy_floor``
(0.8) times the current ensemble's accuracy, (2) do not lower the ensemble's accuracy,
(3) lower the ensemble's *calibrated* validation log-loss and (4) raise the score by more
than ``min_gain``. The student learns the ensemble's probabilities, so a teacher must make them
better, not only different. Calibrated: the mean probability's log is divided by the
temperature (from a grid of 41 values, 0.1 to 10, log-spaced) that minimises the log-loss,
as in temperature scaling (Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural
Networks", ICML 2017). Without it, averaging an overconfident teacher with a near-uniform
one lowers the log-loss merely by softening it, and a useless teacher got in (we measured
this in benchmarks/selection.py); even calibrated, a random network's outputs can act as a
smoothing that lowers the log-loss on a small validation split, hence condition (1).
Conditions (1) to (3) stop a confidently wrong or a near-random teacher, which disagrees a
lot, from buying its way in with diversity. Selection stops when no candidate qualifies or at ``max_teachers``. Ties go to
the teacher listed first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .aggregation.coverage import ensemble_mean
from .aggregation.coverage import class_masks
from .config import apply_overrides, load_yaml, parse_config, resolve_paths
from .errors import ConfigError
from .io import write_yaml
from .pipeline import prepare
from .rundir import check_new_file
from .teachers.kinds import allow_code
from .trainer import predict_logits


@dataclass
class Decision:
    name: str
    kept: bool
    reason: str


def ensemble_accuracy(probs: torch.Tensor, labels: torch.Tensor, members: Sequence[int],
                      masks: torch.Tensor | None = None) -> float:
    """labels [N]: accuracy of the members' mean probability."""
    return float((ensemble_mean(probs, members, masks).argmax(-1) == labels).float().mean())


TEMPERATURES = torch.logspace(-1, 1, 41)  # 0.1 .. 10, for the calibrated log-loss


def ensemble_log_loss(probs: torch.Tensor, labels: torch.Tensor, members: Sequence[int],
                      masks: torch.Tensor | None = None, calibrated: bool = False) -> float:
    """Mean over samples of -log(mean probability of the label) (probabilities floored at 1e-12);
    ``calibrated``: the lowest such loss of softmax(log(mean) / T) over T in TEMPERATURES."""
    log_mean = torch.log(ensemble_mean(probs, members, masks).clamp_min(1e-12))  # [N, C]
    if not calibrated:
        return float(-log_mean.gather(1, labels[:, None]).mean())
    return min(float(torch.nn.functional.cross_entropy(log_mean / t, labels)) for t in TEMPERATURES)


def disagreement(correct: torch.Tensor, members: Sequence[int]) -> float:
    """correct [K, N] bool: mean over member pairs of the fraction of samples where exactly one is right."""
    members = list(members)
    pairs = [(i, j) for a, i in enumerate(members) for j in members[a + 1:]]
    if not pairs:
        return 0.0
    return sum(float((correct[i] != correct[j]).float().mean()) for i, j in pairs) / len(pairs)


def select_teachers(probs: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                    masks: torch.Tensor | None = None, max_teachers: int | None = None,
                    diversity_weight: float = 0.1, min_gain: float = 0.0,
                    accuracy_floor: float = 0.8) -> tuple[list[int], list[Decision]]:
    """Greedy forward selection (see the module docstring). probs [K, N, C] validation
    probabilities, labels [N]. Returns (chosen teacher indices in the order added, a decision
    with its reason for every teacher, in config order)."""
    k = probs.shape[0]
    correct = probs.argmax(-1) == labels  # [K, N]
    alone = correct.float().mean(1)  # [K] each teacher's own accuracy
    limit = k if max_teachers is None else max(1, min(max_teachers, k))

    def score(members) -> tuple[float, float, float, float]:
        acc, div = ensemble_accuracy(probs, labels, members, masks), disagreement(correct, members)
        return acc + diversity_weight * div, acc, div, ensemble_log_loss(probs, labels, members, masks, calibrated=True)

    first = int(torch.argmax(alone))  # argmax returns the first of equal maxima
    chosen = [first]
    reasons = {first: f"kept 1st: the most accurate alone ({100 * alone[first]:.1f} %)"}
    current = score(chosen)
    while len(chosen) < limit:
        trials = {c: score(chosen + [c]) for c in range(k) if c not in chosen}
        eligible = {c: s for c, s in trials.items() if float(alone[c]) >= accuracy_floor * current[1]
                    and s[0] - current[0] > min_gain and s[1] >= current[1] and s[3] < current[3]}
        if not eligible:
            break
        best = max(eligible, key=lambda c: (eligible[c][0], -c))
        s = eligible[best]
        reasons[best] = (f"kept {_ordinal(len(chosen) + 1)}: ensemble accuracy {100 * current[1]:.1f} -> "
                         f"{100 * s[1]:.1f} %, disagreement {current[2]:.3f} -> {s[2]:.3f}, "
                         f"calibrated log-loss {current[3]:.3f} -> {s[3]:.3f}, score +{s[0] - current[0]:.4f}")
        chosen.append(best)
        current = s
    for c in range(k):
        if c in reasons:
            continue
        s = score(chosen + [c])
        if len(chosen) >= limit:
            why = f"at most {limit} teacher(s) asked for (--max)"
        elif float(alone[c]) < accuracy_floor * current[1]:
            why = (f"less accurate alone than {accuracy_floor} x the ensemble's "
                   f"{100 * current[1]:.1f} % = {100 * accuracy_floor * current[1]:.1f} %")
        elif s[1] < current[1]:
            why = f"it would lower the ensemble's accuracy {100 * current[1]:.1f} -> {100 * s[1]:.1f} %"
        elif s[3] >= current[3]:
            why = f"it would not lower the ensemble's calibrated log-loss ({current[3]:.3f} -> {s[3]:.3f})"
        else:
            why = (f"it would change the score by {s[0] - current[0]:+.4f} (accuracy {100 * current[1]:.1f} -> "
                   f"{100 * s[1]:.1f} %, disagreement {current[2]:.3f} -> {s[2]:.3f}), not more than {min_gain}")
        reasons[c] = f"dropped ({100 * alone[c]:.1f} % alone): {why}"
    decisions = [Decision(names[c], c in chosen, reasons[c]) for c in range(k)]
    return chosen, decisions


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def select_from_config(config_path, overrides: Sequence[str] = (), out=None, max_teachers: int | None = None,
                       diversity_weight: float = 0.1, allow_pickle: bool = False, log=print,
                       accuracy_floor: float = 0.8, overwrite: bool = False) -> tuple[list[str], str]:
    """``mtkd select``: load the config's teachers (each must be trained already: a checkpoint
    or a ``kind:`` file), choose a subset on the validation split, print why each teacher was
    kept or dropped, and write a config that uses the chosen subset. Returns (names, path)."""
    from pathlib import Path


    raw = apply_overrides(load_yaml(config_path), list(overrides))  # written back with its relative paths
    # input paths in the file are taken from its folder, --set values from the current directory
    cfg = parse_config(apply_overrides(resolve_paths(load_yaml(config_path), Path(config_path).parent),
                                       list(overrides)))
    if len(cfg.teachers) < 2:
        raise ConfigError("teachers: mtkd select needs at least two teachers to choose from")
    untrained = [t.name for t in cfg.teachers if t.checkpoint is None and t.external is None]
    if untrained:
        raise ConfigError(f"teachers: {untrained} have no trained weights; mtkd select compares trained teachers: "
                          "give each a 'checkpoint' (e.g. teachers/<name>.pt of a finished mtkd run) or a 'kind'")
    if allow_pickle:
        allow_code(cfg)
    out = Path(out) if out else Path(config_path).with_name(Path(config_path).stem + "-selected.yaml")
    check_new_file(out, overwrite)  # before any work: never replace a file mtkd was not told to
    prep = prepare(cfg)
    val = prep.data.val
    if val is None or len(val) == 0:
        raise ConfigError("data.val_fraction: mtkd select needs a labeled validation split; set val_fraction > 0")
    models = [plan.model for plan in prep.teachers]
    probs = torch.stack([torch.softmax(predict_logits(m, val.x, "cpu"), -1) for m in models])  # [K, N, C]
    names = [t.name for t in cfg.teachers]
    chosen, decisions = select_teachers(probs, val.y, names, class_masks(models, prep.num_classes),
                                        max_teachers, diversity_weight, accuracy_floor=accuracy_floor)
    log(f"validation split: {len(val)} samples; score = accuracy + {diversity_weight} * disagreement, among "
        f"teachers accurate alone (>= {accuracy_floor} x the ensemble) that keep its accuracy and lower its "
        "calibrated log-loss")
    width = max(len(n) for n in names)
    for d in decisions:
        log(f"  {d.name.ljust(width)}  {d.reason}")
    keep = {names[i] for i in chosen}
    raw = dict(raw)
    raw["teachers"] = [t for t in raw["teachers"] if t.get("name") in keep]
    parse_config(raw)  # the written config is valid
    write_yaml(out, raw)
    log(f"kept {len(chosen)} of {len(names)} teachers: {', '.join(names[i] for i in chosen)}; wrote {out}")
    return [names[i] for i in chosen], str(out)
