"""Small surprises made visible: each one here failed silently or confusingly before."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

import mtkd
from mtkd.cli import main


def test_bare_mtkd_prints_its_help(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mtkd") and "predict" in err and "mtkd mtkd" not in err
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2 and "(see mtkd run --help)" in capsys.readouterr().err


def test_run_files_get_the_users_umask(tmp_path):
    from mtkd.io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    finally:
        os.umask(old)


def test_did_you_mean_for_keys_and_names():
    for raw, hint in [({"distill": {"temprature": 2}}, "did you mean 'temperature'"),
                      ({"distill": {"aggregator": "weigthed"}}, "did you mean 'weighted'"),
                      ({"student": {"arch": "mpl"}}, "did you mean 'mlp'"),
                      ({"teachers": [{"name": "t", "kind": "sklearn", "path": __file__, "allow_pikle": True}]},
                       "did you mean 'allow_pickle'")]:
        raw.setdefault("teachers", [{"name": "t", "arch": "mlp"}])
        with pytest.raises(mtkd.ConfigError, match=hint):
            mtkd.parse_config(raw)


def test_a_stage_restarted_before_its_first_checkpoint_logs_each_step_once(tmp_path):
    from mtkd.config import TrainConfig
    from mtkd.recipes import ScratchRecipe
    from mtkd.trainer import MetricsLog, Trainer

    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    loader = mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, y), 16)
    metrics = tmp_path / "metrics.jsonl"
    # an earlier attempt logged steps 5 and 10, then was killed before its first checkpoint
    metrics.write_text("".join(json.dumps({"stage": "distill", "step": s, "loss": 1.0}) + "\n" for s in (5, 10))
                       + json.dumps({"stage": "teacher/a", "step": 5, "loss": 2.0}) + "\n")
    cfg = TrainConfig(steps=10, log_every=5, checkpoint_every=100, eval_every=100)
    Trainer(ScratchRecipe(torch.nn.Linear(4, 2)), loader, cfg, stage="distill", checkpoint=tmp_path / "c.pt",
            metrics=MetricsLog(metrics), progress=False).fit()
    records = MetricsLog(metrics).read()
    steps = [r["step"] for r in records if r["stage"] == "distill" and "loss" in r]
    assert steps == [5, 10]
    assert any(r["stage"] == "teacher/a" for r in records)  # other stages keep their records


def test_report_labels_groups_by_the_key_that_separates_them(tmp_path):
    from mtkd.report.compare import RunRecord, group_runs

    def run(name, data, aggregator):
        return RunRecord(tmp_path / name, {"recipe": "offline", "aggregator": aggregator, "student": {}, "teachers": []},
                         {"seed": 0, "data": data, "distill": {"aggregator": aggregator, "steps": 10}}, [])

    mnist = {"name": "mnist1d", "num_samples": 4000, "unlabeled": 0, "noise": 0.1}
    digits = {"name": "digits", "shape": "flat", "val_fraction": 0.1}
    groups = group_runs([run("a", mnist, "mean"), run("b", digits, "mean"), run("c", mnist, "weighted")])
    labels = sorted(g.label for g in groups)
    assert labels == ["data.name=digits, distill.aggregator=mean", "data.name=mnist1d, distill.aggregator=mean",
                      "data.name=mnist1d, distill.aggregator=weighted"]


@pytest.fixture
def extra_class_teacher(tmp_path):
    """A scikit-learn teacher that knows a class ('maybe') the data set lacks."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 2))
    y = np.array(["no", "yes", "maybe"])[np.arange(90) % 3]
    path = tmp_path / "lr.pkl"
    with open(path, "wb") as handle:
        pickle.dump(sklearn.LogisticRegression().fit(x, y), handle)
    rows = "".join(f"{a:.4f},{b:.4f},{'yes' if a > 0 else 'no'}\n" for a, b in rng.normal(size=(60, 2)))
    (tmp_path / "t.csv").write_text("a,b,label\n" + rows)
    return path


@pytest.mark.parametrize("aggregator, val_note", [("mean", False), ("accuracy", True)])
def test_notes_for_dropped_teacher_classes_and_validation_weights(extra_class_teacher, tmp_path, aggregator, val_note):
    from mtkd.pipeline import prepare

    cfg = mtkd.parse_config({
        "data": {"name": "csv", "train": str(tmp_path / "t.csv"), "test": str(tmp_path / "t.csv")},
        "teachers": [{"name": "lr", "kind": "sklearn", "path": str(extra_class_teacher), "allow_pickle": True}],
        "student": {"arch": "mlp", "hidden": [4]}, "distill": {"aggregator": aggregator}})
    notes = prepare(cfg).notes
    assert any(n.startswith("teacher lr: classes ['maybe'] are not in the data set") for n in notes)
    assert any("validation split" in n and "'accuracy'" in n for n in notes) == val_note


def test_weighted_aggregator_ensemble_row_is_the_weighted_ensemble(tiny_raw_config, tmp_path):
    from mtkd.data import load_dataset
    from mtkd.models.files import load_model_file
    from mtkd.report import format_table

    raw = tiny_raw_config
    raw["teachers"][0]["weight"], raw["teachers"][1]["weight"] = 3.0, 1.0
    raw["distill"].update({"aggregator": "weighted", "baseline": False, "steps": 10})
    raw["output"]["tracking"] = []
    summary = mtkd.run_pipeline(mtkd.parse_config(raw), tmp_path / "w", progress=False, log=lambda m: None)
    assert summary["ensemble"]["rule"] == "weighted mean of 2"
    assert "weighted mean of 2" in format_table(summary)
    test = load_dataset("mnist1d", num_samples=400, unlabeled=200).test
    probs = [torch.softmax(mtkd.predict_logits(load_model_file(tmp_path / "w" / "teachers" / f"{n}.pt")[0], test.x), -1)
             for n in ("cnn", "mlp")]
    from mtkd.report.calibration import expected_calibration_error

    weighted, mean = 0.75 * probs[0] + 0.25 * probs[1], (probs[0] + probs[1]) / 2
    assert summary["ensemble"]["accuracy"] == pytest.approx(float((weighted.argmax(1) == test.y).float().mean()),
                                                            abs=1e-4)
    # ECE tells the two ensembles apart where accuracy may not
    assert summary["ensemble"]["ece"] == pytest.approx(expected_calibration_error(weighted, test.y), abs=1e-4)
    assert summary["ensemble"]["ece"] != pytest.approx(expected_calibration_error(mean, test.y), abs=1e-4)


def test_mtkd_cache_prints_each_build_once(tiny_raw_config, tmp_path, capsys):
    import yaml

    raw = tiny_raw_config
    raw["distill"].update({"cache": "auto", "baseline": False})
    raw["output"]["tracking"] = []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["cache", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    for name in ("cnn", "mlp"):
        assert sum(1 for line in text.splitlines() if "built" in line and f"/{name}" in line or
                   line.startswith(f"{name}: built")) == 1, text
