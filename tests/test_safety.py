"""Nothing lost, nothing run without consent, every input bounded: run-directory ownership,
the --allow-code opt-in, and property-based fuzzers over each class of input (YAML, --set,
ranges, data files, model files, markers). Each fuzzer asserts the one contract: the input is
accepted, or refused with one MtkdError line -- never another exception."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkd import rundir
from mtkd.cli import main
from mtkd.config import apply_overrides, parse_config
from mtkd.errors import ConfigError, MtkdError
from mtkd.limits import SEED_MAX, check_seed
from mtkd.safe_yaml import load_yaml_text

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def one_line(exc: BaseException) -> bool:
    return bool(str(exc)) and "\n" not in str(exc).strip()


# ------------------------------------------------------------------ YAML and --set

@st.composite
def yaml_texts(draw):
    """Plain YAML, alias bombs, deep nesting, huge numbers and strings, and arbitrary text."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        fan, levels = draw(st.integers(2, 12)), draw(st.integers(2, 10))
        lines = ["a0: &a0 [x" + ", x" * (fan - 1) + "]"]
        lines += [f"a{j}: &a{j} [" + ", ".join([f"*a{j - 1}"] * fan) + "]" for j in range(1, levels)]
        return "\n".join(lines)
    if kind == 1:
        d = draw(st.integers(1, 2000))
        return "x: " + draw(st.sampled_from(["[", "{a: "])) * d
    if kind == 2:
        return f"seed: {draw(st.integers(-10 ** 200, 10 ** 200))}"
    if kind == 3:
        return "s: " + "y" * draw(st.integers(0, 100_000))
    return draw(st.text(max_size=300))


@FUZZ
@given(yaml_texts())
def test_yaml_loads_or_fails_with_one_line_within_limits(text):
    try:
        value = load_yaml_text(text)
    except ConfigError as exc:
        assert one_line(exc), str(exc)
    else:  # what loads stays small: the limits hold for the constructed value too
        assert len(json.dumps(value, default=str)) < 20 * 2**20


def test_alias_bomb_is_refused_before_it_expands():
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{j}: &a{j} [{', '.join([f'*a{j - 1}'] * 10)}]\n" for j in range(1, 10))
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml_text(bomb)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["seed", "data.num_samples", "data.seed", "distill.threads",
                                           "student.hidden", "teachers.0.hidden", "distill.batch_size",
                                           "data.unlabeled", "teachers.0.channels"]),
                          st.one_of(st.integers(-10 ** 30, 10 ** 30), st.text(max_size=20),
                                    st.lists(st.integers(-10 ** 20, 10 ** 20), max_size=2),
                                    st.floats(allow_nan=True, allow_infinity=True))), min_size=1, max_size=3))
def test_set_values_and_ranges_are_checked_before_use(edits):
    """Any --set of a size, seed or thread count: refused with one line, or within the documented
    ranges and small enough for this machine (checked without allocating)."""
    from mtkd.limits import check_config, check_model_size
    from mtkd.models import build_model

    base = {"data": {"name": "mnist1d", "num_samples": 100}, "teachers": [{"name": "t", "arch": "mlp"}],
            "student": {"arch": "mlp"}}
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).removesuffix(chr(10) + '...').strip()}"
                 for k, v in edits]
    try:
        cfg = parse_config(apply_overrides(base, overrides))
        check_config(cfg)
        check_model_size(lambda: build_model(cfg.student, (40,), 10), "student")
    except MtkdError as exc:
        assert one_line(exc), str(exc)
    else:
        assert 0 <= cfg.seed <= SEED_MAX and 0 <= cfg.distill.threads <= 1024


@FUZZ
@given(st.integers(-2 ** 80, 2 ** 80))
def test_seed_range(seed):
    if 0 <= seed <= SEED_MAX:
        check_seed(seed)
        np.random.default_rng(seed)  # numpy takes it
    else:
        with pytest.raises(ConfigError, match="seed: an integer from 0"):
            check_seed(seed)


# ------------------------------------------------------------------ data and model files

def _load(raw):
    from mtkd.data import load_data

    return load_data(parse_config({"data": raw}).data)


@FUZZ
@given(st.sampled_from(["csv", "npz", "parquet"]), st.binary(max_size=2000), st.binary(max_size=500))
def test_random_bytes_in_every_data_format_is_one_line(tmp_path_factory, fmt, a, b):
    tmp = tmp_path_factory.mktemp("d")
    files = {"csv": ("tr.csv", "te.csv"), "npz": ("d.npz",), "parquet": ("tr.parquet", "te.parquet")}[fmt]
    for name, data in zip(files, (a, b)):
        (tmp / name).write_bytes(data)
    raw = {"name": fmt, "path": str(tmp / files[0])} if fmt == "npz" else \
        {"name": fmt, "train": str(tmp / files[0]), "test": str(tmp / files[1])}
    with pytest.raises(MtkdError) as info:
        _load(raw)
    assert one_line(info.value), str(info.value)


