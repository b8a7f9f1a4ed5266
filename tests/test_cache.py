import gc
import json
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from mtkd.cache import CacheError, CacheOptions, build_cache, compress_topk, expand_topk, open_cached_teachers, \
    open_entry, topk_error
from mtkd.data import IndexedTensorDataset
from mtkd.errors import ConfigError, TeacherError
from mtkd.teachers import FrozenTeacher, run_teachers


def _data(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return IndexedTensorDataset(x, y)


def _models(k=2, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)) for _ in range(k)]


def _loaders(models):
    return [(f"t{i}", (lambda m=m: m)) for i, m in enumerate(models)]


def test_round_trip_equals_live_outputs(tmp_path):
    data, models = _data(), _models()
    report = build_cache(_loaders(models), data, tmp_path, CacheOptions(batch_size=16))
    assert report.built == ["t0", "t1"] and len(report.entries) == 2
    cached = open_cached_teachers(report, data)
    live = [FrozenTeacher(m, f"t{i}", 4) for i, m in enumerate(models)]
    rows = torch.tensor([3, 0, 49, 17, 17])
    x, index = data.x[rows], data.index[rows]
    got, alive = run_teachers(cached, x, index)
    want, _ = run_teachers(live, x, index)
    assert got.shape == (2, 5, 4) and bool(alive.all())
    assert torch.allclose(got, want, atol=1e-6)
    assert cached[0].name == "t0" and cached[0].num_classes == 4
    cached[0].check_classes(x, 4)
    with pytest.raises(TeacherError, match="4 classes"):
        cached[0].check_classes(x, 5)


def test_an_entry_another_run_holds_is_waited_for_then_reused(tmp_path):
    """Two runs sharing a cache: while one builds or checks an entry the other waits (one line
    naming the holder), then reuses the entry instead of failing or building it twice."""
    import threading

    from mtkd.rundir import exclusive

    data, models = _data(), _models(k=1)
    first = build_cache(_loaders(models), data, tmp_path)
    entry = first.entries[0].path
    taken = threading.Event()

    def other_run():  # its own open file description of the lock, held for half a second
        held = exclusive(entry.parent / f".{entry.name}.lock", "test")
        taken.set()
        threading.Event().wait(0.5)
        held.release()

    holder = threading.Thread(target=other_run)
    holder.start()
    taken.wait()
    lines = []
    try:
        again = build_cache(_loaders(models), data, tmp_path, log=lines.append)
    finally:
        holder.join()
    assert again.built == [] and again.entries[0].path == entry
    assert any("is in use by process" in line and "waiting" in line for line in lines)
    assert lines[-1].startswith("teacher cache: reusing")


def test_reused_when_nothing_changed_rebuilt_when_teacher_or_data_changes(tmp_path):
    data, models = _data(), _models()
    first = build_cache(_loaders(models), data, tmp_path)
    again = build_cache(_loaders(models), data, tmp_path)
    assert again.built == [] and [e.path for e in again.entries] == [e.path for e in first.entries]
    with torch.no_grad():
        models[1][0].weight[0, 0] += 1e-3  # a retrained / changed teacher
    changed = build_cache(_loaders(models), data, tmp_path)
    assert changed.built == ["t1"] and changed.entries[1].path != first.entries[1].path
    cached = open_cached_teachers(changed, data)
    live = FrozenTeacher(models[1], "t1", 4)
    assert torch.allclose(cached[1](data.x[:4], data.index[:4]), live(data.x[:4]), atol=1e-6)
    other = _data(seed=1)  # another data set: new entries for every teacher
    assert build_cache(_loaders(models), other, tmp_path).built == ["t0", "t1"]


def test_other_inputs_go_to_the_live_model_or_are_refused(tmp_path):
    data, models = _data(), _models(1)
    report = build_cache(_loaders(models), data, tmp_path)
    val = torch.randn(3, 6)  # a validation batch whose indices collide with transfer-set indices
    with_model = open_cached_teachers(report, data, models)[0]
    assert torch.allclose(with_model(val, torch.tensor([0, 1, 2])), models[0](val), atol=1e-6)
    only_cache = open_cached_teachers(report, data)[0]
    with pytest.raises(TeacherError, match="only available from the cache"):
        only_cache(val, torch.tensor([0, 1, 2]))
    with pytest.raises(TeacherError, match="only available from the cache"):
        only_cache(data.x[:2], torch.tensor([60, 61]))  # indices never cached
    x = data.x[:2].clone()
    assert torch.equal(only_cache(x, data.index[:2]), only_cache.lookup(data.index[:2]))
    x[0, 0] += 1.0  # same tensor changed in place (e.g. augmented): the memo must not serve it
    with pytest.raises(TeacherError):
        only_cache(x, data.index[:2])


def test_truncated_or_corrupted_file_is_detected_and_rebuilt(tmp_path):
    data, models = _data(), _models(1)
    entry = build_cache(_loaders(models), data, tmp_path).entries[0]
    logits_file = entry.path / "logits.npy"
    good = logits_file.read_bytes()
    logits_file.write_bytes(good[:-7])  # truncated
    with pytest.raises(CacheError, match="truncated"):
        open_entry(entry.path)
    messages = []
    report = build_cache(_loaders(models), data, tmp_path, log=messages.append)
    assert report.built == ["t0"] and any("truncated" in m and "rebuilding" in m for m in messages)
    assert logits_file.read_bytes() == good
    damaged = bytearray(good)
    damaged[-1] ^= 0xFF  # same size, one bit pattern changed
    logits_file.write_bytes(bytes(damaged))
    with pytest.raises(CacheError, match="corrupted"):
        open_entry(entry.path)
    assert build_cache(_loaders(models), data, tmp_path).built == ["t0"]
    (entry.path / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="manifest.json is damaged"):
        open_entry(entry.path)


