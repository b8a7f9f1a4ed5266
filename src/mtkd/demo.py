"""``mtkd demo``: the main job on embedded data (MNIST-1D, generated offline).

Three teachers of different architectures (1-D CNN, GRU, transformer) are trained on the
labeled split; an MLP student is trained twice from the same initialization: from
scratch on the labels, and distilled from the teachers on the labels plus an unlabeled
pool (MNIST-1D generates any number of samples offline). The same pipeline as ``mtkd run``.
"""
from __future__ import annotations

import copy

DEMO_CONFIG = {
    "seed": 0,
    "data": {"name": "mnist1d", "num_samples": 5000, "unlabeled": 20000},
    "teachers": [
        {"name": "cnn", "arch": "cnn1d", "channels": 25, "train": {"steps": 6000}},
        {"name": "gru", "arch": "gru", "hidden": 64, "train": {"steps": 3000}},
        {"name": "transformer", "arch": "transformer", "train": {"steps": 3000, "lr": 3e-3, "warmup_steps": 200}},
    ],
    "student": {"arch": "mlp", "hidden": [100, 100]},
    "distill": {"recipe": "offline", "aggregator": "mean", "temperature": 4.0, "alpha": 0.9,
                "steps": 6000, "batch_size": 100, "lr": 1e-2, "baseline": True},
    "output": {"dir": "runs/demo"},
}

# --fast: the same pipeline, smaller, for smoke tests (under a minute on 2 cores)
FAST_OVERRIDES = {
    "data": {"num_samples": 3000, "unlabeled": 5000},
    "teacher_steps": 800,
    "distill": {"steps": 1500, "eval_every": 250, "checkpoint_every": 250},
    "output": {"dir": "runs/demo-fast"},
}


def demo_config(fast: bool = False) -> dict:
    raw = copy.deepcopy(DEMO_CONFIG)
    if fast:
        raw["data"].update(FAST_OVERRIDES["data"])
        for t in raw["teachers"]:
            t["train"]["steps"] = FAST_OVERRIDES["teacher_steps"]
            t["train"]["warmup_steps"] = min(t["train"].get("warmup_steps", 0), 100)
        raw["distill"].update(FAST_OVERRIDES["distill"])
        raw["output"].update(FAST_OVERRIDES["output"])
    return raw
