"""The README stays true: its Python quickstart runs, its set-up commands are what CI runs."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_python_quickstart_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README has no Python quickstart"
    script = tmp_path / "quickstart.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + blocks[0])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    accuracy = float(re.search(r"student: ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.68  # above the MLP trained alone on the labels (66 % on MNIST-1D)


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^(\./scripts/install\.sh && .*?)\s+#", README, re.M)
    assert len(commands) == 2 and "mtkd demo" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
