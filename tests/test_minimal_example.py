"""examples/minimal_distill.py, the plain-PyTorch reference loop, runs, and does what the library
does: `mtkd.distill` (offline + mean) from the same start on the same batches ends at the same weights."""
import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mtkd

EXAMPLE = Path(__file__).parent.parent / "examples" / "minimal_distill.py"


def _example():
    spec = importlib.util.spec_from_file_location("minimal_distill", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_loop_equals_the_library():
    torch.manual_seed(0)
    x = torch.randn(48, 6)
    y = torch.randint(0, 3, (48,))
    y[::3] = -1  # a third unlabeled: KD only
    teachers = [nn.Linear(6, 3), nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))]
    student = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    twin, start = copy.deepcopy(student), copy.deepcopy(student.state_dict())
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    _example().distill(student, teachers, loader, steps=7, temperature=3.0, alpha=0.8, lr=0.05)
    mtkd.distill(twin, teachers, loader, steps=7, temperature=3.0, alpha=0.8, lr=0.05, progress=False)
    assert not torch.equal(student[0].weight, start["0.weight"])  # both trained
    for name, value in student.state_dict().items():
        torch.testing.assert_close(value, twin.state_dict()[name], rtol=1e-5, atol=1e-6, msg=name)


def test_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "300", "--teacher-steps", "200",
                           "--unlabeled", "1000"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    accuracy = float(re.search(r"student: ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.3, proc.stdout  # chance is 0.1
