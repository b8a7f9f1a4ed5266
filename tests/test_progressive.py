"""Pro-KD (Rezagholizadeh et al., COLING 2022): the schedule against hand-computed values, the
checkpoint walk, teacher checkpoints kept by the pipeline, and the API path."""
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import mtkd
from mtkd.aggregation import AggregatorContext, build_aggregator
from mtkd.cli import main
from mtkd.recipes.progressive import (ProgressiveOptions, ProgressiveRecipe, annealed_temperature,
                                      checkpoint_index, load_trajectory, phase_of)
from mtkd.teachers import FrozenTeacher


def test_schedule_helpers_match_hand_computed_values():
    # 10 steps over 3 phases: steps 0-3 -> 0, 4-6 -> 1, 7-9 -> 2 (step * 3 // 10)
    assert [phase_of(s, 10, 3) for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert phase_of(12, 10, 3) == 2  # past the end: the last phase
    # a teacher with 2 checkpoints followed over 4 phases: 0, 0, 1, 1
    assert [checkpoint_index(p, 4, 2) for p in range(4)] == [0, 0, 1, 1]
    # T from 4 down to 1 over 4 phases: 4, 3, 2, 1
    assert [annealed_temperature(p, 4, 4.0, 1.0) for p in range(4)] == [4.0, 3.0, 2.0, 1.0]
    assert annealed_temperature(0, 1, 4.0, 1.0) == 4.0


class Const(nn.Module):
    def __init__(self, row):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(row))

    def forward(self, x):
        return self.w.expand(len(x), -1)


def _kl(p_logits, q_logits, t):
    p = np.exp(np.array(p_logits) / t) / np.exp(np.array(p_logits) / t).sum()
    q = np.exp(np.array(q_logits) / t) / np.exp(np.array(q_logits) / t).sum()
    return t * t * float((p * np.log(p / q)).sum())


def test_the_student_distills_from_each_checkpoint_in_order_with_the_annealed_temperature():
    rows = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]  # checkpoint 1, checkpoint 2, trained teacher
    final = FrozenTeacher(Const(rows[2]), "t", 3)
    agg = build_aggregator("mean", AggregatorContext([final], 3))
    student = Const([0.5, 0.0, -0.5])
    recipe = ProgressiveRecipe(student, [final], agg, temperature=4.0, alpha=1.0, options=ProgressiveOptions(),
                               trajectories={"t": [Const(rows[0]), Const(rows[1])]}, steps=6)
    x, y = torch.zeros(2, 1), torch.tensor([0, 1])
    # 6 steps, 3 phases of 2 steps; T = 4, 2.5, 1
    for step, (row, t) in enumerate([(0, 4.0), (0, 4.0), (1, 2.5), (1, 2.5), (2, 1.0), (2, 1.0)]):
        out = recipe.step(x, y, None)
        assert out["temperature"].item() == t and out["phase"].item() == row
        assert out["kd"].item() == pytest.approx(_kl(rows[row], [0.5, 0.0, -0.5], t), rel=1e-4), step
    assert int(recipe.steps_done) == 6 and "steps_done" in recipe.state_dict()


def test_without_checkpoints_the_recipe_refuses_to_start():
    t = FrozenTeacher(Const([1.0, 0.0]), "t", 2)
    with pytest.raises(mtkd.MtkdError, match="needs the checkpoints each teacher saved"):
        ProgressiveRecipe(Const([0.0, 0.0]), [t], None, trajectories={}, steps=4)


def _config(tmp_path, raw, **distill):
    raw = dict(raw)
    raw["distill"] = dict(raw["distill"], recipe="progressive", steps=12, baseline=False, **distill)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def test_the_pipeline_keeps_teacher_checkpoints_and_walks_them(tmp_path, tiny_raw_config):
    raw = dict(tiny_raw_config)
    raw["teachers"] = [dict(raw["teachers"][0], train=dict(raw["teachers"][0]["train"], save_every=10)),
                       raw["teachers"][1]]
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, raw, checkpoints=5)), "--out", str(out), "--no-progress"]) == 0
    # cnn: save_every 10 of 30 steps; mlp: checkpoints 5 -> every 6 steps
    assert sorted(p.name for p in (out / "teachers" / "cnn").iterdir()) == [
        "step-000010.pt", "step-000020.pt", "step-000030.pt"]
    assert len(list((out / "teachers" / "mlp").glob("step-*.pt"))) == 5
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["stage"] == "distill" and "phase" in r]
    # 5 phases (mlp: 4 checkpoints before its last step + the trained teacher) over 12 steps
    assert [r["phase"] for r in steps] == sorted(r["phase"] for r in steps) and steps[-1]["phase"] == 4
    assert steps[-1]["temperature"] == pytest.approx(1.0)
    # a teacher reused from that run by checkpoint file brings its trajectory along
    reuse = dict(raw, teachers=[{"name": "cnn", "checkpoint": str(out / "teachers" / "cnn.pt")}])
    assert main(["run", str(_config(tmp_path, reuse)), "--out", str(tmp_path / "reuse"), "--no-progress"]) == 0


def test_a_checkpoint_teacher_without_its_trajectory_is_a_config_error(tmp_path, capsys, tiny_raw_config):
    model = mtkd.build_model("mlp", (40,), 10, hidden=[8])
    mtkd.save_model_file(tmp_path / "lonely.pt", model, mtkd.config._model({"arch": "mlp", "hidden": [8]}, "m"),
                         (40,), 10)
    raw = dict(tiny_raw_config, teachers=[{"name": "lonely", "checkpoint": str(tmp_path / "lonely.pt")}])
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, raw)), "--out", str(out), "--no-progress"]) == 2
    assert "follows the checkpoints saved while the teacher trained" in capsys.readouterr().err
    assert not out.exists()


def test_api_train_with_snapshots_then_distill_progressively(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    data = mtkd.IndexedTensorDataset(x, y)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    mtkd.train(teacher, mtkd.BatchLoader(data, 16), steps=20, save_every=5, snapshot_dir=tmp_path / "t",
               progress=False)
    trajectory = load_trajectory(tmp_path / "t", teacher)
    assert len(trajectory) == 4  # steps 5, 10, 15, 20
    assert torch.equal(trajectory[-1][0].weight, teacher[0].weight)  # the last one is the trained teacher
    assert not torch.equal(trajectory[0][0].weight, teacher[0].weight)
    student = nn.Linear(6, 3)
    mtkd.distill(student, {"t": teacher}, mtkd.BatchLoader(data, 16), recipe="progressive", steps=8,
                 trajectories={"t": trajectory[:-1]}, progress=False)
    assert all(torch.isfinite(p).all() for p in student.parameters())
