"""The mixed-pool quickstart of docs/tasks/classification.md (a PyTorch state dict, an ONNX file and a scikit-learn
pickle distilled into one student on digits) runs as written, with fewer steps."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
PAGE = (ROOT / "docs" / "tasks" / "classification.md").read_text()


def test_mixed_pool_quickstart_runs(tmp_path):
    script = next(b for b in re.findall(r"```python\n(.*?)```", PAGE, re.S) if b.startswith("# make_teachers.py"))
    config = ROOT / "examples" / "mixed_pool" / "digits-mixed.yaml"
    assert config.read_text() in PAGE  # the page shows the example's files as they are
    assert (ROOT / "examples" / "mixed_pool" / "make_teachers.py").read_text() == script
    assert script.count("steps=1000") == 2
    script = script.replace("steps=1000", "steps=300")  # shorter teacher training, for the test's time
    (tmp_path / "make_teachers.py").write_text("import torch\ntorch.set_num_threads(1)\n" + script)
    proc = subprocess.run([sys.executable, "-W", "ignore", "make_teachers.py"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.copy(config, tmp_path / "digits-mixed.yaml")
    run = [sys.executable, "-m", "mtkd", "run", "digits-mixed.yaml", "--no-progress", "--out", "run",
           "--set", "distill.steps=200", "--set", "distill.baseline=false"]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert refused.returncode == 2 and "allow_code" in refused.stderr and not (tmp_path / "run").exists()
    proc = subprocess.run(run + ["--allow-code"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.split()}
    for name, kind in [("mlp", "mlp"), ("cnn", "onnx"), ("forest", "sklearn")]:
        accuracy = float(re.search(r"([0-9.]+) %", rows[name]).group(1))
        assert f" {kind} " in rows[name] and accuracy > 85, rows[name]
    # the selection page's transcript, on the same teachers
    select = subprocess.run([sys.executable, "-m", "mtkd", "select", "digits-mixed.yaml", "--allow-code"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert select.returncode == 0, select.stderr[-2000:]
    assert "wrote digits-mixed-selected.yaml" in select.stdout and (tmp_path / "digits-mixed-selected.yaml").is_file()
