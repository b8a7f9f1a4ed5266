"""Continual distillation (LwF, Li and Hoiem 2016, with per-task teachers): the LwF term and the
task-restricted CE against hand-computed values, task boundaries, the results, the CLI."""
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mtkd.cli import main
from mtkd.errors import ConfigError
from mtkd.recipes.continual import ContinualOptions, ContinualRecipe, check_tasks, lwf_loss


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_lwf_loss_is_the_kl_between_softened_old_class_outputs():
    student = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    previous = torch.tensor([[2.0, 0.0], [0.5, 0.5]])
    expected = 0.0
    for s, p in zip(student.numpy(), previous.numpy()):
        ps, qs = _softmax(p / 2), _softmax(s / 2)
        expected += (ps * np.log(ps / qs)).sum()
    assert lwf_loss(student, previous, 2.0).item() == pytest.approx(expected / 2, rel=1e-5)


@pytest.mark.parametrize("tasks, message", [([[0, 1], [1, 2]], "class 1 is in more than one task"),
                                            ([[0, 5]], "class 5 does not exist"), ([[0], []], "non-empty")])
def test_bad_task_lists_are_refused(tasks, message):
    with pytest.raises(ConfigError, match=message):
        check_tasks(tasks, num_classes=3)


def _train(recipe, x, y, steps):
    opt = torch.optim.SGD(recipe.student.parameters(), lr=0.5)
    states, outs = [], []
    for _ in range(steps):
        states.append({k: v.clone() for k, v in recipe.student.state_dict().items()})
        out = recipe.step(x, y, None)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        outs.append(out)
    return states, outs


def test_the_previous_version_is_the_student_as_it_ended_the_last_task():
    torch.manual_seed(0)
    student = nn.Linear(2, 3)
    recipe = ContinualRecipe(student, options=ContinualOptions(tasks=[[0, 1], [2]]), steps=4)
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    states, outs = _train(recipe, x, y, 4)
    assert [o["task"].item() for o in outs] == [0, 0, 1, 1]
    end_of_task0 = states[2]  # weights before the first step of task 1
    for k, v in recipe.previous.state_dict().items():
        assert torch.equal(v, end_of_task0[k])
    for k, v in recipe.task_ends[0].state_dict().items():
        assert torch.equal(v, end_of_task0[k])
    assert "lwf" not in outs[1] and "lwf" in outs[2]
    assert not any(p.requires_grad for p in recipe.previous.parameters())
    assert recipe.events[0]["event"] == "task_start" and recipe.events[0]["task"] == 1


def test_task_loss_is_ce_over_the_task_classes_plus_lwf_on_the_old_ones():
    student = nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]))
    recipe = ContinualRecipe(student, options=ContinualOptions(tasks=[[0, 1], [2, 3]], lwf_weight=0.5), steps=2)
    recipe.steps_done.fill_(1)  # in task 1, past its start
    recipe.task.fill_(1)
    with torch.no_grad():
        recipe.previous.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    x, y = torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([2, 0])  # class 0 is not in task 1: skipped
    out = recipe.step(x, y, None)
    # student logits of sample 0: [1, 2, 3, -1]; CE over task 1's classes [2, 3] with the label class 2
    ce = -np.log(np.exp(3.0) / (np.exp(3.0) + np.exp(-1.0)))
    # LwF on the old classes [0, 1]: student [1, 2], previous version [2, 1], T = 2
    ps, qs = _softmax(np.array([2.0, 1.0]) / 2), _softmax(np.array([1.0, 2.0]) / 2)
    lwf = (ps * np.log(ps / qs)).sum()
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["lwf"].item() == pytest.approx(lwf, rel=1e-5)
    assert out["loss"].item() == pytest.approx(ce + 0.5 * lwf, rel=1e-5)  # no teacher: CE weighs 1


def test_fine_tuning_baseline_has_no_distillation_term():
    recipe = ContinualRecipe(nn.Linear(2, 3), options=ContinualOptions(tasks=[[0, 1], [2]], distillation=False),
                             steps=2)
    recipe.steps_done.fill_(1)
    out = recipe.step(torch.randn(4, 2), torch.tensor([2, 2, 0, 1]), None)
    assert "lwf" not in out and "kd" not in out and out["loss"].item() == pytest.approx(out["ce"].item())


def _run(tmp_path, raw, name, **distill):
    raw = dict(raw)
    raw["distill"] = dict(raw["distill"], recipe="continual", steps=20, baseline=False,
                          tasks=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], **distill)
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / name
    return main(["run", str(cfg), "--out", str(out), "--no-progress"]), out


@pytest.mark.parametrize("distillation", [True, False])
def test_continual_runs_end_to_end_and_reports_every_task_after_each_task(tmp_path, tiny_raw_config, distillation):
    raw = dict(tiny_raw_config, teachers=tiny_raw_config["teachers"][:1])
    code, out = _run(tmp_path, raw, f"d{distillation}", distillation=distillation)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    c = summary["continual"]
    assert c["distillation"] is distillation
    assert [len(r) for r in c["accuracy_after_task"]] == [1, 2]  # task 0 after task 0; both after task 1
    assert all(0 <= v <= 1 for r in c["task_aware_accuracy_after_task"] for v in r)
    assert [t["name"] for t in summary["teachers"]] == (["cnn-task0", "cnn-task1"] if distillation else [])
    # calibration and agreement name the same teachers as the table (per-task teachers, not the configured one)
    teachers = [t["name"] for t in summary["teachers"]]
    if distillation:
        assert summary["agreement"]["models"][:len(teachers)] == teachers
    assert [m["name"] for m in summary["calibration"]["models"]][:len(teachers)] == teachers
    assert summary["student"]["accuracy"] >= 0 and summary["timing"]["steps"] == 20  # the contract stays
    assert "after each task" in (out / "report.md").read_text()


def test_overlapping_tasks_are_a_config_error(tmp_path, capsys, tiny_raw_config):
    raw = dict(tiny_raw_config)
    code, out = _run(tmp_path, raw, "bad")
    assert code == 0  # the default split is valid
    raw["distill"] = dict(raw["distill"], tasks=[[0, 1], [1, 2]])
    cfg = tmp_path / "overlap.yaml"
    cfg.write_text(yaml.safe_dump(dict(raw, distill=dict(raw["distill"], recipe="continual"))))
    assert main(["run", str(cfg), "--out", str(tmp_path / "overlap"), "--no-progress"]) == 2
    assert "distill.tasks: class 1 is in more than one task" in capsys.readouterr().err
    assert not (tmp_path / "overlap").exists()
