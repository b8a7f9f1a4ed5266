"""Tables done right: column selection, missing values, normalisation from the training split,
an unlabeled file, raw columns for teachers loaded from files, and a student you can load and serve."""
import csv
import json
import pickle

import numpy as np
import pytest
import torch

import mtkd
from mtkd.cli import main
from mtkd.config import load_config
from mtkd.data import load_dataset
from mtkd.errors import MtkdError


def _write(path, header, rows):
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(header)
        w.writerows(rows)


def _table(n, seed, blanks=(), label=True):
    """Rows: id, a ~ N(10, 2), b ~ N(-5, 0.5), label 'yes' if a - 10 + 4 (b + 5) > 0."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(10, 2, n), rng.normal(-5, 0.5, n)
    rows = []
    for i in range(n):
        row = [f"id{seed}-{i}", f"{a[i]:.5f}", f"{b[i]:.5f}"]
        if label:
            row.append("yes" if (a[i] - 10) + 4 * (b[i] + 5) > 0 else "no")
        rows.append(row)
    for r, c in blanks:
        rows[r][c] = ""
    return rows


@pytest.fixture
def tables(tmp_path):
    header = ["row_id", "a", "b", "target"]
    _write(tmp_path / "train.csv", header, _table(200, 0, blanks=[(3, 1), (7, 2)]))
    _write(tmp_path / "test.csv", header, _table(100, 1, blanks=[(5, 1)]))
    _write(tmp_path / "pool.csv", header[:3], _table(50, 2, label=False))
    return tmp_path


def _csv(d, **kw):
    return {"name": "csv", "train": str(d / "train.csv"), "test": str(d / "test.csv"), "label": "target",
            "drop": ["row_id"], "val_fraction": 0.2, **kw}


def test_missing_error_names_file_row_and_column(tables):
    with pytest.raises(MtkdError, match=r"train.csv: row 4 \(line 5\), column 'a' is empty.*data.missing"):
        load_dataset(**_csv(tables))


def test_id_column_becomes_a_feature_unless_dropped_and_unknown_columns_get_a_suggestion(tables):
    with pytest.raises(MtkdError, match=r"'row_id'.*'id0-0' is not a number.*data.drop"):
        load_dataset(**{**_csv(tables, missing="mean"), "drop": []})
    with pytest.raises(MtkdError, match=r"data.drop: column 'rowid' is not in .*did you mean 'row_id'"):
        load_dataset(**{**_csv(tables, missing="mean"), "drop": ["rowid"]})
    d = load_dataset(**{**_csv(tables, missing="mean"), "drop": [], "features": ["b"]})
    assert d.input_shape == (1,) and d.preprocess["columns"] == ["b"]


@pytest.mark.parametrize("missing", ["mean", "median"])
@pytest.mark.parametrize("normalize", ["standard", "minmax", "none"])
def test_statistics_come_from_the_training_split_only(tables, missing, normalize):
    d = load_dataset(**_csv(tables, missing=missing, normalize=normalize, unlabeled=str(tables / "pool.csv")))
    assert d.class_names == ["no", "yes"] and d.preprocess["columns"] == ["a", "b"]
    # the raw training split, recomputed by hand from the file
    raw = np.array([[float(v) if v else np.nan for v in r[1:3]] for r in _table(200, 0, blanks=[(3, 1), (7, 2)])])
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    train_rows = perm[40:].sort().values.numpy()  # split_off: 20 % validation
    xt = raw[train_rows]
    fill = np.nanmean(xt, 0) if missing == "mean" else np.nanmedian(xt, 0)
    np.testing.assert_allclose(d.preprocess["fill"], fill, rtol=1e-6)
    filled = np.where(np.isnan(xt), fill, xt)
    if normalize == "standard":
        expect = (filled - filled.mean(0)) / filled.std(0)
        np.testing.assert_allclose(d.train.x.mean(0), 0, atol=1e-5)
    elif normalize == "minmax":
        expect = (filled - filled.min(0)) / (filled.max(0) - filled.min(0))
    else:
        expect = filled
    np.testing.assert_allclose(d.train.x.numpy(), expect, rtol=1e-4, atol=1e-4)
    assert not torch.isnan(d.test.x).any()  # the blank test cell got the training split's value
    assert d.unlabeled is not None and len(d.unlabeled) == 50 and (d.unlabeled.y == -1).all()
    assert d.unlabeled.index.tolist() == list(range(160, 210))  # after the labeled rows


def test_parquet_has_the_same_options(tables):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    for name in ("train", "test", "pool"):
        with open(tables / f"{name}.csv") as handle:
            rows = list(csv.DictReader(handle))
        cols = {k: [(float(r[k]) if r[k] else None) if k in ("a", "b") else r[k] for r in rows] for k in rows[0]}
        pq.write_table(pa.table(cols), tables / f"{name}.parquet")
    cfg = {"name": "parquet", "train": str(tables / "train.parquet"), "test": str(tables / "test.parquet"),
           "label": "target", "drop": ["row_id"], "val_fraction": 0.2}
    with pytest.raises(MtkdError, match="row 4, column 'a' is empty"):
        load_dataset(**cfg)
    d = load_dataset(**cfg, missing="median", unlabeled=str(tables / "pool.parquet"))
    assert len(d.unlabeled) == 50 and d.preprocess["normalize"] == "standard"
    np.testing.assert_allclose(d.train.x.mean(0), 0, atol=1e-5)


def test_config_paths_are_taken_from_the_config_folder(tables, tmp_path, monkeypatch):
    (tables / "cfg").mkdir()
    (tables / "cfg" / "run.yaml").write_text(
        "data: {name: csv, train: ../train.csv, test: ../test.csv, label: target, drop: [row_id], missing: mean}\n"
        "distill: {recipe: scratch}\n")
    monkeypatch.chdir(tmp_path.parent)  # somewhere else entirely
    cfg = load_config(tables / "cfg" / "run.yaml")
    assert cfg.data.train == (tables / "train.csv").resolve()
    # --set values stay relative to the current directory
    cfg = load_config(tables / "cfg" / "run.yaml", [f"data.test={tables.name}/test.csv"])
    assert str(cfg.data.test) == f"{tables.name}/test.csv"


@pytest.fixture
def sklearn_teacher(tables):
    """A logistic regression trained outside mtkd on the raw columns (blank cells filled with 0)."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    with open(tables / "train.csv") as handle:
        rows = list(csv.DictReader(handle))
    x = np.array([[float(r["a"] or 0), float(r["b"] or 0)] for r in rows])
    model = sklearn.LogisticRegression().fit(x, [r["target"] for r in rows])
    with open(tables / "lr.pkl", "wb") as handle:
        pickle.dump(model, handle)
    return model


