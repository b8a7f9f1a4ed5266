import json
import math

import pytest
import torch
from torch import nn

from mtkd.aggregation import AGGREGATORS, AggregatorContext, build_aggregator
from mtkd.config import TrainConfig
from mtkd.data import BatchLoader, IndexedTensorDataset
from mtkd.errors import MtkdError
from mtkd.recipes import OfflineRecipe, ScratchRecipe
from mtkd.teachers import FrozenTeacher
from mtkd.trainer import MetricsLog, Trainer, TrainingDiverged, lr_factor


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return IndexedTensorDataset(x, (x[:, 0] > 0).long())


def _offline_recipe(seed, aggregator="mean"):
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    torch.manual_seed(100)  # the same teachers in every call
    teachers = [FrozenTeacher(nn.Linear(6, 2), "t", 2), FrozenTeacher(nn.Linear(6, 2), "u", 2)]
    ctx = AggregatorContext(teachers, 2, [2.0, 1.0], _data(20, seed=5), 16)
    return OfflineRecipe(student, teachers, build_aggregator(aggregator, ctx), temperature=2.0, alpha=0.5)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=110, warmup_steps=10)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, TrainConfig(steps=100, schedule="constant")) == 1.0


class Interrupt(Exception):
    pass


def _same(a, b) -> bool:
    """Exact equality of state: tensors bit for bit, containers item by item."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("optimizer, aggregator", [("sgd", "mean")] + [("adam", a) for a in sorted(AGGREGATORS)])
def test_interrupted_training_resumes_to_identical_weights(tmp_path, optimizer, aggregator):
    cfg = TrainConfig(steps=30, batch_size=10, checkpoint_every=8, eval_every=5, log_every=3, lr=0.05,
                      optimizer=optimizer, warmup_steps=4)
    data = _data()

    full = _offline_recipe(0, aggregator)
    Trainer(full, BatchLoader(data, 10, seed=1), cfg, progress=False).fit()

    # interrupted at step 19 (last checkpoint at step 16), then resumed by fresh objects
    interrupted = _offline_recipe(0, aggregator)
    step = interrupted.step
    calls = {"n": 0}

    def failing_step(*args):
        calls["n"] += 1
        if calls["n"] == 19:
            raise Interrupt()
        return step(*args)

    interrupted.step = failing_step
    metrics = MetricsLog(tmp_path / "m.jsonl")
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        Trainer(interrupted, BatchLoader(data, 10, seed=1), cfg, checkpoint=ckpt, metrics=metrics,
                val_data=data, progress=False).fit()
    assert ckpt.exists()

    resumed = _offline_recipe(999, aggregator)  # different initial weights: all must come from the checkpoint
    trainer = Trainer(resumed, BatchLoader(data, 10, seed=1), cfg, checkpoint=ckpt, metrics=metrics,
                      val_data=data, progress=False).fit()
    assert trainer.step == 30
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert _same(a, b), name
    steps = [r["step"] for r in metrics.read() if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no step logged twice


def test_checkpoint_from_other_config_is_refused(tmp_path):
    cfg = TrainConfig(steps=4, checkpoint_every=2)
    data = _data()
    Trainer(_offline_recipe(0), BatchLoader(data, 8), cfg, checkpoint=tmp_path / "c.pt", fingerprint="a",
            progress=False).fit()
    with pytest.raises(MtkdError, match="different configuration"):
        Trainer(_offline_recipe(0), BatchLoader(data, 8), cfg, checkpoint=tmp_path / "c.pt", fingerprint="b",
                progress=False).fit()
    (tmp_path / "c.pt").write_bytes(b"truncated")
    with pytest.raises(MtkdError, match="cannot be read"):
        Trainer(_offline_recipe(0), BatchLoader(data, 8), cfg, checkpoint=tmp_path / "c.pt", fingerprint="a",
                progress=False).fit()


def test_nan_loss_stops_with_step_and_terms(tmp_path):
    class Exploding(ScratchRecipe):
        def step(self, x, y, index):
            out = super().step(x, y, index)
            if self.calls == 3:
                out["loss"] = out["loss"] * math.nan
            self.calls += 1
            return out

    recipe = Exploding(nn.Linear(6, 2))
    recipe.calls = 0
    cfg = TrainConfig(steps=10, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4 .*'ce'.*last good checkpoint: .*c.pt"):
        Trainer(recipe, BatchLoader(_data(), 8), cfg, checkpoint=tmp_path / "c.pt", progress=False).fit()


def test_trainer_never_updates_teachers_and_logs_every_term(tmp_path):
    recipe = _offline_recipe(0)
    teacher_before = {k: v.clone() for k, v in recipe.teachers[0].model.state_dict().items()}
    student_before = [p.clone() for p in recipe.student.parameters()]
    metrics = MetricsLog(tmp_path / "m.jsonl")
    Trainer(recipe, BatchLoader(_data(), 8), TrainConfig(steps=6, log_every=2), metrics=metrics,
            progress=False).fit()
    for k, v in recipe.teachers[0].model.state_dict().items():
        assert torch.equal(v, teacher_before[k])
    assert any(not torch.equal(a, b) for a, b in zip(student_before, recipe.student.parameters()))
    records = [json.loads(l) for l in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert {"loss", "ce", "kd", "weight/t", "weight/u", "lr", "stage"} <= set(records[0])


def test_generic_data_loader_batches_are_accepted():
    x = torch.randn(40, 6)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    trainer = Trainer(ScratchRecipe(nn.Linear(6, 2)), loader, TrainConfig(steps=12), progress=False).fit()
    assert trainer.step == 12


@pytest.mark.parametrize("form", ["mmkd", "bilevel", "joint"])
def test_meta_weight_network_learns_during_training(form):
    """Teacher 'good' is right, 'bad' is confidently wrong: the meta-weights must move towards 'good'."""
    from mtkd.aggregation import build_aggregator as build

    torch.manual_seed(0)
    data = _data(200)

    class Oracle(nn.Module):
        def __init__(self, flip):
            super().__init__()
            self.flip = flip

        def forward(self, x):
            y = (x[:, 0] > 0).long()
            return torch.nn.functional.one_hot((1 - y) if self.flip else y, 2).float() * 4

    teachers = [FrozenTeacher(Oracle(False), "good", 2), FrozenTeacher(Oracle(True), "bad", 2)]
    student = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    agg = build("meta", AggregatorContext(teachers, 2, None, _data(100, seed=9), 16),
                {"form": form, "meta_every": 1, "meta_lr": 0.01})
    recipe = OfflineRecipe(student, teachers, agg, temperature=2.0, alpha=0.9)
    before = [p.clone() for p in agg.net.parameters()]
    Trainer(recipe, BatchLoader(data, 20), TrainConfig(steps=60, lr=0.01, log_every=10),
          metrics=MetricsLog(None), progress=False).fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, agg.net.parameters()))
    # the recipe hands the aggregator the student's features only when it declares it needs them
    # (form 'mmkd' weighs by the teachers' logits; 'bilevel' by the student's penultimate features)
    assert (recipe.targets.features is not None) == agg.capabilities.needs_features
    with torch.no_grad():
        x = data.x[:50]
        student_logits = student(x)
        features = recipe.targets.features.value if recipe.targets.features is not None else None
        weights = agg(torch.stack([t(x) for t in teachers]), data.y[:50], 2.0,
                      student_logits=student_logits, features=features).weights
    assert weights[:, 0].mean() > 0.7  # started at 0.5 (uniform)
