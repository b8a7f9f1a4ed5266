"""The tabular tutorial (docs/tasks/tabular.md) end to end, with fewer steps: make the files, run,
predict with the student, and check that the predictions reproduce the run's test accuracy."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mtkd.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tabular"


def test_tabular_tutorial_runs_end_to_end(tmp_path):
    pytest.importorskip("sklearn")
    for name in ("make_data.py", "tabular.yaml", "score.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    subprocess.run([sys.executable, "make_data.py"], cwd=tmp_path, check=True, capture_output=True)
    header = (tmp_path / "data" / "train.csv").read_text().splitlines()[0]
    assert header.startswith("patient_id,") and header.endswith(",diagnosis")
    assert ",," in (tmp_path / "data" / "train.csv").read_text()  # blank cells
    assert "diagnosis" not in (tmp_path / "data" / "pool.csv").read_text().splitlines()[0]
    out = tmp_path / "runs" / "tabular"
    assert main(["run", str(tmp_path / "tabular.yaml"), "--out", str(out), "--no-progress",
                 "--set", "teachers.2.train.steps=100", "--set", "distill.steps=100",
                 "--set", "distill.baseline=false", "--set", "output.plots=false", "--set", "output.tracking=[]"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["benign", "malignant"] and summary["student"]["accuracy"] > 0.85
    assert main(["predict", str(out), str(tmp_path / "data" / "test.csv"), "--out",
                 str(tmp_path / "predictions.csv")]) == 0
    scored = subprocess.run([sys.executable, "score.py", "predictions.csv", "data/test.csv"], cwd=tmp_path,
                            check=True, capture_output=True, text=True).stdout
    accuracy = float(scored.split("accuracy of predictions.csv: ")[1].split()[0])
    assert accuracy == pytest.approx(summary["student"]["accuracy"], abs=1e-4) and "on 143 rows" in scored
