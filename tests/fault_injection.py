"""Fault injection: each fault and each class of bad input a run can meet, what mtkd did, and
whether anything was lost.

    python tests/fault_injection.py        # prints the table; exit status 1 if a case did not hold

A case holds when the run either finishes with the right result after it (resume) or stops with
a one-line message naming the cause (exit status 2 for bad input), nothing half-written is left,
and every file written before it (checkpoints, model files, the user's own files) still loads
byte for byte. A row is a fault or a class of inputs; "tried" counts the generated members of
the class (seeded, so the table repeats), "files lost" the files corrupted, lost or changed.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mtkd.cli import main
from mtkd.io import load_torch, save_torch


def tiny_config(out: Path, **distill) -> dict:
    return {
        "seed": 0,
        "data": {"name": "mnist1d", "num_samples": 400, "unlabeled": 200},
        "teachers": [{"name": "cnn", "arch": "cnn1d", "channels": 8, "train": {"steps": 30}},
                     {"name": "mlp", "arch": "mlp", "hidden": [32], "train": {"steps": 30}}],
        "student": {"arch": "mlp", "hidden": [16]},
        "distill": {"steps": 40, "batch_size": 32, "checkpoint_every": 10, "log_every": 5, **distill},
        "output": {"dir": str(out), "plots": False},
    }


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv + ["--no-progress"])
    return code, err.getvalue().strip()


@contextlib.contextmanager
def interrupted_at(step: int, recipe: type | None = None):
    """Inside the block, the ``step``-th distillation step (of ``recipe``, a recipe class; default
    offline) raises KeyboardInterrupt, as Ctrl-C would; the recipe is restored afterwards."""
    from mtkd.recipes import OfflineRecipe

    cls = recipe or OfflineRecipe
    original, calls = cls.step, {"n": 0}

    def step_or_interrupt(self, *args):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return original(self, *args)

    cls.step = step_or_interrupt
    try:
        yield
    finally:
        cls.step = original


def unreadable(paths) -> int:
    """How many of these files no longer load."""
    lost = 0
    for p in paths:
        try:
            load_torch(p)
        except Exception:  # noqa: BLE001 - any failure to load is data lost
            lost += 1
    return lost


def weights(path: Path) -> dict:
    return load_torch(path)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ the faults

def sigkill_during_training(tmp: Path):
    cfg = write_config(tmp / "c.yaml", tiny_config(tmp / "x", steps=1500, checkpoint_every=25))
    cmd = [sys.executable, "-m", "mtkd", "run", str(cfg), "--no-progress"]
    killed, ckpt = tmp / "killed", tmp / "killed" / "checkpoints" / "student.pt"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.3))  # a random step after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = load_torch(ckpt)["step"] if ckpt.exists() else None
    lost = unreadable(list((killed / "teachers").glob("*.pt")) + ([ckpt] if ckpt.exists() else []))
    resumed = subprocess.run(cmd + ["--out", str(killed)], capture_output=True).returncode == 0
    code, _ = run_cli(["run", str(cfg), "--out", str(tmp / "unbroken")])
    same = resumed and code == 0 and same_weights(killed / "student.pt", tmp / "unbroken" / "student.pt")
    return same and step is not None, lost, f"killed at step {step} of 1500; resumed run equals unbroken: {same}"


def sigkill_during_checkpoint_write(tmp: Path):
    """Kill a process while it rewrites a large checkpoint, many times: the file must always load."""
    path = tmp / "ckpt.pt"
    save_torch(path, {"step": 0, "w": torch.zeros(4_000_000)})
    writer = ("import sys, torch; from mtkd.io import save_torch\n"
              "i = 1\nwhile True:\n    save_torch(sys.argv[1], {'step': i, 'w': torch.full((4_000_000,), float(i))}); i += 1\n")
    survived, steps = True, []
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(path)])
        time.sleep(random.uniform(0.5, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            state = load_torch(path)
            survived &= bool((state["w"] == float(state["step"])).all())
            steps.append(state["step"])
        except Exception:  # noqa: BLE001
            survived = False
    left = len(list(tmp.glob(".ckpt.pt.*.tmp")))
    save_torch(path, {"step": -1})  # the next write clears what killed writers left behind
    cleared = not list(tmp.glob(".ckpt.pt.*.tmp"))
    return survived and cleared, unreadable([path]), \
        f"5 kills mid-write, the file loaded each time (steps {steps}); {left} partial temp file(s), " \
        f"cleared by the next write: {cleared}"


def disk_full_during_checkpoint(tmp: Path):
    path = tmp / "ckpt.pt"
    save_torch(path, {"step": 1})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    os.fsync = full
    try:
        save_torch(path, {"step": 2})
        raised = False
    except OSError:
        raised = True
    finally:
        os.fsync = real_fsync
    intact = load_torch(path)["step"] == 1
    leftovers = list(tmp.glob(".ckpt.pt.*"))
    return raised and intact and not leftovers, unreadable([path]), \
        f"ENOSPC while writing: error raised {raised}, previous checkpoint intact {intact}, temp files {len(leftovers)}"


def truncated_checkpoint(tmp: Path):
    cfg = write_config(tmp / "c.yaml", tiny_config(tmp / "run"))
    with interrupted_at(25):
        run_cli(["run", str(cfg)])
    ckpt = tmp / "run" / "checkpoints" / "student.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # damage from outside mtkd
    code, err = run_cli(["run", str(cfg)])
    last = err.splitlines()[-1] if err else ""
    refused = code == 2 and last.startswith("mtkd: error:") and "cannot be read" in last
    teachers = list((tmp / "run" / "teachers").glob("*.pt"))
    code2, _ = run_cli(["run", str(cfg), "--restart"])
    return refused and code2 == 0, unreadable(teachers) if code2 != 0 else 0, \
        f"truncated checkpoint refused with one line: {refused}; --restart recovers: {code2 == 0}"


def teacher_with_nan_weights(tmp: Path):
    from mtkd.config import _model
    from mtkd.models import build_model
    from mtkd.models.files import save_model_file

    arch = _model({"arch": "mlp", "hidden": [8]}, "t")
    model = build_model(arch, (40,), 10)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    save_model_file(tmp / "bad.pt", model, arch, (40,), 10)
    raw = tiny_config(tmp / "run")
    raw["teachers"] = [{"name": "broken", "checkpoint": str(tmp / "bad.pt")}]
    code, err = run_cli(["run", str(write_config(tmp / "c.yaml", raw))])
    ok = code == 2 and "teacher 'broken' returned NaN" in err and not (tmp / "run").exists()
    return ok, 0, f"exit {code}: {err[:90]}"


def teacher_failing_on_some_batches(tmp: Path):
    import mtkd
    from torch import nn

    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls % 3 == 0:
                raise RuntimeError("out of memory")
            return self.lin(x)

    x = torch.randn(96, 6)
    loader = mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, (x[:, 0] > 0).long()), 16)
    student = nn.Linear(6, 2)
    mtkd.distill(student, {"flaky": Flaky(), "steady": nn.Linear(6, 2)}, loader, steps=12, progress=False,
                 on_teacher_error="drop", log_every=1, metrics_path=tmp / "m.jsonl")
    records = [json.loads(line) for line in (tmp / "m.jsonl").read_text().splitlines()]
    drops = sum(r.get("event") == "teacher_dropped" for r in records)
    finite = all(torch.isfinite(p).all() for p in student.parameters())
    return drops > 0 and finite, 0, f"on_teacher_error: drop; {drops} batches without 'flaky', student finite: {finite}"


def teacher_with_wrong_shape(tmp: Path):
    import mtkd
    from mtkd.errors import TeacherError
    from torch import nn

    class Shifty(nn.Module):  # right for a while, then one class too many
        def __init__(self):
            super().__init__()
            self.lin, self.calls = nn.Linear(6, 3), 0

        def forward(self, x):
            self.calls += 1
            return self.lin(x) if self.calls < 5 else torch.zeros(len(x), 4)

    x = torch.randn(64, 6)
    loader = mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, (x[:, 0] > 0).long()), 16)
    try:
        mtkd.distill(nn.Linear(6, 3), {"shifty": Shifty()}, loader, steps=8, progress=False)
        return False, 0, "a wrong-shaped output went unnoticed"
    except TeacherError as exc:
        ok = "'shifty' returned shape [16, 4]" in str(exc) and "on samples [" in str(exc)
        return ok, 0, str(exc)[:100]


def resume_with_changed_config(tmp: Path):
    cfg = write_config(tmp / "c.yaml", tiny_config(tmp / "run"))
    with interrupted_at(25):
        run_cli(["run", str(cfg)])
    ckpt = tmp / "run" / "checkpoints" / "student.pt"
    before = ckpt.read_bytes()
    code, err = run_cli(["run", str(cfg), "--set", "distill.temperature=2"])
    refused = code == 2 and "different config" in err.splitlines()[-1] and ckpt.read_bytes() == before
    code2, _ = run_cli(["run", str(cfg), "--set", "distill.temperature=2", "--force"])
    return refused and code2 == 0, unreadable(list((tmp / "run" / "teachers").glob("*.pt"))), \
        f"changed config refused, checkpoint untouched: {refused}; --force continues: {code2 == 0}"


def model_file_with_pickled_code(tmp: Path):
    from mtkd.errors import MtkdError
    from mtkd.models.files import read_model_file

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'owned'}",))

    torch.save({"format": "mtkd.model/1", "payload": Payload()}, tmp / "evil.pt")
    try:
        read_model_file(tmp / "evil.pt")
        refused = False
    except MtkdError:
        refused = True
    ran = (tmp / "owned").exists()
    return refused and not ran, 0, f"refused: {refused}; its code ran: {ran} (weights load with weights_only=True)"


def loss_becomes_nan(tmp: Path):
    from mtkd.recipes import OfflineRecipe

    cfg = write_config(tmp / "c.yaml", tiny_config(tmp / "run"))
    original, calls = OfflineRecipe.step, {"n": 0}

    def exploding(self, *args):
        calls["n"] += 1
        out = original(self, *args)
        if calls["n"] == 23:
            out["loss"] = out["loss"] * float("nan")
        return out

    OfflineRecipe.step = exploding
    try:
        code, err = run_cli(["run", str(cfg)])
    finally:
        OfflineRecipe.step = original
    ckpt = tmp / "run" / "checkpoints" / "student.pt"
    named = code == 2 and "loss became nan at step 23" in err and "last good checkpoint" in err
    intact = ckpt.exists() and load_torch(ckpt)["step"] == 20
    return named and intact, unreadable([ckpt]), f"stopped naming the step and checkpoint: {named}; " \
                                                  f"checkpoint of step 20 intact: {intact}"


def unwritable_output(tmp: Path):
    blocker = tmp / "file"
    blocker.write_text("not a directory")
    code, err = run_cli(["run", str(write_config(tmp / "c.yaml", tiny_config(blocker / "run")))])
    return code == 2 and "cannot write the run directory" in err, 0, f"exit {code}: {err[:90]}"


FAULTS = [sigkill_during_training, sigkill_during_checkpoint_write, disk_full_during_checkpoint,
          truncated_checkpoint, resume_with_changed_config, teacher_with_nan_weights, teacher_with_wrong_shape,
          teacher_failing_on_some_batches, loss_becomes_nan, unwritable_output, model_file_with_pickled_code]


def run_all(faults=None) -> list[tuple[str, int, int, int, str]]:
    """Rows (name, tried, held, files lost, detail): a single fault is one case, a class many."""
    from fault_classes import CLASSES

    torch.set_num_threads(1)
    rows = []
    for fault in faults if faults is not None else FAULTS + CLASSES:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                result = fault(Path(tmp))
                if len(result) == 3:  # a single fault: (survived, lost, detail)
                    result = (1, int(bool(result[0])), result[1], result[2])
                tried, held, lost, detail = result
            except Exception as exc:  # noqa: BLE001 - an unhandled fault is a failed row, not a crash
                tried, held, lost, detail = 1, 0, 0, f"{type(exc).__name__}: {exc}"
            finally:
                os.chdir(cwd)
        rows.append((fault.__name__, tried, held, lost, detail))
    return rows


def format_rows(rows) -> str:
    lines = [f"{'fault or input class':34} {'tried':>5} {'held':>5} {'files lost':>10}  detail", "-" * 120]
    lines += [f"{name:34} {tried:5d} {held:5d} {lost:10d}  {detail}" for name, tried, held, lost, detail in rows]
    lines.append(f"\n{len(rows)} rows, {sum(r[1] for r in rows)} cases tried, {sum(r[2] for r in rows)} held, "
                 f"{sum(r[3] for r in rows)} files lost")
    return "\n".join(lines)


def markdown_rows(rows) -> str:
    """The table in docs/safety.md."""
    lines = ["| fault or input class | tried | held | files lost | what happened |", "|---|---:|---:|---:|---|"]
    lines += [f"| `{name}` | {tried} | {held} | {lost} | {detail.replace('|', '/')} |"
              for name, tried, held, lost, detail in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    result = run_all()
    print(markdown_rows(result) if "--markdown" in sys.argv else format_rows(result))
    sys.exit(0 if all(r[1] == r[2] and r[3] == 0 for r in result) else 1)
