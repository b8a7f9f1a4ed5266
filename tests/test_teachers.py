import math

import pytest
import torch
from torch import nn

from mtkd.errors import TeacherError
from mtkd.recipes import OfflineRecipe
from mtkd.aggregation import AggregatorContext, build_aggregator
from mtkd.teachers import FrozenTeacher


def test_frozen_teacher_is_invisible_to_optimizers_and_stays_in_eval():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    teacher = FrozenTeacher(model, "t")
    student = nn.Linear(4, 3)
    recipe = OfflineRecipe(student, [teacher], build_aggregator("mean", AggregatorContext([teacher])))
    names = [n for n, _ in recipe.named_parameters()]
    assert names == ["student.weight", "student.bias"]
    assert all(not p.requires_grad for p in model.parameters())
    recipe.train()
    x = torch.randn(5, 4)
    out = teacher(x)
    assert not out.requires_grad
    assert not model.training
    assert torch.equal(out, teacher(x))  # dropout is off: eval mode


def test_teacher_with_other_class_count_is_rejected():
    teacher = FrozenTeacher(nn.Linear(4, 5), "wide")
    with pytest.raises(TeacherError, match="'wide'.*3 classes"):
        teacher.check_classes(torch.randn(1, 4), 3)


class NanAt(nn.Module):
    def __init__(self, row):
        super().__init__()
        self.row = row

    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[self.row] = float("nan")
        return out


def test_nan_output_is_reported_with_teacher_name_and_sample_index():
    teacher = FrozenTeacher(NanAt(1), "broken", num_classes=3)
    with pytest.raises(TeacherError, match=r"'broken'.*NaN.*\[42\]"):
        teacher(torch.randn(3, 4), indices=torch.tensor([41, 42, 43]))


def test_wrong_batch_shape_is_reported():
    teacher = FrozenTeacher(nn.Linear(4, 3), "t", num_classes=3)
    with pytest.raises(TeacherError, match="shape"):
        teacher.validate(torch.zeros(2, 3), 3, None)


def test_precomputed_teacher_serves_stored_outputs_only_for_the_same_inputs():
    from mtkd.teachers import PrecomputedTeacher

    torch.manual_seed(0)
    live = FrozenTeacher(nn.Linear(4, 3), "t", 3)
    x, index = torch.randn(10, 4), torch.arange(100, 110)
    pre = PrecomputedTeacher(live, x, index, batch_size=3)
    rows = torch.tensor([2, 7, 7])
    assert torch.allclose(pre(x[rows], index[rows]), live(x[rows]), atol=1e-6)
    live.model.weight.data.zero_()  # from now on the live teacher says something else
    assert not torch.allclose(pre(x[rows], index[rows]), live(x[rows]))  # still the stored outputs
    other = torch.randn(3, 4)  # same indices, other inputs (e.g. a validation batch): live answer
    assert torch.equal(pre(other, index[rows]), live(other))
    assert torch.equal(pre(x[rows], None), live(x[rows]))
    assert torch.equal(pre(x[:2], torch.tensor([0, 1])), live(x[:2]))  # indices never stored


def test_nan_report_with_indices_on_another_device_than_outputs():
    teacher = FrozenTeacher(NanAt(0), "broken", num_classes=3)
    out = torch.zeros(2, 3)
    out[0] = float("inf")
    with pytest.raises(TeacherError, match=r"\[7\]"):
        teacher.validate(out, 2, torch.tensor([7, 8]))


class Flaky(nn.Module):
    """A linear teacher that raises on batches holding sample 0 and returns NaN on those holding sample 1."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.index = None

    def forward(self, x):
        out = self.lin(x)
        if self.index is not None and (self.index == 0).any():
            raise RuntimeError("GPU fell off the bus")
        if self.index is not None and (self.index == 1).any():
            out = out * float("nan")
        return out


class IndexAware(FrozenTeacher):
    def __call__(self, x, indices=None, check=True):
        self.model.index = indices
        return super().__call__(x, indices, check)


def test_run_teachers_stop_policy_names_the_teacher():
    from mtkd.teachers import run_teachers

    good, flaky = FrozenTeacher(nn.Linear(4, 3), "good", 3), IndexAware(Flaky(), "flaky", 3)
    with pytest.raises(TeacherError, match="teacher 'flaky' raised RuntimeError: GPU fell off the bus"):
        run_teachers([good, flaky], torch.randn(2, 4), torch.tensor([0, 5]), "stop")
    with pytest.raises(TeacherError, match="'flaky' returned NaN"):
        run_teachers([good, flaky], torch.randn(2, 4), torch.tensor([1, 5]), "stop")


def test_run_teachers_drop_policy_records_and_masks():
    from mtkd.aggregation import AggregatorContext, build_aggregator
    from mtkd.recipes.offline import TeacherTargets
    from mtkd.teachers import run_teachers

    good, flaky = FrozenTeacher(nn.Linear(4, 3), "good", 3), IndexAware(Flaky(), "flaky", 3)
    events = []
    x = torch.randn(2, 4)
    logits, alive = run_teachers([good, flaky], x, torch.tensor([1, 5]), "drop", events)
    assert alive.tolist() == [True, False] and torch.isfinite(logits).all()
    assert events[0]["teacher"] == "flaky" and "NaN" in events[0]["error"]
    # the dropped teacher gets weight 0; the target is the good teacher's alone
    agg = build_aggregator("mean", AggregatorContext([good, flaky]))
    student = torch.zeros(2, 3, requires_grad=True)
    kd, weights = TeacherTargets([good, flaky], agg, nn.Linear(4, 3), 2.0).kd(student, logits, torch.tensor([-1, -1]),
                                                                              alive)
    assert weights.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    from mtkd.losses import kd_loss
    assert torch.allclose(kd, kd_loss(student, torch.softmax(good(x) / 2.0, -1), 2.0))
    # when every teacher fails, the batch cannot be used
    with pytest.raises(TeacherError, match="every teacher failed"):
        run_teachers([flaky], x, torch.tensor([0, 5]), "drop", [])


def test_distill_with_drop_policy_finishes_and_records_each_drop(tmp_path):
    import json

    import mtkd

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    loader = mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()), 16, seed=0)
    teachers = {"good": FrozenTeacher(nn.Linear(4, 3), "good", 3), "flaky": IndexAware(Flaky(), "flaky", 3)}
    student = nn.Linear(4, 3)
    with pytest.raises(TeacherError, match="'flaky'"):
        mtkd.distill(student, teachers, loader, steps=8, progress=False)  # default policy: stop
    loader = mtkd.BatchLoader(loader.dataset, 16, seed=0)
    mtkd.distill(student, teachers, loader, steps=8, progress=False, on_teacher_error="drop", log_every=1,
                 metrics_path=tmp_path / "m.jsonl")
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    drops = [r for r in records if r.get("event") == "teacher_dropped"]
    # samples 0 and 1 are each in one batch per epoch; 8 steps of 16 over 64 samples = 2 epochs
    assert len(drops) == 4 and all(r["teacher"] == "flaky" for r in drops)
    dropped_steps = {r["step"] for r in drops}
    for r in records:
        if "loss" in r:
            assert math.isfinite(r["loss"])
            assert (r["weight/flaky"] == 0.0) == (r["step"] in dropped_steps)
