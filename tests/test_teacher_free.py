"""Tf-KD (Yuan et al., CVPR 2020): the virtual teacher against hand-computed numbers, the
self-training loss, and every mode end to end through the CLI."""
import json
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mtkd.aggregation import AggregatorContext, build_aggregator
from mtkd.cli import main
from mtkd.recipes.teacher_free import (TeacherFreeOptions, TeacherFreeRecipe, virtual_kd_loss, virtual_target,
                                       virtual_teacher)
from mtkd.teachers import FrozenTeacher


def test_virtual_teacher_is_the_hand_made_distribution():
    p = virtual_teacher(torch.tensor([2, 0]), num_classes=4, correct_probability=0.7)
    # a = 0.7 on the label, (1 - 0.7) / 3 = 0.1 on each other class
    expected = [[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]]
    assert torch.allclose(p, torch.tensor(expected), atol=1e-7)


def test_virtual_target_softens_the_distribution_at_temperature_t():
    got = virtual_target(torch.tensor([1]), num_classes=3, correct_probability=0.8, temperature=2.0)
    # p^d = [0.1, 0.8, 0.1]; softmax(p^d / 2) = exp([0.05, 0.4, 0.05]) / sum
    e = [math.exp(0.05), math.exp(0.4), math.exp(0.05)]
    expected = [v / sum(e) for v in e]
    assert torch.allclose(got, torch.tensor([expected]), atol=1e-6)


def test_virtual_kd_loss_matches_a_hand_computed_kl_and_skips_unlabeled_samples():
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [3.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2, -1])  # the last sample is unlabeled: it has no virtual teacher
    t, a = 2.0, 0.9
    total = 0.0
    for z, y in [(np.array([1.0, 0.0, -1.0]), 0), (np.array([0.5, 0.5, 0.5]), 2)]:
        pd = np.full(3, 0.05)
        pd[y] = 0.9
        target = np.exp(pd / t) / np.exp(pd / t).sum()
        q = np.exp(z / t) / np.exp(z / t).sum()
        total += float((target * np.log(target / q)).sum())
    assert virtual_kd_loss(logits, labels, a, t, soften_student=True).item() == pytest.approx(total / 2, rel=1e-5)


def test_virtual_mode_default_is_the_authors_loss_kd_regularization():
    # authors' code: (1 - alpha) CE + alpha * multiplier * KLDivLoss()(log_softmax(z), softmax(p^d / T)),
    # KLDivLoss() averaging over batch x classes; a = 0.99; the student is not softened
    student = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]]))
    recipe = TeacherFreeRecipe(student, [], None, temperature=20.0, alpha=0.1,
                               options=TeacherFreeOptions(mode="virtual", multiplier=100.0))
    x, y = torch.tensor([[1.0, 2.0], [-1.0, 0.5]]), torch.tensor([1, 0])
    out = recipe.step(x, y, None)
    kl_elements, ce = [], []
    for z, label in [(np.array([1.0, 2.0, -0.5]), 1), (np.array([-1.0, 0.5, -0.75]), 0)]:
        pd = np.full(3, 0.01 / 2)
        pd[label] = 0.99
        target = np.exp(pd / 20) / np.exp(pd / 20).sum()
        log_q = z - np.log(np.exp(z).sum())  # T = 1 for the student
        kl_elements += list(target * (np.log(target) - log_q))
        ce.append(-log_q[label])
    kd = 100.0 * np.mean(kl_elements)  # mean over 2 samples x 3 classes
    assert out["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.9 * np.mean(ce) + 0.1 * kd, rel=1e-5)
    samples = TeacherFreeRecipe(student, [], None, temperature=20.0, alpha=0.1,
                                options=TeacherFreeOptions(mode="virtual", multiplier=100.0, kl_mean="samples"))
    assert samples.step(x, y, None)["kd"].item() == pytest.approx(3 * kd, rel=1e-5)


class Const(nn.Module):
    def __init__(self, row):
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, x):
        return self.row.expand(len(x), -1)


def test_self_mode_loss_is_ce_plus_t2_kl_to_the_trained_copy():
    student = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]]))
    teacher = FrozenTeacher(Const([2.0, 0.0, 1.0]), "self", 3)
    agg = build_aggregator("mean", AggregatorContext([teacher], 3))
    recipe = TeacherFreeRecipe(student, [teacher], agg, temperature=2.0, alpha=0.6,
                               options=TeacherFreeOptions(mode="self"))
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([1])
    out = recipe.step(x, y, None)
    z = np.array([1.0, 2.0, -0.5])  # student logits
    ce = -np.log(np.exp(z[1]) / np.exp(z).sum())
    p = np.exp(np.array([2.0, 0.0, 1.0]) / 2) / np.exp(np.array([2.0, 0.0, 1.0]) / 2).sum()
    q = np.exp(z / 2) / np.exp(z / 2).sum()
    kd = 4 * (p * np.log(p / q)).sum() / 3  # the authors' KLDivLoss(): mean over batch x classes (C = 3)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.4 * ce + 0.6 * kd, rel=1e-5)


def test_self_and_reverse_modes_need_a_teacher():
    with pytest.raises(Exception, match="needs a teacher"):
        TeacherFreeRecipe(nn.Linear(2, 3), [], None, options=TeacherFreeOptions(mode="self"))


def _run(tmp_path, raw, mode, **distill):
    raw = dict(raw)
    raw["distill"] = dict(raw["distill"], recipe="teacher_free", mode=mode, steps=12, baseline=False, **distill)
    cfg = tmp_path / f"{mode}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / mode
    code = main(["run", str(cfg), "--out", str(out), "--no-progress"])
    return code, out


@pytest.mark.parametrize("mode, teachers", [("self", ["self"]), ("virtual", []), ("reverse", ["cnn", "mlp"])])
def test_each_mode_runs_end_to_end_through_the_cli(tmp_path, tiny_raw_config, mode, teachers):
    code, out = _run(tmp_path, tiny_raw_config, mode, correct_probability=0.8)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "teacher_free" and summary["timing"]["steps"] == 12
    assert [t["name"] for t in summary["teachers"]] == teachers
    assert (out / "teachers" / "self.pt").exists() == (mode == "self")  # the trained copy of the student
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kd = [r["kd"] for r in records if r["stage"] == "distill" and "kd" in r]
    assert kd and all(v > 0 for v in kd)


def test_reverse_mode_without_teachers_is_a_config_error(tmp_path, capsys, tiny_raw_config):
    raw = dict(tiny_raw_config, teachers=[])
    code, out = _run(tmp_path, raw, "reverse")
    assert code == 2
    assert "mode 'reverse' needs the weaker model(s) as teachers" in capsys.readouterr().err
    assert not out.exists()
