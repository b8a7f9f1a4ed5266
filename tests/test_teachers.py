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