@FUZZ
@given(st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                                   st.text(max_size=3)), min_size=1, max_size=5), min_size=1, max_size=20))
def test_csv_tables_load_with_finite_inputs_and_labels_in_range_or_are_refused(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("csv")
    width = max(len(r) for r in rows)
    header = ",".join([f"f{i}" for i in range(width - 1)] + ["label"])
    text = header + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    (tmp / "tr.csv").write_text(text, errors="surrogateescape")
    (tmp / "te.csv").write_text(text, errors="surrogateescape")
    try:
        data = _load({"name": "csv", "train": str(tmp / "tr.csv"), "test": str(tmp / "te.csv"), "val_fraction": 0})
    except MtkdError as exc:
        assert one_line(exc), str(exc)
    else:
        assert torch.isfinite(data.train.x).all() and int(data.train.y.max()) < data.num_classes


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_as_any_model_file_is_one_line(tmp_path_factory, data):
    from mtkd.models.files import read_model_file
    from mtkd.teachers.onnx_model import OnnxTeacher
    from mtkd.teachers.torchscript_model import TorchScriptTeacher

    path = tmp_path_factory.mktemp("m") / "model.bin"
    path.write_bytes(data)
    for load in (read_model_file, lambda p: TorchScriptTeacher(p, ["a", "b"], (4,), allow_code=True),
                 lambda p: OnnxTeacher(p, ["a", "b"])):
        with pytest.raises(MtkdError) as info:
            load(path)
        assert one_line(info.value), str(info.value)


@FUZZ
@given(st.one_of(st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.dictionaries(st.sampled_from(["format", "entries", "kind"]),
                                 st.one_of(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=3)))
                 .map(json.dumps)))
def test_a_marker_is_trusted_only_when_well_formed(tmp_path_factory, text):
    out = tmp_path_factory.mktemp("r")
    (out / rundir.MARKER).write_text(text, encoding="latin-1")
    try:
        marker = rundir.read_marker(out)
    except MtkdError as exc:
        assert one_line(exc)
    else:
        assert marker["format"] == rundir.FORMAT
        assert all(e and "/" not in e and e not in (".", "..") for e in marker["entries"])


# ------------------------------------------------------------------ ownership

def _cfg(tmp_path, raw) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_marker_lists_every_entry_and_restart_removes_only_those(tmp_path, tiny_raw_config, capsys):
    raw = dict(tiny_raw_config, distill=dict(tiny_raw_config["distill"], steps=10, baseline=False))
    raw["teachers"] = raw["teachers"][:1]
    out = tmp_path / "run"
    assert main(["run", _cfg(tmp_path, raw), "--out", str(out), "--no-progress"]) == 0
    marker = json.loads((out / rundir.MARKER).read_text())
    made = {p.name for p in out.iterdir()} - rundir.HOUSEKEEPING
    assert marker["format"] == "mtkd.run/1" and set(marker["entries"]) == made and "tensorboard" in made
    assert marker["inputs"] == {} and len(marker["run_id"]) == 12
    (out / "notes.txt").write_text("mine")  # the user adds a file to a finished run
    assert main(["run", _cfg(tmp_path, raw), "--out", str(out), "--no-progress", "--restart"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert "notes.txt" not in json.loads((out / rundir.MARKER).read_text())["entries"]


def test_run_directory_of_an_older_mtkd_is_not_deleted_by_restart(tmp_path, tiny_raw_config, capsys):
    out = tmp_path / "old"
    out.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        (out / name).write_text("{}")
    assert main(["run", _cfg(tmp_path, tiny_raw_config), "--out", str(out), "--restart", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "before run markers: move it aside" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.jsonl", "summary.json"]


@pytest.mark.parametrize("where", [".", "..", "/", "~", "link", "link/run", "file"])
def test_out_paths_that_are_not_a_new_folder_are_refused(where, tmp_path, monkeypatch, capsys, tiny_raw_config):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("keep")
    monkeypatch.chdir(tmp_path)
    out = str(Path.home()) if where == "~" else where
    assert main(["run", _cfg(tmp_path, tiny_raw_config), "--out", out, "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not list((tmp_path / "real").iterdir()) and (tmp_path / "file").read_text() == "keep"


def test_a_second_process_is_refused_naming_the_holder(tmp_path, tiny_raw_config, capsys):
    out = tmp_path / "run"
    out.mkdir()
    lock = rundir.exclusive(out / rundir.LOCK, str(out))  # another open file description: as another process
    try:
        assert main(["run", _cfg(tmp_path, tiny_raw_config), "--out", str(out), "--no-progress"]) == 2
        assert f"in use by process {os.getpid()}" in capsys.readouterr().err
    finally:
        lock.release()
    assert not (out / rundir.MARKER).exists()


def test_files_outside_a_run_are_replaced_only_with_overwrite(tmp_path):
    target = tmp_path / "model.onnx"
    rundir.check_new_file(target, overwrite=False)  # new: fine
    target.write_text("mine")
    with pytest.raises(MtkdError, match="pass --overwrite"):
        rundir.check_new_file(target, overwrite=False)
    rundir.check_new_file(target, overwrite=True)


def test_hf_weights_only_as_pickles_need_allow_code(tmp_path):
    from mtkd.teachers.hf_model import check_weight_files

    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(MtkdError, match="allow_code: true"):
        check_weight_files(tmp_path, False, "bert")
    assert check_weight_files(tmp_path, True, "bert") is False
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert check_weight_files(tmp_path, False, "bert") is True  # safetensors preferred


def test_allow_pickle_is_an_alias_of_allow_code():
    cfg = parse_config({"data": {"name": "digits"},
                        "teachers": [{"name": "s", "kind": "sklearn", "path": __file__, "allow_pickle": True}]})
    assert cfg.teachers[0].external.code_allowed
    from mtkd.cli import _build_parser

    assert _build_parser().parse_args(["run", "c.yaml", "--allow-pickle"]).allow_code
