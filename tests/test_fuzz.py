"""Property-based checks of everything a user can type: any config or --set either validates
or is refused with a one-line MtkdError (exit status 2 in the CLI); nothing else escapes."""
import math

import yaml
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkd.config import apply_overrides, parse_config
from mtkd.errors import MtkdError

KEYS = ["seed", "data", "data.name", "data.num_samples", "data.unlabeled", "data.val_fraction", "data.path",
        "teachers", "teachers.0", "teachers.0.name", "teachers.0.arch", "teachers.0.hidden", "teachers.0.channels",
        "teachers.0.checkpoint", "teachers.0.weight", "teachers.0.train", "teachers.0.train.steps",
        "teachers.1.arch", "student", "student.arch", "student.hidden", "student.num_classes", "distill",
        "distill.recipe", "distill.aggregator", "distill.temperature", "distill.alpha", "distill.steps",
        "distill.batch_size", "distill.lr", "distill.optimizer", "distill.form", "distill.weight_cap",
        "distill.selection", "distill.on_teacher_error", "output", "output.dir", "bogus", "distill.bogus"]
NAMES = ["mnist1d", "digits", "npz", "csv", "mlp", "cnn1d", "gru", "transformer", "linear", "cnn2d", "mean",
         "weighted", "accuracy", "meta", "aekd", "offline", "scratch", "semi_supervised", "mmkd", "bilevel", "joint"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(NAMES) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["name", "arch", "steps", "x"]),
                                                               inner, max_size=3),
    max_leaves=6)
BASE = {"teachers": [{"name": "t", "arch": "mlp"}, {"name": "u", "arch": "cnn1d"}], "student": {"arch": "mlp"}}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4))
def test_any_override_validates_or_fails_with_one_line(edits):
    overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}" for key, value in edits]
    try:
        cfg = parse_config(apply_overrides(BASE, overrides))
    except MtkdError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip(), message
    else:
        parts = [cfg.data, cfg.student, cfg.distill, cfg.aggregator_options, cfg.recipe_options,
                 *[t.train for t in cfg.teachers], *[t.model for t in cfg.teachers if t.model is not None]]
        values = [v for p in parts for v in _numbers(p.model_dump())] + [t.weight for t in cfg.teachers]
        assert all(math.isfinite(v) for v in values), "an accepted config holds NaN or inf"


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)
    elif isinstance(node, float):
        yield node


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_set_string_is_parsed_or_refused(text):
    try:
        apply_overrides(BASE, [text])
    except MtkdError as exc:
        assert "\n" not in str(exc).strip()


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_any_yaml_document_validates_or_fails_with_one_line(document):
    try:
        parse_config(document)
    except MtkdError as exc:
        assert "\n" not in str(exc).strip()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("key", ["distill.temperature", "distill.alpha", "distill.lr", "distill.weight_decay",
                                 "teachers.0.weight", "teachers.0.train.lr", "data.val_fraction",
                                 "student.dropout", "distill.weight_temperature"])
def test_non_finite_numbers_are_refused(key, value):
    extra = ["distill.aggregator=accuracy"] if key == "distill.weight_temperature" else []
    with pytest.raises(MtkdError):
        parse_config(apply_overrides(BASE, extra + [f"{key}={value}"]))


TOKENS = ["run", "list", "--out", "--set", "--restart", "--force", "--fast", "--no-progress", "cfg.yaml",
          "missing.yaml", "distill.steps=0", "distill.aggregator=median", "x=1", "=", "", "-q", "--version"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=8), max_size=6))
def test_any_command_line_exits_cleanly(tmp_path_factory, argv):
    """Any argv (short of a valid run) ends with exit status 0 or 2 and leaves no run directory."""
    import contextlib
    import io
    import os

    from mtkd.cli import main

    work = tmp_path_factory.mktemp("argv")
    (work / "cfg.yaml").write_text("distill: {steps: 0}\nteachers: [{name: t, arch: mlp}]\n")  # invalid on purpose
    cwd = os.getcwd()
    os.chdir(work)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, --version, usage errors
                code = exc.code
    finally:
        os.chdir(cwd)
    assert code in (0, 2), (argv, code, err.getvalue())
    assert "Traceback" not in err.getvalue()
    assert not (work / "runs").exists() and sorted(p.name for p in work.iterdir()) == ["cfg.yaml"]
