"""scripts/gpu_check.sh --cpu: the GPU verification script's checks, run on the CPU (bf16, gloo)."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(os.name != "posix", reason="a bash script")
def test_gpu_check_script_runs_its_cpu_part_and_prints_one_table():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "| cpu |" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["bf16-run", "ddp-torchrun", "bench"]
    assert all("| ok |" in r for r in rows)
    assert "ddp: student accuracy" in proc.stdout


def test_gpu_check_refuses_to_claim_a_gpu_it_does_not_have():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
