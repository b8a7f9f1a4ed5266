import os

os.environ.setdefault("MPLBACKEND", "Agg")
# Subprocesses the tests start (examples, scripts) inherit one thread too: pytest-xdist runs one
# worker per core, and a second thread per process would only make them compete.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: fastest for these tiny models on a shared 2-core machine, and deterministic.
torch.set_num_threads(1)


@pytest.fixture
def tiny_raw_config(tmp_path):
    """A config small enough to run the whole pipeline in a few seconds."""
    return {
        "seed": 0,
        "data": {"name": "mnist1d", "num_samples": 400, "unlabeled": 200},
        "teachers": [
            {"name": "cnn", "arch": "cnn1d", "channels": 8, "train": {"steps": 30, "eval_every": 10}},
            {"name": "mlp", "arch": "mlp", "hidden": [32], "train": {"steps": 30, "eval_every": 10}},
        ],
        "student": {"arch": "mlp", "hidden": [16]},
        "distill": {"steps": 40, "batch_size": 32, "eval_every": 10, "log_every": 5, "checkpoint_every": 10,
                    "baseline": True},
        "output": {"dir": str(tmp_path / "run"), "plots": False},
    }
