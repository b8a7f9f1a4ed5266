"""Teachers score the student during distillation: agreement numbers against hand counts, and
the records and plot a run with distill.monitor_every writes."""
import json

import pytest
import torch
import yaml
from torch import nn

from mtkd.cli import main
from mtkd.data import IndexedTensorDataset
from mtkd.monitoring import TeacherMonitor
from mtkd.teachers import FrozenTeacher


class Table(nn.Module):
    """Predicts a fixed class per sample: x[:, 0] holds the sample's row in ``preds``."""

    def __init__(self, preds, classes=3):
        super().__init__()
        self.preds, self.classes = torch.tensor(preds), classes

    def forward(self, x):
        rows = x[:, 0].long()
        return 5.0 * nn.functional.one_hot(self.preds[rows], self.classes).float()


def test_agreement_with_each_teacher_and_the_ensemble_matches_hand_counts():
    x = torch.arange(6).float().unsqueeze(1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    data = IndexedTensorDataset(x, labels)
    student = Table([0, 1, 2, 2, 2, 1])  # right on samples 0, 1, 2: accuracy 3/6
    a = FrozenTeacher(Table([0, 1, 2, 0, 1, 2]), "a")  # agrees with the student on 0, 1, 2: 3/6
    b = FrozenTeacher(Table([0, 0, 2, 2, 2, 0]), "b")  # agrees on 0, 2, 3, 4: 4/6
    c = FrozenTeacher(Table([1, 1, 2, 2, 2, 2]), "c")  # agrees on 1, 2, 3, 4: 4/6
    # ensemble (mean of probabilities, one confident vote each) = the majority of a, b, c:
    # 0: a0 b0 c1 -> 0; 1: a1 b0 c1 -> 1; 2: 2; 3: a0 b2 c2 -> 2; 4: a1 b2 c2 -> 2; 5: a2 b0 c2 -> 2
    # student 0 1 2 2 2 1 against ensemble 0 1 2 2 2 2: agree on 5 of 6
    out = TeacherMonitor(student, [a, b, c], data)()
    assert out["monitor/accuracy"] == pytest.approx(3 / 6)
    assert out["monitor/agree/a"] == pytest.approx(3 / 6)
    assert out["monitor/agree/b"] == pytest.approx(4 / 6)
    assert out["monitor/agree/c"] == pytest.approx(4 / 6)
    assert out["monitor/agree/ensemble"] == pytest.approx(5 / 6)
    # per true class: class 0 (samples 0, 3) agree 2/2; class 1 (1, 4) 2/2; class 2 (2, 5) 1/2
    assert out["monitor/by_class"] == pytest.approx([1.0, 1.0, 0.5])


def test_a_run_with_monitor_every_logs_agreement_and_plots_it(tmp_path, tiny_raw_config):
    raw = dict(tiny_raw_config)
    raw["distill"] = dict(raw["distill"], steps=20, monitor_every=5, baseline=True)
    raw["output"] = dict(raw["output"], plots=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    monitored = [r for r in records if "monitor/accuracy" in r]
    assert [r["step"] for r in monitored] == [5, 10, 15, 20]
    assert all(r["stage"] == "distill" for r in monitored)  # not the from-scratch baseline
    assert {"monitor/agree/cnn", "monitor/agree/mlp", "monitor/agree/ensemble"} <= set(monitored[-1])
    assert all(0 <= r["monitor/agree/cnn"] <= 1 for r in monitored)
    assert (out / "plots" / "monitor.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "plots/monitor.png" in report and "Where the student disagrees with its teachers" in report
    assert len(monitored[-1]["monitor/by_class"]) == 10
