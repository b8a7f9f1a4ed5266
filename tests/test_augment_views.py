"""Augmented image pipelines (torchvision.transforms.v2 by name) and the view cache: bit-exact
resume, views regenerated exactly, bad transforms refused before anything is written."""
import json

import pytest
import torch
import yaml

from mtkd.cli import main
from optional_libs import usable


pytestmark = pytest.mark.skipif(not usable("torchvision"), reason="torchvision not usable here (extra: vision)")
pytest.importorskip("sklearn")

AUGMENT = [{"RandomResizedCrop": {"size": [8, 8], "scale": [0.6, 1.0], "antialias": True}},
           {"RandomHorizontalFlip": {}}]


def _config(tmp_path, **distill):
    return {
        "seed": 0,
        "data": {"name": "digits", "augment": AUGMENT},
        "teachers": [{"name": "cnn", "arch": "cnn2d", "channels": [8], "train": {"steps": 20}},
                     {"name": "mlp", "arch": "mlp", "hidden": [32], "train": {"steps": 20}}],
        "student": {"arch": "mlp", "hidden": [16]},
        "distill": {"steps": 30, "batch_size": 32, "checkpoint_every": 10, "eval_every": 10, "log_every": 5,
                    **distill},
        "output": {"dir": str(tmp_path / "run"), "plots": False, "tracking": []},
    }


def _write(tmp_path, raw, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_each_sample_view_depends_on_seed_epoch_index_only():
    from mtkd.data.augment import Augment

    aug = Augment(AUGMENT, (1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    idx = torch.arange(6)
    a = aug(x, idx, seed=0, stream=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    b = aug(x[[5, 2, 0]], idx[[5, 2, 0]], seed=0, stream=3)  # another batch order
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(a[[5, 2, 0]], b)
    assert not torch.equal(a, aug(x, idx, seed=0, stream=4))  # another epoch, other views
    assert not torch.equal(a, x)


@pytest.mark.parametrize("cache_views", [0, 3])
def test_augmented_run_resumes_bit_exact(tmp_path, capsys, cache_views):
    from fault_injection import interrupted_at

    raw = _config(tmp_path, cache=("always" if cache_views else "off"), cache_views=cache_views)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(full), "--no-progress"]) == 0
    with interrupted_at(17):
        assert main(["run", str(_write(tmp_path, raw)), "--out", str(resumed), "--no-progress"]) == 130
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(resumed), "--no-progress"]) == 0
    a = torch.load(full / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "student.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if cache_views:
        # the entries (beside them, each entry's hidden lock files)
        entries = [p for p in (full / "teacher_cache").iterdir() if not p.name.startswith(".")]
        assert len(entries) == 2
        manifest = json.loads((entries[0] / "manifest.json").read_text())
        assert manifest["views"] == 3 and len(manifest["view_check"]) == 4


def test_view_cache_serves_exactly_the_recorded_views(tmp_path):
    """Every teacher's stored output on a drawn view equals the live teacher on the regenerated view."""
    from mtkd.cache.build import CacheOptions
    from mtkd.cache.views import ViewSource, view_cache
    from mtkd.data.augment import Augment
    from mtkd.teachers.frozen import FrozenTeacher

    torch.manual_seed(0)
    x, index = torch.rand(10, 1, 8, 8), torch.arange(10)
    nets = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)) for _ in range(2)]
    source = ViewSource(x, index, Augment(AUGMENT, (1, 8, 8)), seed=7, views=4)
    teachers = view_cache([FrozenTeacher(n, f"t{i}", 3) for i, n in enumerate(nets)], source, tmp_path,
                          CacheOptions(batch_size=8), torch.device("cpu"))
    batch = source.draw(x[[3, 1, 8]], index[[3, 1, 8]], loader_seed=0, epoch=2)
    rows = source.last[1]
    assert torch.equal(batch, source.generate(rows))
    for net, teacher in zip(nets, teachers):
        with torch.no_grad():
            assert torch.allclose(teacher(batch, index[[3, 1, 8]]), net(batch), atol=1e-6)
        other = torch.rand(3, 1, 8, 8)  # not a drawn batch: the live model answers
        with torch.no_grad():
            assert torch.allclose(teacher(other, index[[3, 1, 8]]), net(other), atol=1e-6)


