"""Experiment tracking: TensorBoard event files carry every metrics.jsonl scalar; MLflow logs to a
local file store, and its absence is a clear message naming the extra."""
import json
import sys

import pytest

from mtkd.cli import main
from mtkd.config import parse_config
from mtkd.pipeline import run_pipeline

RAW = {"seed": 0, "data": {"name": "mnist1d", "num_samples": 300},
       "teachers": [{"name": "cnn", "arch": "cnn1d", "channels": 8, "train": {"steps": 20, "log_every": 10}},
                    {"name": "mlp", "arch": "mlp", "hidden": [16], "train": {"steps": 20, "log_every": 10}}],
       "student": {"arch": "mlp", "hidden": [16]},
       "distill": {"steps": 30, "batch_size": 32, "log_every": 10, "eval_every": 15},
       "output": {"plots": False}}


def _records(out, stage):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["stage"] == stage]


def test_tensorboard_is_on_by_default_and_gets_every_scalar(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = parse_config(RAW)
    assert cfg.output.tracking == ["tensorboard"]
    out = tmp_path / "run"
    run_pipeline(cfg, out, progress=False, log=lambda m: None)
    acc = EventAccumulator(str(out / "tensorboard" / "distill"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "kd", "ce", "lr", "val_accuracy", "weight/cnn", "weight/mlp"} <= tags, tags
    records = _records(out, "distill")
    for tag in ("loss", "val_accuracy", "weight/cnn"):
        expected = [(r["step"], r[tag]) for r in records if tag in r]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected] and len(got) >= 2
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    teacher = EventAccumulator(str(out / "tensorboard" / "teacher" / "cnn"))
    teacher.Reload()
    assert [e.step for e in teacher.Scalars("loss")] == [10, 20]
    final = EventAccumulator(str(out / "tensorboard" / "summary"))
    final.Reload()
    summary = json.loads((out / "summary.json").read_text())
    assert final.Scalars("test_accuracy/student")[0].value == pytest.approx(summary["student"]["accuracy"])
    assert final.Scalars("test_ece/ensemble")[0].value == pytest.approx(summary["ensemble"]["ece"])


def test_tracking_off_writes_no_event_files(tmp_path):
    raw = dict(RAW, teachers=RAW["teachers"][:1], distill=dict(RAW["distill"], steps=10),
               output={"plots": False, "tracking": []})
    run_pipeline(parse_config(raw), tmp_path / "run", progress=False, log=lambda m: None)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_mlflow_missing_names_the_extra_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails, as when not installed
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(dict(RAW, output={"tracking": ["tensorboard", "mlflow"]})))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtkd: error: output.tracking: 'mlflow' needs MLflow") and "\n" not in err
    assert "pip install 'mtkd[mlflow]'" in err
    assert not out.exists()


def test_unknown_tracker_is_a_config_error(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(dict(RAW, output={"tracking": ["wandb"]})))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "output.tracking.0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_mlflow_logs_to_a_local_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    raw = dict(RAW, teachers=RAW["teachers"][:1],
               output={"plots": False, "tracking": ["mlflow"], "mlflow_uri": store})
    out = tmp_path / "run"
    run_pipeline(parse_config(raw), out, progress=False, log=lambda m: None)
    run_id = (out / "mlflow_run_id").read_text().strip()
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["distill.temperature"] == "4.0" and run.data.params["teachers.0.arch"] == "cnn1d"
    history = client.get_metric_history(run_id, "distill/loss")
    expected = [(r["step"], r["loss"]) for r in _records(out, "distill") if "loss" in r]
    assert sorted((m.step, m.value) for m in history) == [(s, pytest.approx(v)) for s, v in expected]
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["test_accuracy/student"] == pytest.approx(summary["student"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "summary.json"} <= artifacts
    assert not (out / "tensorboard").exists()


def test_a_resumed_run_hides_the_steps_logged_after_its_last_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fault_injection import interrupted_at

    raw = dict(RAW, teachers=RAW["teachers"][:1],
               distill=dict(RAW["distill"], steps=30, log_every=5, checkpoint_every=10, eval_every=30))
    out = tmp_path / "run"
    with interrupted_at(17), pytest.raises(KeyboardInterrupt):  # logged 5, 10, 15; checkpoint at 10
        run_pipeline(parse_config(raw), out, progress=False, log=lambda m: None)
    run_pipeline(parse_config(raw), out, progress=False, log=lambda m: None)  # resumes from step 10
    acc = EventAccumulator(str(out / "tensorboard" / "distill"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("loss")]
    assert steps == [r["step"] for r in _records(out, "distill") if "loss" in r] == [5, 10, 15, 20, 25, 30]


def test_an_mlflow_store_that_does_not_answer_stops_the_run_before_it_starts(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    import mlflow.tracking
    import yaml

    class Unreachable(mlflow.tracking.MlflowClient):
        def search_experiments(self, *args, **kwargs):
            raise ConnectionError("connection refused\nsecond line")

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Unreachable)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(dict(RAW, output={"tracking": ["mlflow"], "mlflow_uri": "http://127.0.0.1:9"})))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "MLflow cannot use the store http://127.0.0.1:9 (ConnectionError: connection refused)" in err
    assert "\n" not in err and not (tmp_path / "run").exists()


def test_the_python_api_sends_metrics_to_a_tracker(tmp_path):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import mtkd
    from mtkd.tracking import TensorBoardTracker

    data = mtkd.load_dataset("mnist1d", num_samples=200)
    teacher = mtkd.build_model("mlp", data.input_shape, 10, hidden=[16])
    student = mtkd.build_model("mlp", data.input_shape, 10, hidden=[8])
    tracker = TensorBoardTracker(tmp_path / "tb")
    torch.manual_seed(0)
    mtkd.distill(student, [teacher], mtkd.BatchLoader(data.train, batch_size=32), steps=20, log_every=10,
                 progress=False, trackers=[tracker])
    tracker.close()
    acc = EventAccumulator(str(tmp_path / "tb" / "distill"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [10, 20]
