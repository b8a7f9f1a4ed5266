"""ProKT local targets (Shi et al., ECML-PKDD 2021): the teachers' proximal loss by hand, which
side each term trains, and the recipe through the CLI."""
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mtkd.cli import main
from mtkd.recipes.local_targets import LocalTargetsOptions, LocalTargetsRecipe, proximal_teacher_loss


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_proximal_teacher_loss_is_ce_plus_lambda_kl_to_the_student():
    t = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    s = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    loss, kl = proximal_teacher_loss(t, s, torch.tensor([0]), constraint=0.4)
    p, q = _softmax(np.array([2.0, 0.0, -1.0])), _softmax(np.array([0.0, 1.0, 0.0]))
    expected_kl = (p * np.log(p / q)).sum()
    assert kl.item() == pytest.approx(expected_kl, rel=1e-5)
    assert loss.item() == pytest.approx(-np.log(p[0]) + 0.4 * expected_kl, rel=1e-5)
    loss.backward()
    assert s.grad is None and t.grad is not None  # the constraint moves the teacher, never the student


def test_a_saturated_teacher_still_gets_finite_gradients():
    # softmax underflows to exactly 0 for the -100 logit; p log p must not turn that into NaN
    t = torch.tensor([[100.0, -100.0, 0.0]], requires_grad=True)
    loss, _ = proximal_teacher_loss(t, torch.zeros(1, 3), torch.tensor([0]), constraint=0.4)
    loss.backward()
    assert torch.isfinite(t.grad).all()


def test_each_term_trains_only_its_own_network():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 4), nn.Linear(3, 4)
    recipe = LocalTargetsRecipe(student, live_teachers={"t": teacher}, temperature=2.0, alpha=0.5,
                                options=LocalTargetsOptions(constraint=0.0))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    out = recipe.step(x, y, None)
    out["loss"].backward()
    # with constraint 0 the teacher's gradient is its own CE's, whatever the student does
    expected = nn.Linear(3, 4)
    expected.load_state_dict(teacher.state_dict())
    nn.functional.cross_entropy(expected(x), y).backward()
    assert torch.allclose(teacher.weight.grad, expected.weight.grad, atol=1e-6)
    # the student's gradient is its own loss's: (1 - alpha) CE + alpha T^2 KL(teacher target || student)
    copy = nn.Linear(3, 4)
    copy.load_state_dict(student.state_dict())
    target = torch.softmax(teacher(x).detach() / 2.0, -1)
    log_q = torch.log_softmax(copy(x) / 2.0, -1)
    kd = 4.0 * (target * (target.log() - log_q)).sum(-1).mean()
    (0.5 * nn.functional.cross_entropy(copy(x), y) + 0.5 * kd).backward()
    assert torch.allclose(student.weight.grad, copy.weight.grad, atol=1e-6)
    assert set(recipe.state_dict()) >= {"live.0.weight", "student.weight"}  # the teacher resumes with the run


def test_local_targets_runs_through_the_cli_and_reports_its_teachers(tmp_path, tiny_raw_config):
    raw = dict(tiny_raw_config)
    raw["distill"] = dict(raw["distill"], recipe="local_targets", steps=12, baseline=False, constraint=0.5)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [t["name"] for t in summary["local_targets"]["teachers"]] == ["cnn", "mlp"]
    assert summary["local_targets"]["constraint"] == 0.5 and summary["timing"]["steps"] == 12
    assert not (tmp_path / "run" / "teachers").exists()  # nothing was trained beforehand
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("constraint/cnn" in r for r in records)


def test_local_targets_without_teachers_is_a_config_error(tmp_path, capsys, tiny_raw_config):
    raw = dict(tiny_raw_config, teachers=[])
    raw["distill"] = dict(raw["distill"], recipe="local_targets")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "trains its teachers alongside the student" in capsys.readouterr().err


def test_the_api_trains_the_teachers_with_the_student():
    import mtkd

    torch.manual_seed(0)
    data = mtkd.IndexedTensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))
    teacher, student = nn.Linear(6, 3), nn.Linear(6, 3)
    before = teacher.weight.detach().clone()
    mtkd.distill(student, {"t": teacher}, mtkd.BatchLoader(data, 16), recipe="local_targets", steps=5, progress=False)
    assert not torch.equal(before, teacher.weight) and teacher.weight.requires_grad