def test_changed_views_are_refused_when_the_entry_is_opened(tmp_path):
    from mtkd.cache.build import CacheOptions
    from mtkd.cache.store import CacheError
    from mtkd.cache.views import ViewSource, view_cache
    from mtkd.data.augment import Augment
    from mtkd.teachers.frozen import FrozenTeacher

    x, index = torch.rand(6, 1, 8, 8), torch.arange(6)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    source = ViewSource(x, index, Augment(AUGMENT, (1, 8, 8)), seed=7, views=2)
    view_cache([FrozenTeacher(net, "t", 3)], source, tmp_path, CacheOptions(), torch.device("cpu"))
    entry = next(p for p in tmp_path.iterdir() if not p.name.startswith("."))  # not a hidden lock file
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["view_check"]["0"] = "0" * 64  # as if a torchvision update changed what a seed gives
    (entry / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="regenerated views differ"):
        view_cache([FrozenTeacher(net, "t", 3)], source, tmp_path, CacheOptions(verify="size"), torch.device("cpu"))


@pytest.mark.parametrize("augment,distill,message", [
    ([{"RandomFlipFlop": {}}], {}, "torchvision.transforms.v2 has no transform 'RandomFlipFlop'"),
    ([{"RandomHorizontalFlip": {"probability": 0.5}}], {}, "RandomHorizontalFlip"),
    ([{"RandomResizedCrop": {"size": 16}}], {}, "turn \\[1, 8, 8\\] images into \\[1, 16, 16\\]"),
    (AUGMENT, {"cache": "always"}, "set distill.cache_views"),
])
def test_bad_augmentation_exits_2_before_writing(tmp_path, capsys, augment, distill, message):
    raw = _config(tmp_path, **distill)
    raw["data"]["augment"] = augment
    out = tmp_path / "bad"
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and __import__("re").search(message, err), err
    assert not out.exists()


def test_hf_dataset_on_disk_with_an_image_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    import numpy as np
    from PIL import Image

    from mtkd.data import load_dataset

    rng = np.random.default_rng(0)

    def split(n):
        images = [Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)) for _ in range(n)]
        features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
        return datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(n)]}, features=features)

    datasets.DatasetDict({"train": split(8), "test": split(4)}).save_to_disk(str(tmp_path / "ds"))
    data = load_dataset("hf_disk", path=str(tmp_path / "ds"), image="img", size=[8, 8], val_fraction=0.25,
                        augment=[{"RandomHorizontalFlip": {}}])
    assert data.input_shape == (3, 8, 8) and data.class_names == ["a", "b"]
    assert len(data.train) == 6 and len(data.test) == 4
    assert 0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1
    flipped = data.augment(data.train.x, data.train.index, seed=0, stream=0)
    assert all(torch.equal(f, x) or torch.equal(f, x.flip(-1)) for f, x in zip(flipped, data.train.x))


def test_under_torchrun_only_rank_0_builds_the_view_cache(tmp_path, monkeypatch):
    """Rank 0 builds the entries before the barrier; another rank waits at the barrier and then
    opens (verifies, never rebuilds) what rank 0 wrote."""
    from mtkd import distributed
    from mtkd.cache.build import CacheOptions
    from mtkd.cache.views import ViewSource, view_cache
    from mtkd.data.augment import Augment
    from mtkd.teachers.frozen import FrozenTeacher

    x, index = torch.rand(6, 1, 8, 8), torch.arange(6)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    source = ViewSource(x, index, Augment(AUGMENT, (1, 8, 8)), seed=7, views=2)
    events = []
    monkeypatch.setattr(distributed, "barrier", lambda: events.append("barrier"))
    logged = []
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    view_cache([FrozenTeacher(net, "t", 3)], source, tmp_path, CacheOptions(), torch.device("cpu"), logged.append)
    entry = next(p for p in tmp_path.iterdir() if not p.name.startswith("."))
    built_at = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    assert events == ["barrier"] and logged  # rank 0 built (and logged) before the barrier

    monkeypatch.setattr(distributed, "is_main", lambda: False)
    teachers = view_cache([FrozenTeacher(net, "t", 3)], source, tmp_path, CacheOptions(), torch.device("cpu"),
                          lambda m: pytest.fail(f"another rank logged: {m}"))
    assert events == ["barrier", "barrier"]
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == built_at  # opened, not rebuilt
    batch = source.draw(x[[1, 4]], index[[1, 4]], loader_seed=0, epoch=0)
    with torch.no_grad():
        assert torch.allclose(teachers[0](batch, index[[1, 4]]), net(batch), atol=1e-6)
