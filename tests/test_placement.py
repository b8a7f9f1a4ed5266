"""Where teachers run: a device of their own (teachers[i].device) or in turns on the compute device
(distill.teachers_on_device), plus distill.compile and distill.channels_last plumbing.

On the CPU a move is a no-op, so these tests check the bookkeeping (which teacher is on the device
when it runs, how many moves, in which order, that leaving restores the CPU copy without a copy)
and that results do not change; the CUDA test at the end runs only where torch sees a GPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import mtkd
from mtkd.config import parse_config
from mtkd.data import BatchLoader, IndexedTensorDataset
from mtkd.errors import ConfigError
from mtkd.recipes.base import TrainedTeacher
from mtkd.recipes.build import freeze
from mtkd.teachers import FrozenTeacher, run_teachers
from mtkd.teachers.placement import DeviceTurns, place_teachers, visiting


class Watched(nn.Module):
    """A linear teacher that records, at each forward, whether its turn manager has it on the device
    and how many modules are there."""

    def __init__(self, seed: int, turns_of=lambda: None):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(6, 3)
        self.register_buffer("shift", torch.randn(3))
        self.turns_of, self.seen = turns_of, []

    def forward(self, x):
        turns = self.turns_of()
        if turns is not None:
            self.seen.append((any(m is self for m in turns.resident), len(turns.resident)))
        return self.lin(x) + self.shift


def test_turns_keep_at_most_slots_and_restore_the_cpu_copy_without_copying():
    models = [nn.Linear(4, 2) for _ in range(3)]
    turns = DeviceTurns(2, "cpu")
    for m in models:
        turns.add(m)
    home = [m.weight.data_ptr() for m in models]
    turns.acquire(models[0]), turns.acquire(models[1]), turns.acquire(models[2])
    assert [id(m) for m in turns.resident] == [id(models[1]), id(models[2])]  # models[0] left: least recent
    assert turns.moves == 3
    turns.acquire(models[2])  # already there: no move
    assert turns.moves == 3
    assert turns.order(models) == [2, 1, 0]  # on the device first, most recently used first
    turns.release_all()
    assert turns.resident == [] and [m.weight.data_ptr() for m in models] == home


def test_slots_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        DeviceTurns(0, "cpu")


def test_run_teachers_in_turns_gives_the_same_logits_with_fewer_moves():
    turns = DeviceTurns(1, "cpu")
    models = [Watched(i, lambda: turns) for i in range(3)]
    plain = [FrozenTeacher(Watched(i), f"t{i}") for i in range(3)]
    taking = [FrozenTeacher(m, f"t{i}").take_turns(turns) for i, m in enumerate(models)]
    x = torch.randn(5, 6)
    for batch in range(2):
        want, _ = run_teachers(plain, x, None)
        got, alive = run_teachers(taking, x, None)
        assert torch.equal(got, want) and bool(alive.all())  # outputs in the given order
    # every forward ran with its own model on the device and one model there
    assert all(seen == [(True, 1)] * 2 for seen in (m.seen for m in models))
    assert turns.moves == 3 + 2  # the second batch starts with the teacher still on the device


def test_place_teachers_puts_the_rest_in_turns_only_when_they_do_not_fit():
    teachers = [FrozenTeacher(nn.Linear(2, 2), f"t{i}") for i in range(3)]
    assert place_teachers(teachers, torch.device("cpu"), on_device=3) is None  # room for all: beside the student
    assert all(t.turns is None for t in teachers)
    own = FrozenTeacher(nn.Linear(2, 2), "own", device="cpu")
    turns = place_teachers([*teachers, own], torch.device("cpu"), on_device=2)
    assert turns is not None and turns.slots == 2
    assert all(t.turns is turns for t in teachers) and own.turns is None and own.placement == torch.device("cpu")


def test_freeze_reads_a_trained_teachers_device():
    frozen = freeze([TrainedTeacher("a", "mlp", nn.Linear(3, 2), 1.0, "cpu"), TrainedTeacher("b", "mlp", nn.Linear(3, 2))],
                    torch.device("cpu"), torch.randn(1, 3), 2)
    assert frozen[0].placement == torch.device("cpu") and frozen[1].placement is None


def test_visiting_on_the_cpu_runs_where_the_weights_are():
    with visiting(nn.Linear(2, 2), "cpu") as where:
        assert where == torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    teachers = {f"t{i}": nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)) for i in range(3)}
    return IndexedTensorDataset(x, y), teachers


def _student():
    torch.manual_seed(1)
    return nn.Linear(6, 3)


@pytest.mark.parametrize("cache", ["off", "auto"])
def test_distill_with_teachers_in_turns_equals_teachers_beside_the_student(tiny_task, tmp_path, cache):
    data, teachers = tiny_task
    runs = []
    for on_device in (0, 1):
        student = _student()
        mtkd.distill(student, teachers, BatchLoader(data, 16, seed=0), steps=6, progress=False, cache=cache,
                     cache_dir=tmp_path / f"cache{on_device}", teachers_on_device=on_device, val_data=(data.x, data.y))
        runs.append(student.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_config_checks_teacher_devices_and_turns():
    base = {"teachers": [{"name": "a", "arch": "mlp"}]}
    spec = parse_config({**base, "teachers": [{"name": "a", "arch": "mlp", "device": "cuda:1"}]}).teachers[0]
    assert spec.device == "cuda:1"
    assert parse_config(base).to_dict()["teachers"][0].get("device") is None  # unset: not written
    for bad in ("gpu", "cuda:x", 3):
        with pytest.raises(ConfigError, match=r"teachers\[0\]\.device"):
            parse_config({**base, "teachers": [{"name": "a", "arch": "mlp", "device": bad}]})
    with pytest.raises(ConfigError, match="teachers_on_device"):
        parse_config({**base, "distill": {"teachers_on_device": -1}})


def test_prepare_refuses_a_gpu_that_is_not_there():
    from mtkd.pipeline import check_placement

    cfg = parse_config({"teachers": [{"name": "a", "arch": "mlp", "device": f"cuda:{torch.cuda.device_count()}"}]})
    with pytest.raises(ConfigError, match=r"teachers\[0\]\.device: 'cuda:\d+', but torch sees \d+ CUDA device"):
        check_placement(cfg, (40,), torch.device("cpu"))


def test_channels_last_is_for_images_only():
    from mtkd.pipeline import check_placement

    cfg = parse_config({"teachers": [{"name": "a", "arch": "mlp"}], "distill": {"channels_last": True}})
    with pytest.raises(ConfigError, match="channels_last: for image inputs"):
        check_placement(cfg, (40,), torch.device("cpu"))
    check_placement(cfg, (3, 8, 8), torch.device("cpu"))


def test_channels_last_trains_a_conv_student_like_the_default(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 6, 6, generator=g), torch.randint(0, 2, (32,), generator=g)
    data = IndexedTensorDataset(x, y)
    weights = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        mtkd.train(student, BatchLoader(data, 8, seed=0), steps=4, progress=False, channels_last=channels_last)
        weights.append(student[0].weight.detach())
    assert weights[1].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-5, atol=1e-6)


def test_compile_refuses_without_a_compiler(monkeypatch):
    from mtkd import compiling

    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="distill.compile: torch.compile on the CPU needs a C.. compiler"):
        compiling.check_compile(torch.device("cpu"))


def test_compiled_student_trains_like_the_eager_one_and_comes_back_plain(monkeypatch):
    """distill.compile through mtkd.train: the student's forward is compiled (traced by TorchDynamo,
    which counts its frames) and the module comes back plain. The test uses torch.compile's 'eager'
    backend: inductor's C++ build of even a linear layer takes a minute on a busy 2-core machine;
    the default backend is what scripts/gpu_check.sh runs."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from mtkd import compiling

    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": "eager"})
    torch._dynamo.reset()
    counters.clear()
    g = torch.Generator().manual_seed(0)
    data = IndexedTensorDataset(torch.randn(32, 5, generator=g), torch.randint(0, 2, (32,), generator=g))
    weights = []
    for compile in (False, True):
        torch.manual_seed(0)
        student = nn.Linear(5, 2)
        mtkd.train(student, BatchLoader(data, 32, seed=0), steps=2, progress=False, compile=compile, eval_every=100)
        assert getattr(student, "_compiled_call_impl", None) is None  # handed back uncompiled
        assert list(student.state_dict()) == ["weight", "bias"]
        weights.append(student.weight.detach())
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled run did go through TorchDynamo
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (written, run by scripts/gpu_check.sh)")
def test_turns_on_cuda_hold_at_most_one_teacher_in_device_memory():
    turns = DeviceTurns(1, "cuda")
    models = [Watched(i) for i in range(3)]
    teachers = [FrozenTeacher(m, f"t{i}").take_turns(turns) for i, m in enumerate(models)]
    x = torch.randn(5, 6, device="cuda")
    want = torch.stack([FrozenTeacher(Watched(i), "plain")(x.cpu()) for i in range(3)])  # same seeds, on the CPU
    got, _ = run_teachers(teachers, x, None)
    assert got.device.type == "cuda" and torch.allclose(got.cpu(), want, atol=1e-6)
    assert sum(model_on_gpu(m) for m in models) == 1
    turns.release_all()
    assert sum(model_on_gpu(m) for m in models) == 0 and models[0].lin.weight.is_pinned()


def model_on_gpu(model: nn.Module) -> bool:
    return next(model.parameters()).is_cuda
