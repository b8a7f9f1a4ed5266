"""The command line: every error path exits 2 with one line and writes nothing; runs resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtkd.aggregation import AGGREGATORS
from fault_injection import interrupted_at
from mtkd.cli import main
from mtkd.recipes import RECIPES
from mtkd.io import load_torch
from mtkd.models import build_model
from mtkd.models.files import save_model_file
from mtkd.config import _model


def _write(tmp_path, raw, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _fails_cleanly(capsys, argv, message, out_dir):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtkd: error:") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err
    assert not Path(out_dir).exists(), "a failed command must not leave a run directory"


@pytest.mark.parametrize("override, message", [
    ("data.name=imagenet", "data.name: unknown data set 'imagenet' (did you mean 'images'?); choose one of: arrays, csv, digits, hf_disk, images, mnist1d, npz, parquet"),
    ("student.arch=resnet", "student.arch: unknown model 'resnet'; choose one of:"),
    ("teachers.0.arch=vit", "teachers[0].arch: unknown model 'vit'; choose one of:"),
    ("distill.aggregator=median", "distill.aggregator: unknown aggregator 'median' (did you mean 'mean'?); choose one of: "
     + ", ".join(sorted(AGGREGATORS))),
    ("distill.recipe=magic", "distill.recipe: unknown recipe 'magic'; choose one of: " + ", ".join(sorted(RECIPES))),
    ("distill.temperature=-1", "distill.temperature: Input should be greater than 0"),
    ("distill.temperature=0", "distill.temperature: Input should be greater than 0"),
    ("distill.batch_size=0", "distill.batch_size: Input should be greater than 0"),
    ("distill.steps=0", "distill.steps: Input should be greater than 0"),
    ("teachers.0.train.steps=-5", "teachers[0].train.steps: Input should be greater than 0"),
    ("teachers.1.num_classes=3", "teachers[1] (mlp): the teacher has 3 classes but the student has 10"),
    ("teachers.0.checkpoint=/no/such/teacher.pt", "teachers[0].checkpoint: file not found: /no/such/teacher.pt"),
    ("distill.stepz=3", "distill.stepz: unknown key for distill (recipe 'offline', aggregator 'mean') (did you mean 'steps'?); "
     "allowed keys: steps"),
])
def test_config_errors_exit_2_with_one_line_and_no_run_dir(tmp_path, capsys, tiny_raw_config, override, message):
    cfg = _write(tmp_path, tiny_raw_config)
    out = tmp_path / "out"
    _fails_cleanly(capsys, ["run", str(cfg), "--out", str(out), "--set", override], message, out)


def test_file_errors(tmp_path, capsys, tiny_raw_config):
    out = tmp_path / "out"
    _fails_cleanly(capsys, ["run", str(tmp_path / "missing.yaml"), "--out", str(out)], "config file not found", out)
    bad = tmp_path / "bad.yaml"
    bad.write_text("teachers: [\n  {name: a\n")
    _fails_cleanly(capsys, ["run", str(bad), "--out", str(out)], "is not valid YAML", out)
    notyaml = tmp_path / "weights.bin"
    notyaml.write_bytes(os.urandom(512))
    assert main(["run", str(notyaml), "--out", str(out)]) == 2
    assert not out.exists()


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2
    assert "mtkd: error:" in capsys.readouterr().err


def test_teacher_checkpoint_with_nan_weights_is_named(tmp_path, capsys, tiny_raw_config):
    arch = _model({"arch": "mlp", "hidden": [8]}, "t")
    model = build_model(arch, (40,), 10)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    save_model_file(tmp_path / "bad.pt", model, arch, (40,), 10)
    raw = dict(tiny_raw_config, teachers=[{"name": "broken", "checkpoint": str(tmp_path / "bad.pt")}])
    out = tmp_path / "out"
    _fails_cleanly(capsys, ["run", str(_write(tmp_path, raw)), "--out", str(out)],
                   "teacher 'broken' returned NaN or infinite logits", out)


def test_list_prints_every_registered_name(capsys):
    from mtkd.aggregation import AGGREGATORS
    from mtkd.data import DATASETS
    from mtkd.losses import LOSSES
    from mtkd.models import MODELS
    from mtkd.recipes import RECIPES

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert set(DATASETS) | set(MODELS) | set(AGGREGATORS) | set(LOSSES) | set(RECIPES) <= listed
    assert all(len(line.split()) > 1 for line in lines if line.startswith("  "))  # each has a description


def test_run_writes_the_run_directory_and_reruns_do_nothing(tmp_path, capsys, tiny_raw_config):
    cfg = _write(tmp_path, dict(tiny_raw_config, output={"dir": str(tmp_path / "run"), "plots": True}))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "ensemble" in table and "from scratch" in table and "distilled (offline, mean)" in table
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "student.pt", "report.md", "teachers/cnn.pt",
                 "plots/accuracy.png", "plots/curves.png", "plots/teacher_weights.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "mnist1d" and summary["recipe"] == "offline" and summary["aggregator"] == "mean"
    assert summary["student"]["params"] == 40 * 16 + 16 + 16 * 10 + 10
    assert [t["name"] for t in summary["teachers"]] == ["cnn", "mlp"]
    for rec in [summary["student"], summary["scratch"], summary["ensemble"], *summary["teachers"]]:
        assert 0.0 <= rec["accuracy"] <= 1.0 and rec["params"] > 0
    assert summary["timing"]["steps"] == 40 and summary["timing"]["distill_seconds"] > 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["distill"]["temperature"] == 4.0  # defaults are written out
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records} == {"teacher/cnn", "teacher/mlp", "scratch", "distill"}

    mtime = (out / "summary.json").stat().st_mtime_ns
    assert main(["run", str(cfg), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (out / "summary.json").stat().st_mtime_ns == mtime

    # the same directory with another config is refused; --restart starts over
    assert main(["run", str(cfg), "--set", "distill.steps=20", "--no-progress"]) == 2
    assert "different config" in capsys.readouterr().err
    assert main(["run", str(cfg), "--set", "distill.steps=20", "--restart", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["timing"]["steps"] == 20


def test_second_run_reuses_trained_teachers_through_checkpoint(tmp_path, capsys, tiny_raw_config):
    first = tmp_path / "first"
    assert main(["run", str(_write(tmp_path, tiny_raw_config)), "--out", str(first), "--no-progress"]) == 0
    raw = dict(tiny_raw_config, teachers=[{"name": "cnn", "checkpoint": str(first / "teachers" / "cnn.pt")}])
    second = tmp_path / "second"
    assert main(["run", str(_write(tmp_path, raw, "b.yaml")), "--out", str(second), "--no-progress"]) == 0
    capsys.readouterr()
    assert not (second / "teachers").exists()  # nothing retrained
    s1 = json.loads((first / "summary.json").read_text())
    s2 = json.loads((second / "summary.json").read_text())
    assert s2["teachers"][0]["accuracy"] == s1["teachers"][0]["accuracy"]


def test_out_dir_that_is_not_a_run_is_refused(tmp_path, capsys, tiny_raw_config):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    assert main(["run", str(_write(tmp_path, tiny_raw_config)), "--out", str(out), "--restart"]) == 2
    assert "not an mtkd run directory" in capsys.readouterr().err
    assert (out / "thesis.tex").exists()


# mutual, okddip, ffl and codistillation train several networks per step, too slow for 600 steps
# here: tests/test_online.py interrupts and resumes them in-process (afd stands for them here)
@pytest.mark.parametrize("recipe", sorted(set(RECIPES) - {"mutual", "okddip", "ffl", "codistillation"}))
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path, tiny_raw_config, recipe):
    """Kill a real `mtkd run` process during training, run it again, compare with an unbroken run."""
    raw = dict(tiny_raw_config)
    raw["distill"] = dict(raw["distill"], recipe=recipe, steps=600, checkpoint_every=25, baseline=False)
    cfg = _write(tmp_path, raw)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "mtkd", "run", str(cfg), "--no-progress"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "student.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.1)  # let it run past the checkpoint, maybe into the next write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run finished or failed before it could be killed"
    assert not (killed / "summary.json").exists()
    assert load_torch(ckpt)["step"] < 600

    assert subprocess.run(cmd + ["--out", str(killed)], env=env, capture_output=True).returncode == 0
    unbroken = tmp_path / "unbroken"
    assert main(["run", str(cfg), "--out", str(unbroken), "--no-progress"]) == 0

    a = load_torch(killed / "student.pt")["state_dict"]
    b = load_torch(unbroken / "student.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()
             if '"distill"' in l and '"loss"' in l]
    assert steps == sorted(set(steps))  # the resumed run logged no step twice


def test_ctrl_c_then_resume_with_another_output_dir_setting(tmp_path, capsys, tiny_raw_config):
    """Ctrl-C during distillation exits 130 with a hint; the same --out resumes even if output.dir differs."""
    cfg, out = _write(tmp_path, tiny_raw_config), tmp_path / "run"
    with interrupted_at(25):
        assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert (out / "checkpoints" / "student.pt").exists() and not (out / "summary.json").exists()
    assert main(["run", str(cfg), "--out", str(out), "--set", "output.dir=elsewhere", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["timing"]["steps"] == 40


def test_unwritable_output_directory_is_a_clear_error(tmp_path, capsys, tiny_raw_config):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory would have to be")
    out = blocker / "run"  # mkdir fails with an OSError (NotADirectoryError), for root too
    assert main(["run", str(_write(tmp_path, tiny_raw_config)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot write the run directory" in err and "Traceback" not in err
    assert blocker.read_text().startswith("a file")


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys, tiny_raw_config):
    target = tmp_path / "file"
    target.write_text("x")
    _ = _write(tmp_path, tiny_raw_config)
    assert main(["run", str(tmp_path / "cfg.yaml"), "--out", str(target)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_force_continues_an_interrupted_run_with_a_changed_config(tmp_path, capsys, tiny_raw_config):
    cfg, out = _write(tmp_path, tiny_raw_config), tmp_path / "run"
    with interrupted_at(25):
        assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 130
    capsys.readouterr()
    changed = ["--set", "distill.lr=0.005"]
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", *changed]) == 2
    assert "--force to continue it" in capsys.readouterr().err
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--force", *changed]) == 0
    assert "resuming" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["distill"]["lr"] == 0.005
    # a finished run cannot be changed, not even with --force
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--force", "--set", "distill.lr=0.002"]) == 2
    assert "--force cannot change a finished run" in capsys.readouterr().err


def test_too_little_disk_space_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, tiny_raw_config):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    out = tmp_path / "run"
    _fails_cleanly(capsys, ["run", str(_write(tmp_path, tiny_raw_config)), "--out", str(out)],
                   "5 MiB free on its disk, the run needs about", out)


def test_model_files_that_carry_pickled_code_are_refused(tmp_path):
    """Weights load with weights_only=True: a file whose unpickling would run code is refused."""
    from mtkd.errors import MtkdError
    from mtkd.models.files import read_model_file

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    torch.save({"format": "mtkd.model/1", "arch": {"arch": "mlp"}, "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(MtkdError, match="not a readable mtkd model file"):
        read_model_file(tmp_path / "evil.pt")
    assert not (tmp_path / "owned").exists()
