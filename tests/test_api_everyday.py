"""The Python API in everyday use: threads, any kind of nn.Module as a teacher, settings it cannot honour."""
import io

import pytest
import torch
from torch import nn

import mtkd
from test_api import _loader  # the same tiny linear-rule data


class _ThreadProbe(nn.Module):
    """A teacher that records torch's thread count while it runs."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 2)
        self.seen = set()

    def forward(self, x):
        self.seen.add(torch.get_num_threads())
        return self.lin(x)


@pytest.mark.parametrize("threads, expected", [(None, 1), (2, 2)])
def test_distill_runs_with_the_threads_asked_for_and_restores_the_callers(threads, expected):
    loader, _ = _loader()
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        probe = _ThreadProbe()
        kwargs = {} if threads is None else {"threads": threads}
        mtkd.distill(nn.Linear(8, 2), [probe], loader, steps=3, progress=False, **kwargs)
        assert probe.seen == {expected}  # default: the CLI's one thread
        assert torch.get_num_threads() == 3  # the caller's setting is back
        probe.seen.clear()
        mtkd.distill(nn.Linear(8, 2), [probe], loader, steps=2, progress=False, threads=0)
        assert probe.seen == {3}  # 0: torch's (the caller's) setting is left alone
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("key, value", [("batch_size", 64), ("baseline", True), ("cache", "auto")])
def test_api_refuses_settings_it_cannot_honour(key, value):
    loader, _ = _loader()
    with pytest.raises(mtkd.ConfigError, match=f"distill.{key}"):
        mtkd.distill(nn.Linear(8, 2), [nn.Linear(8, 2)], loader, steps=2, progress=False, **{key: value})


class _DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 2)

    def forward(self, x):
        return {"logits": self.lin(x), "hidden": x}


class _HfLikeOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 2)

    def forward(self, x):
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.lin(x))


def _scripted():
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)  # what a user gets back from a .pt file


@pytest.mark.parametrize("make", [_scripted, _DictOut, _HfLikeOut], ids=["scriptmodule", "dict", "hf_modeloutput"])
def test_any_module_is_a_teacher(make):
    if make is _HfLikeOut:
        pytest.importorskip("transformers")
    loader, (x, y) = _loader()
    torch.manual_seed(0)
    teacher = make()
    student = nn.Linear(8, 2)
    mtkd.distill(student, [teacher], loader, steps=5, progress=False)
    # the teacher's logits reached the loss: the student moved, the teacher did not learn
    assert all(not p.requires_grad for p in teacher.parameters())
    frozen = mtkd.FrozenTeacher(teacher, "t")
    out = frozen(x[:4])
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_a_teacher_in_train_mode_is_used_in_eval_mode():
    loader, (x, _) = _loader()
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 2)).train()
    mtkd.distill(nn.Linear(8, 2), [teacher], loader, steps=2, progress=False)
    frozen = mtkd.FrozenTeacher(teacher, "t")
    assert torch.equal(frozen(x), frozen(x))  # dropout off: the same logits twice
    assert not teacher.training


def test_a_teacher_output_without_logits_is_named():
    class NoLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 2)

        def forward(self, x):
            return {"scores": self.lin(x)}

    loader, _ = _loader()
    with pytest.raises(mtkd.TeacherError, match="'teacher0'.*without 'logits'"):
        mtkd.distill(nn.Linear(8, 2), [NoLogits()], loader, steps=2, progress=False)