@pytest.mark.parametrize("preprocess", [False, True])
def test_a_teacher_from_a_file_gets_the_raw_columns_unless_it_asks_for_preprocessed(tables, sklearn_teacher,
                                                                                   preprocess):
    from mtkd.pipeline import prepare

    cfg = mtkd.parse_config({
        "data": _csv(tables, missing="mean"), "student": {"arch": "mlp", "hidden": [4]},
        "teachers": [{"name": "lr", "kind": "sklearn", "path": str(tables / "lr.pkl"), "allow_pickle": True,
                      "preprocess": preprocess}]})
    prep = prepare(cfg)
    teacher, data = prep.teachers[0].model, prep.data
    p = data.preprocess
    raw = data.test.x.numpy() * np.array(p["scale"]) + np.array(p["shift"])  # undo the standardisation
    expect = sklearn_teacher.predict_proba(raw if not preprocess else data.test.x.numpy())
    got = torch.softmax(teacher(data.test.x), -1).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-4)


@pytest.fixture
def finished_run(tables, sklearn_teacher, tmp_path):
    (tables / "run.yaml").write_text(
        "data: {name: csv, train: train.csv, test: test.csv, unlabeled: pool.csv, label: target, drop: [row_id],"
        " missing: median}\n"
        "teachers: [{name: lr, kind: sklearn, path: lr.pkl, allow_pickle: true}]\n"
        "student: {arch: mlp, hidden: [8]}\n"
        "distill: {steps: 60, batch_size: 32, lr: 0.01, eval_every: 30}\n"
        "output: {plots: false, tracking: []}\n")
    out = tmp_path / "run"
    assert main(["run", str(tables / "run.yaml"), "--out", str(out), "--no-progress"]) == 0
    return out


def test_load_student_predicts_class_names_with_the_runs_preprocessing(finished_run, tables):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["classes"] == ["no", "yes"] and summary["preprocess"]["missing"] == "median"
    student = mtkd.load_student(finished_run)
    assert student.classes == ["no", "yes"] and student.columns == ["a", "b"]
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(tables / "test.csv")  # raw rows, id and label columns included, one blank cell
    predicted = student.predict(frame)
    accuracy = float(np.mean(predicted == frame["target"].to_numpy()))
    assert accuracy == pytest.approx(summary["student"]["accuracy"], abs=1e-9)
    probs = student.predict_proba(frame)
    assert probs.shape == (100, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_mtkd_predict_writes_one_row_per_input_and_never_overwrites(finished_run, tables, capsys):
    out = tables / "predictions.csv"
    assert main(["predict", str(finished_run), str(tables / "test.csv"), "--out", str(out)]) == 0
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["prediction", "p_no", "p_yes"] and len(rows) == 100
    with open(tables / "test.csv") as handle:
        truth = [r["target"] for r in csv.DictReader(handle)]
    accuracy = np.mean([r["prediction"] == t for r, t in zip(rows, truth)])
    summary = json.loads((finished_run / "summary.json").read_text())
    assert accuracy == pytest.approx(summary["student"]["accuracy"], abs=1e-9)
    before = out.read_text()
    assert main(["predict", str(finished_run), str(tables / "test.csv"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == before
    assert main(["predict", str(finished_run), str(tables / "test.csv"), "--out", str(out), "--force"]) == 0


def test_export_includes_the_preprocessing_and_states_it(finished_run, tables):
    pytest.importorskip("onnxruntime")
    from mtkd.export import export_student, load_exported

    result = export_student(finished_run, "onnx", latency=False)
    info = json.loads((finished_run / "student.onnx.json").read_text())
    assert info["classes"] == ["no", "yes"] and info["inputs"]["included_in_model"]
    assert info["inputs"]["columns"] == ["a", "b"]
    run = load_exported((finished_run / "student.onnx").read_bytes(), "onnx")
    raw = torch.tensor([[12.0, -4.5], [float("nan"), -5.5]])  # a blank cell: the exported model fills it
    expect = mtkd.load_student(finished_run)(raw)
    assert torch.allclose(run(raw), expect, atol=1e-4) and result["max_abs_diff"] < 1e-4
