"""Distributed offline distillation: two CPU processes (gloo, launched by torchrun) learn what one does."""
import json
import subprocess
import sys

import yaml


def test_two_processes_match_one_process(tmp_path):
    cfg = {
        "seed": 0,
        "data": {"name": "mnist1d", "num_samples": 500, "unlabeled": 300},
        "teachers": [{"name": "cnn", "arch": "cnn1d", "channels": 8, "train": {"steps": 60, "eval_every": 30}}],
        "student": {"arch": "mlp", "hidden": [32]},
        "distill": {"steps": 60, "batch_size": 50, "eval_every": 30, "log_every": 15, "checkpoint_every": 30,
                    "cache": "auto"},
        "output": {"plots": False},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    one = subprocess.run([sys.executable, "-m", "mtkd", "run", str(path), "--out", str(tmp_path / "one"),
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "mtkd", "run", str(path), "--out", str(tmp_path / "two"), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test accuracy") == 1  # only rank 0 prints and writes
    a = json.loads((tmp_path / "one" / "summary.json").read_text())
    b = json.loads((tmp_path / "two" / "summary.json").read_text())
    # the same global batches, the gradient averaged over two halves: the same model up to float rounding
    assert abs(a["teachers"][0]["accuracy"] - b["teachers"][0]["accuracy"]) <= 0.03
    assert abs(a["student"]["accuracy"] - b["student"]["accuracy"]) <= 0.03

    def logged(run):
        records = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["stage"], r["step"]) for r in records if "loss" in r]

    assert logged("two") == logged("one") and len(logged("two")) == 6  # each record written once, by rank 0
    # built once, by rank 0 (beside it the entry's hidden lock file)
    assert len([p for p in (tmp_path / "two" / "teacher_cache").iterdir() if not p.name.startswith(".")]) == 1