def test_teachers_are_loaded_one_at_a_time(tmp_path):
    data, alive = _data(), []

    def loader(i):
        def load():
            gc.collect()
            alive.append(sum(r() is not None for r in refs))  # teachers still in memory when loading this one
            m = _models(1, seed=i)[0]
            refs.append(weakref.ref(m))
            return m
        return load

    refs: list = []
    build_cache([(f"t{i}", loader(i)) for i in range(3)], data, tmp_path)
    assert alive == [0, 0, 0]


def test_augmented_pipelines_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="augmentation"):
        build_cache(_loaders(_models(1)), _data(), tmp_path, augmentation="random crop")


def test_float16_storage_is_close_and_half_the_size(tmp_path):
    data, models = _data(), _models(1)
    full = build_cache(_loaders(models), data, tmp_path / "a").entries[0]
    half = build_cache(_loaders(models), data, tmp_path / "b", CacheOptions(dtype="float16")).entries[0]
    assert half.arrays["logits"].dtype == np.float16
    assert half.manifest["files"]["logits.npy"]["bytes"] < full.manifest["files"]["logits.npy"]["bytes"]
    assert np.allclose(half.arrays["logits"], full.arrays["logits"], atol=1e-2)


def test_topk_compression_matches_hand_computed_values():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    values, classes, tail = compress_topk(logits, 2)
    p = np.exp([2.0, 1.0, 0.0, -1.0])
    p /= p.sum()
    assert classes.tolist() == [[0, 1]]
    assert np.allclose(values.float().numpy(), np.log(p[:2])[None], atol=1e-3)  # float16 log-probs
    assert np.isclose(float(tail[0]), p[2] + p[3], atol=1e-6)
    restored = expand_topk(values, classes, tail, 4)
    want = np.log([p[0], p[1], (p[2] + p[3]) / 2, (p[2] + p[3]) / 2])
    assert np.allclose(restored.numpy()[0], want, atol=1e-3)
    err = topk_error(logits, restored, 1.0)
    q = np.exp(want)
    assert np.isclose(err["kl_mean"], float((p * np.log(p / q)).sum()), atol=1e-3)
    assert err["top1_agreement"] == 1.0


def test_topk_cache_reports_its_error(tmp_path):
    data, models = _data(), _models(1)
    report = build_cache(_loaders(models), data, tmp_path, CacheOptions(storage="topk", topk=2, temperature=2.0))
    entry = report.entries[0]
    err = json.loads((entry.path / "manifest.json").read_text())["topk_error"]
    assert err["temperature"] == 2.0 and 0 < err["kl_mean"] <= err["kl_max"] and 0 < err["top1_agreement"] <= 1
    cached = open_cached_teachers(report, data)[0]
    out = cached(data.x[:5], data.index[:5])
    assert out.shape == (5, 4)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-2)  # a normalized distribution
    live = models[0](data.x[:5])
    assert torch.equal(out.argmax(1), live.argmax(1))


def _cli(capsys, *args):
    """The command line, in process (a subprocess costs seconds of start-up): (exit code, stdout, stderr)."""
    from mtkd.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_pipeline_with_cache_matches_live_teachers(tiny_raw_config, tmp_path, capsys):
    import yaml

    from mtkd import config as config_mod
    from mtkd.pipeline import run_pipeline

    tiny_raw_config["distill"]["baseline"] = False
    live = run_pipeline(config_mod.parse_config(tiny_raw_config), tmp_path / "live", progress=False, log=lambda m: None)
    raw = {**tiny_raw_config, "distill": {**tiny_raw_config["distill"], "cache": "auto"}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "cached"
    code, stdout, stderr = _cli(capsys, "cache", str(path), "--out", str(out), "--no-progress")
    assert code == 0, stderr
    assert stdout.count(" built ") == 2 and "teacher_cache" in stdout
    messages = []
    cached = run_pipeline(config_mod.load_config(path), out, progress=False, log=messages.append)
    assert any("reusing" in m for m in messages)  # mtkd run read what mtkd cache built
    # two entries (beside them each entry's hidden lock file, .NAME-KEY.lock)
    assert len([p for p in (out / "teacher_cache").iterdir() if not p.name.startswith(".")]) == 2
    # the same teachers were trained (same seeds)
    assert [t["accuracy"] for t in live["teachers"]] == [t["accuracy"] for t in cached["teachers"]]
    assert abs(live["student"]["accuracy"] - cached["student"]["accuracy"]) <= 0.03


def test_cache_always_refuses_a_recipe_that_cannot_use_it(tiny_raw_config, tmp_path, capsys):
    import yaml

    raw = {**tiny_raw_config, "distill": {**tiny_raw_config["distill"], "recipe": "scratch", "cache": "always"}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    code, _, stderr = _cli(capsys, "run", str(path), "--no-progress")
    assert code == 2 and "distill.cache" in stderr and not (tmp_path / "run").exists()
    code, _, stderr = _cli(capsys, "cache", str(path), "--no-progress")
    assert code == 2 and "nothing to cache" in stderr
    # features reads the teachers' hidden layers through hooks, which cached logits never fire
    raw["distill"]["recipe"] = "features"
    path.write_text(yaml.safe_dump(raw))
    code, _, stderr = _cli(capsys, "run", str(path), "--no-progress")
    assert code == 2 and "distill.cache" in stderr and not (tmp_path / "run").exists()
