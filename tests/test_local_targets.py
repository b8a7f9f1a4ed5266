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


def test_proximal_teacher_loss_is_one_minus_lambda_ce_plus_lambda_kl_to_the_student():
    t = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    s = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    loss, kl = proximal_teacher_loss(t, s, torch.tensor([0]), constraint=0.4)
    p, q = _softmax(np.array([2.0, 0.0, -1.0])), _softmax(np.array([0.0, 1.0, 0.0]))
    expected_kl = (p * np.log(p / q)).sum()
    assert kl.item() == pytest.approx(expected_kl, rel=1e-5)
    assert loss.item() == pytest.approx(0.6 * -np.log(p[0]) + 0.4 * expected_kl, rel=1e-5)
    loss.backward()
    assert s.grad is None and t.grad is not None  # the constraint moves the teacher, never the student


def test_a_saturated_teacher_still_gets_finite_gradients():
    # softmax underflows to exactly 0 for the -100 logit; p log p must not turn that into NaN
    t = torch.tensor([[100.0, -100.0, 0.0]], requires_grad=True)
    loss, _ = proximal_teacher_loss(t, torch.zeros(1, 3), torch.tensor([0]), constraint=0.4)
    loss.backward()
    assert torch.isfinite(t.grad).all()


def test_the_teacher_steps_first_and_the_student_learns_the_updated_teacher():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 4), nn.Linear(3, 4)
    s0, t0 = nn.Linear(3, 4), nn.Linear(3, 4)
    s0.load_state_dict(student.state_dict())
    t0.load_state_dict(teacher.state_dict())
    recipe = LocalTargetsRecipe(student, live_teachers={"t": teacher}, temperature=2.0, alpha=0.5,
                                options=LocalTargetsOptions(constraint=0.3, teacher_lr=0.01))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    out = recipe.step(x, y, None)
    # 1. the teacher's own Adam step on 0.7 CE + 0.3 KL(teacher || student), the student's output fixed
    opt = torch.optim.Adam(t0.parameters(), lr=0.01)
    p_log, q_log = torch.log_softmax(t0(x), -1), torch.log_softmax(s0(x).detach(), -1)
    (0.7 * nn.functional.cross_entropy(t0(x), y) + 0.3 * (p_log.exp() * (p_log - q_log)).sum(-1).mean()).backward()
    opt.step()
    assert torch.allclose(teacher.weight, t0.weight, atol=1e-6) and not torch.equal(teacher.weight, s0.weight)
    assert all(p.grad is None for p in teacher.parameters())  # nothing left for the trainer's optimizer
    # 2-3. the student's loss against the *updated* teacher: (1 - alpha) CE + alpha T^2 KL
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    target = torch.softmax(t0(x).detach() / 2.0, -1)
    log_q = torch.log_softmax(s0(x) / 2.0, -1)
    kd = 4.0 * (target * (target.log() - log_q)).sum(-1).mean()
    (0.5 * nn.functional.cross_entropy(s0(x), y) + 0.5 * kd).backward()
    assert out["kd"].item() == pytest.approx(kd.item(), rel=1e-5)
    assert torch.allclose(student.weight.grad, s0.weight.grad, atol=1e-6)
    state = recipe.state_dict()
    assert set(state) >= {"live.0.weight", "student.weight"}  # the teacher resumes with the run
    assert state["_extra_state"]["teacher_optimizer"]["state"]  # and so do its Adam moments


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
