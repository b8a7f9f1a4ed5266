"""Classes of bad input and misuse for tests/fault_injection.py: each function generates many
members of one class (seeded, so the counts repeat) and returns (tried, held, files lost, detail).

A member holds when the command exits with status 2 and one line starting "mtkd: error:",
writes nothing (no run directory appears, every file already there is byte-identical), and,
where the class is about running code, no code from the file ran.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mtkd.cli import main

SEED = 14


def cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue().strip()


def refused(code: int, err: str) -> bool:
    """Exit 2 and exactly one line, mtkd's own."""
    return code == 2 and err.startswith("mtkd: error:") and "\n" not in err and "Traceback" not in err


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the user's files), to compare afterwards."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def lost_files(before: dict[str, str], root: Path) -> int:
    after = snapshot(root)
    return sum(after.get(k) != v for k, v in before.items())


def tiny(out: Path | None = None, **distill) -> dict:
    raw = {"seed": 0, "data": {"name": "mnist1d", "num_samples": 400},
           "teachers": [{"name": "cnn", "arch": "cnn1d", "channels": 4, "train": {"steps": 10}},
                        {"name": "mlp", "arch": "mlp", "hidden": [16], "train": {"steps": 10}}],
           "student": {"arch": "mlp", "hidden": [8]},
           "distill": {"steps": 20, "batch_size": 32, "checkpoint_every": 5, "log_every": 5, **distill},
           "output": {"plots": False, "tracking": []}}
    if out is not None:
        raw["output"]["dir"] = str(out)
    return raw


def write(path: Path, raw) -> Path:
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return path


ONE_TEACHER = [{"name": "m", "arch": "mlp", "hidden": [4], "train": {"steps": 2}}]


def run_refused(tmp: Path, **sections) -> tuple[bool, str]:
    """``mtkd run`` of the tiny config with ``sections`` replaced: (refused and no run directory, message)."""
    raw = dict(tiny(), **sections)
    code, err = cli(["run", str(write(tmp / "c.yaml", raw)), "--out", str(tmp / "run"), "--no-progress"])
    return refused(code, err) and not (tmp / "run").exists(), f"exit {code} {err[-100:]}"


def tally(results: list[tuple[bool, str]], detail: str) -> tuple[int, int, int, str]:
    """(tried, held, 0 files lost, detail naming the first failures) of (held, why) pairs."""
    fails = [why for ok, why in results if not ok]
    return len(results), len(results) - len(fails), 0, detail + (f"; failed: {fails[:2]}" if fails else "")


@functools.lru_cache(maxsize=1)
def finished_run() -> Path:
    """One finished tiny run, shared by the classes that read a run (report, export, select)."""
    root = Path(tempfile.mkdtemp(prefix="mtkd-fault-"))
    code, err = cli(["run", str(write(root / "c.yaml", tiny())), "--out", str(root / "run"), "--no-progress"])
    assert code == 0, err
    return root / "run"


# ------------------------------------------------------------------ config and --set

def yaml_bombs_depth_and_huge_values(tmp: Path):
    """Alias bombs, deep nesting, huge integers and strings, recursive anchors, invalid bytes."""
    rng, tried, held = random.Random(SEED), 0, 0
    for i in range(36):
        kind = i % 6
        if kind == 0:  # billion laughs: fanout^levels values from a few hundred bytes
            fan, levels = rng.randint(6, 12), rng.randint(6, 9)
            lines = ["a0: &a0 [x" + ", x" * (fan - 1) + "]"]
            lines += [f"a{j}: &a{j} [" + ", ".join([f"*a{j - 1}"] * fan) + "]" for j in range(1, levels)]
            text = "\n".join(lines) + "\nseed: 0\n"
        elif kind == 1:
            d = rng.randint(65, 3000)
            text = "seed: 0\ndata: " + "[" * d + "1" + "]" * d + "\n"
        elif kind == 2:
            text = f"seed: {rng.choice('123456789')}{'0' * rng.randint(41, 8000)}\n"
        elif kind == 3:
            text = f"seed: 0\noutput: {{dir: {'x' * rng.randint(70_000, 200_000)}}}\n"
        elif kind == 4:
            text = "seed: 0\ndata: &d {name: mnist1d, inner: *d}\n"
        else:
            text = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))).decode("latin-1")
        cfg = tmp / "c.yaml"
        cfg.write_bytes(text.encode("utf-8", "surrogateescape") if kind != 5 else text.encode("latin-1"))
        code, err = cli(["run", str(cfg), "--out", str(tmp / "run"), "--no-progress"])
        tried += 1
        held += refused(code, err) and not (tmp / "run").exists()
    return tried, held, 0, "alias bombs, 65-3,000 levels, 41-8,000-digit ints, 70k+ char strings, cycles, random bytes"


def set_values_out_of_range(tmp: Path):
    """--set values a downstream library would reject or that cannot fit in memory."""
    rng, tried, held = random.Random(SEED), 0, 0
    cfg = write(tmp / "c.yaml", tiny())
    makers = [
        lambda: f"seed={rng.choice([-1, -(10 ** rng.randint(1, 30)), 2 ** 32 + rng.randint(0, 10 ** 9), 10 ** 25])}",
        lambda: f"seed={rng.choice(['.inf', '1e400', 'abc', '[1, 2]', '3.5'])}",
        lambda: f"distill.threads={rng.choice([-1, 1025, 10 ** rng.randint(4, 30)])}",
        lambda: f"data.num_samples={10 ** rng.randint(11, 40)}",
        lambda: f"student.hidden=[{10 ** rng.randint(9, 40)}]",
        lambda: f"teachers.0.channels={10 ** rng.randint(7, 30)}",
        lambda: f"distill.batch_size={rng.choice([0, -1, -(10 ** 20)])}",
        lambda: f"data.seed={rng.choice([-3, 2 ** 40])}",
    ]
    for i in range(32):
        setting = makers[i % len(makers)]()
        code, err = cli(["run", str(cfg), "--out", str(tmp / "run"), "--no-progress", "--set", setting])
        tried += 1
        held += refused(code, err) and not (tmp / "run").exists()
    return tried, held, 0, "seeds, threads, sample counts, hidden sizes, channels, batch sizes out of range"


# ------------------------------------------------------------------ data files

def _data_configs(tmp: Path, rng: random.Random):
    """(name, config data section, files to fill) for each file-based format."""
    junk = lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000)))  # noqa: E731
    img = tmp / "img"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (img / split / cls).mkdir(parents=True, exist_ok=True)
    hf = tmp / "hf"
    (hf / "train").mkdir(parents=True, exist_ok=True)
    return [
        ("csv", {"name": "csv", "train": str(tmp / "tr.csv"), "test": str(tmp / "te.csv")},
         [tmp / "tr.csv", tmp / "te.csv"], junk),
        ("npz", {"name": "npz", "path": str(tmp / "d.npz")}, [tmp / "d.npz"], junk),
        ("parquet", {"name": "parquet", "train": str(tmp / "tr.parquet"), "test": str(tmp / "te.parquet")},
         [tmp / "tr.parquet", tmp / "te.parquet"], junk),
        ("images", {"name": "images", "root": str(img)},
         [img / s / c / "x.png" for s in ("train", "test") for c in ("a", "b")], junk),
        ("hf_disk", {"name": "hf_disk", "path": str(hf)}, [hf / "dataset_dict.json", hf / "train" / "data.arrow"],
         junk),
    ]


def data_files_of_random_bytes(tmp: Path):
    rng, results = random.Random(SEED), []
    for _ in range(5):
        for name, section, files, junk in _data_configs(tmp, rng):
            for f in files:
                f.write_bytes(junk())
            ok, why = run_refused(tmp, data=section, teachers=ONE_TEACHER)
            results.append((ok, f"{name}: {why}"))
    return tally(results, "random bytes as csv, npz, parquet, image and save_to_disk files")


def csv_files_with_bad_rows(tmp: Path):
    """Ragged rows, non-UTF-8 bytes, NaN and infinity, missing label column, empty, header only."""
    rng, results = random.Random(SEED), []
    header = "f1,f2,f3,label\n"

    def rows(n):
        return "".join(f"{rng.random():.3f},{rng.random():.3f},{rng.random():.3f},{rng.randint(0, 2)}\n"
                       for _ in range(n))

    variants = [
        lambda: (header + rows(30) + "1.0,2.0\n" + rows(5)).encode(),
        lambda: (header + rows(30)).encode() + b"\xff\xfe,\x80,1,0\n",
        lambda: (header + rows(30) + "nan,1,2,0\n").encode(),
        lambda: (header + rows(30) + f"{rng.choice(['inf', '-inf', '1e999'])},1,2,1\n").encode(),
        lambda: ("f1,f2,f3\n" + "".join("1,2,3\n" for _ in range(10))).encode(),
        lambda: b"",
        lambda: header.encode(),
        lambda: (header + rows(30) + "1,2,3,0,9,9\n").encode(),
    ]
    for i in range(32):
        bad = variants[i % len(variants)]()
        (tmp / "tr.csv").write_bytes(bad)
        (tmp / "te.csv").write_bytes((header + rows(20)).encode())
        ok, why = run_refused(tmp, data={"name": "csv", "train": str(tmp / "tr.csv"), "test": str(tmp / "te.csv")},
                              teachers=ONE_TEACHER)
        results.append((ok, f"variant {i % len(variants)}: {why}"))
    return tally(results, "ragged, non-UTF-8, NaN/inf, no label column, empty, header only, extra cells")


# ------------------------------------------------------------------ model files

def model_files_damaged_or_mismatched(tmp: Path):
    """Teacher files of random bytes, truncated, of another shape, or expecting other inputs."""
    from mtkd.config import _model
    from mtkd.models import build_model
    from mtkd.models.files import save_model_file

    rng = random.Random(SEED)
    arch = _model({"arch": "mlp", "hidden": [8]}, "t")
    save_model_file(tmp / "good.pt", build_model(arch, (40,), 10), arch, (40,), 10)
    save_model_file(tmp / "other.pt", build_model(arch, (7,), 10), arch, (7,), 10)  # made for 7 inputs
    good = (tmp / "good.pt").read_bytes()
    torch.jit.save(torch.jit.script(torch.nn.Linear(7, 10)), str(tmp / "ts_other.pt"))
    torch.save({"0.weight": torch.zeros(3, 3)}, tmp / "sd.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Linear(7, 10), (torch.zeros(2, 7),), str(tmp / "other.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    cases = []
    for _ in range(4):
        cases.append(("mtkd", {"checkpoint": str(tmp / "bad.pt")},
                      lambda: (tmp / "bad.pt").write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 900))))))
        cases.append(("mtkd", {"checkpoint": str(tmp / "bad.pt")},
                      lambda: (tmp / "bad.pt").write_bytes(good[: rng.randint(0, len(good) - 1)])))
        cases.append(("torchscript", {"kind": "torchscript", "path": str(tmp / "bad.pt"), "allow_code": True},
                      lambda: (tmp / "bad.pt").write_bytes(bytes(rng.getrandbits(8) for _ in range(500)))))
        cases.append(("onnx", {"kind": "onnx", "path": str(tmp / "bad.onnx")},
                      lambda: (tmp / "bad.onnx").write_bytes(bytes(rng.getrandbits(8) for _ in range(500)))))
    cases += [("mtkd", {"checkpoint": str(tmp / "other.pt")}, lambda: None),
              ("torchscript", {"kind": "torchscript", "path": str(tmp / "ts_other.pt"), "allow_code": True},
               lambda: None),
              ("state_dict", {"kind": "state_dict", "path": str(tmp / "sd.pt"), "arch": "mlp", "hidden": [8]},
               lambda: None),
              ("onnx", {"kind": "onnx", "path": str(tmp / "other.onnx")}, lambda: None)]
    results = []
    for what, entry, make in cases:
        make()
        ok, why = run_refused(tmp, teachers=[{"name": "t", **entry}])
        results.append((ok, f"{what}: {why}"))
    return tally(results, "random/truncated mtkd, TorchScript, ONNX files; weights or inputs of another shape")


def code_in_files_without_opt_in(tmp: Path):
    """Pickles and TorchScript programs are not loaded without --allow-code; a payload never runs."""
    import pickle

    tried, held = 0, 0
    owned = tmp / "owned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {owned}",))

    (tmp / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    torch.save({"format": "mtkd.model/1", "payload": Payload()}, tmp / "evil.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(40, 10)), str(tmp / "ts.pt"))
    hf = tmp / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    entries = [{"kind": "sklearn", "path": str(tmp / "evil.pkl")}, {"checkpoint": str(tmp / "evil.pt")},
               {"kind": "torchscript", "path": str(tmp / "ts.pt")}, {"kind": "hf", "path": str(hf)},
               {"kind": "state_dict", "path": str(tmp / "evil.pt"), "arch": "mlp"}]
    for entry in entries:
        raw = tiny()
        raw["teachers"] = [{"name": "t", **entry}]
        for command in ("run", "cache", "select"):
            if command == "select":
                raw["teachers"] = [{"name": "t", **entry}, {"name": "u", **entry}]
            cfg = write(tmp / "c.yaml", raw)
            argv = [command, str(cfg), "--out", str(tmp / ("sel.yaml" if command == "select" else "run"))]
            code, err = cli(argv + (["--no-progress"] if command != "select" else []))
            tried += 1
            held += refused(code, err) and not owned.exists() and not (tmp / "run").exists() \
                and not (tmp / "sel.yaml").exists()
    return tried, held, 0, "pickle (sklearn, torch), TorchScript, Hugging Face .bin under run, cache, select: " \
                           f"refused; payload ran: {owned.exists()}"


# ------------------------------------------------------------------ ownership

def user_files_in_out_directory(tmp: Path):
    """Every writing command, with and without --restart/--force, pointed at a folder of the
    user's (holding a config.yaml among other files): every file stays byte-identical."""
    run = finished_run()
    user = tmp / "project"
    (user / "src").mkdir(parents=True)
    (user / "config.yaml").write_text("seed: 1\n# my own config\n")
    (user / "thesis.tex").write_text("\\section{Results}\n")
    (user / "src" / "main.py").write_text("print('hello')\n")
    (user / "student.onnx").write_bytes(b"my model")
    (user / "report.md").write_text("# my notes\n")
    before = snapshot(user)
    sel = dict(tiny(), teachers=[{"name": n, "checkpoint": str(run / "teachers" / f"{n}.pt")} for n in ("cnn", "mlp")])
    sel["data"] = dict(sel["data"], val_fraction=0.2)
    cfg, sel_cfg = write(tmp / "c.yaml", tiny()), write(tmp / "s.yaml", sel)
    commands = []
    for flags in ([], ["--restart"], ["--force"], ["--restart", "--force"]):
        commands += [["run", str(cfg), "--out", str(user), "--no-progress", *flags],
                     ["demo", "--fast", "--out", str(user), "--no-progress", *flags]]
    for flags in ([], ["--force"]):
        commands.append(["cache", str(cfg), "--out", str(user), "--no-progress", *flags])
    commands += [["report", str(run), "--out", str(user)],
                 ["export", str(run), "--out", str(user)],
                 ["export", str(run), "--out", str(user / "student.onnx")],
                 ["export", str(run), "--format", "torchscript", "--out", str(user / "thesis.tex")],
                 ["select", str(sel_cfg), "--out", str(user / "config.yaml")],
                 ["select", str(sel_cfg), "--out", str(user)]]
    tried = held = 0
    fails = []
    for argv in commands:
        code, err = cli(argv)
        tried += 1
        ok = refused(code, err) and lost_files(before, user) == 0 and set(snapshot(user)) == set(before)
        held += ok
        if not ok:
            fails.append(f"{' '.join(argv[:1] + argv[-2:])}: exit {code} {err[-90:]}")
    return tried, held, lost_files(before, user), \
        f"run, demo, cache (with --restart/--force), report, export, select at a folder of 5 user files" + \
        (f"; failed: {fails[:2]}" if fails else "")


def out_paths_refused(tmp: Path):
    """--out at the working directory, its parent, /, the home directory, a symlink, a file."""
    cfg = write(tmp / "c.yaml", tiny())
    real = tmp / "real"
    real.mkdir()
    (tmp / "link").symlink_to(real)
    (tmp / "afile").write_text("keep me")
    before = snapshot(tmp)
    outs = [".", "..", "/", str(Path.home()), str(tmp / "link"), str(tmp / "link" / "run"), str(tmp / "afile")]
    tried = held = 0
    for out in outs:
        for command in (["run", str(cfg), "--restart"], ["cache", str(cfg)]):
            code, err = cli([*command, "--out", out, "--no-progress"])
            tried += 1
            held += refused(code, err) and not list(real.iterdir())
    return tried, held, lost_files(before, tmp), ". .. / ~ symlink, through a symlink, a file; run and cache"


def second_process_and_stale_lock(tmp: Path):
    """A second process on a locked run directory stops naming the holder; after the holder is
    killed (SIGKILL), its stale lock blocks nothing."""
    from mtkd import rundir

    run = finished_run()
    out = tmp / "report"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from mtkd import rundir; rundir.claim(sys.argv[1], 'report'); "
                               "print('held', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    code, err = cli(["report", str(run), "--out", str(out), "--no-plots"])
    named = refused(code, err) and f"process {holder.pid}" in err
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    code2, err2 = cli(["report", str(run), "--out", str(out), "--no-plots"])
    rd, _ = rundir.claim(out, "report")
    rd.release()
    return 2, int(named) + int(code2 == 0), 0, f"second process refused naming pid {holder.pid}: {named}; " \
                                                 f"after SIGKILL the next one runs: {code2 == 0}"


def damaged_markers(tmp: Path):
    """A marker that is not mtkd's (garbage, entries leaving the folder): refused, nothing removed."""
    cfg = write(tmp / "c.yaml", tiny())
    variants = [b"garbage", b"{}", json.dumps({"format": "mtkd.run/1", "entries": ["../outside"]}).encode(),
                json.dumps({"format": "mtkd.run/1", "entries": [".."]}).encode(),
                json.dumps({"format": "other", "entries": ["thesis.tex"]}).encode(), b"\xff\xfe"]
    tried = held = 0
    for v in variants:
        out = tmp / "run"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        (out / ".mtkd-run.json").write_bytes(v)
        (out / "thesis.tex").write_text("mine")
        (tmp / "outside").write_text("mine too")
        before = snapshot(tmp)
        code, err = cli(["run", str(cfg), "--out", str(out), "--no-progress", "--restart"])
        tried += 1
        held += refused(code, err) and lost_files(before, tmp) == 0
    return tried, held, 0, "garbage, empty, entries '../x' and '..', another format, bytes; with --restart"


def resume_with_changed_inputs(tmp: Path):
    """A resumed run whose teacher file or mtkd version changed is refused naming it; --force goes on."""
    from fault_injection import interrupted_at

    run = finished_run()
    shutil.copy(run / "teachers" / "mlp.pt", tmp / "t.pt")
    raw = dict(tiny(), teachers=[{"name": "t", "checkpoint": str(tmp / "t.pt")}])
    cfg = write(tmp / "c.yaml", raw)
    with interrupted_at(12):
        cli(["run", str(cfg), "--out", str(tmp / "run"), "--no-progress"])
    shutil.copy(run / "teachers" / "cnn.pt", tmp / "t.pt")  # another teacher file under the same name
    ckpt = tmp / "run" / "checkpoints" / "student.pt"
    before = ckpt.read_bytes()
    code, err = cli(["run", str(cfg), "--out", str(tmp / "run"), "--no-progress"])
    teacher_named = refused(code, err) and "t.pt" in err and ckpt.read_bytes() == before
    shutil.copy(run / "teachers" / "mlp.pt", tmp / "t.pt")
    marker = tmp / "run" / ".mtkd-run.json"
    m = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(m, mtkd_version="0.0.1")))
    code, err = cli(["run", str(cfg), "--out", str(tmp / "run"), "--no-progress"])
    version_named = refused(code, err) and "mtkd 0.0.1" in err
    code3, _ = cli(["run", str(cfg), "--out", str(tmp / "run"), "--no-progress", "--force"])
    return 3, int(teacher_named) + int(version_named) + int(code3 == 0), 0, \
        f"changed teacher file named: {teacher_named}; older mtkd version named: {version_named}; " \
        f"--force continues: {code3 == 0}"


def sigterm_during_training(tmp: Path):
    """SIGTERM at a random moment: exit 130, no partial file, the resumed run equals an unbroken one."""
    cfg = write(tmp / "c.yaml", tiny(steps=400, checkpoint_every=20))
    cmd = [sys.executable, "-m", "mtkd", "run", str(cfg), "--no-progress"]
    ckpt = tmp / "term" / "checkpoints" / "student.pt"
    proc = subprocess.Popen(cmd + ["--out", str(tmp / "term")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(random.Random(SEED).uniform(0.0, 0.2))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    partial = [p for p in (tmp / "term").rglob("*.tmp")]
    resumed = subprocess.run(cmd + ["--out", str(tmp / "term")], capture_output=True).returncode == 0
    code, _ = cli(["run", str(cfg), "--out", str(tmp / "whole"), "--no-progress"])
    a = torch.load(tmp / "term" / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp / "whole" / "student.pt", weights_only=True)["state_dict"]
    same = resumed and code == 0 and all(torch.equal(a[k], b[k]) for k in a)
    ok = proc.returncode in (130, 0) and not partial and same
    return 1, int(ok), 0, f"exit {proc.returncode}, {len(partial)} partial files, resumed equals unbroken: {same}"


def cache_entries_damaged(tmp: Path):
    """Hand-edited, truncated or damaged cache manifests and files: rebuilt, never a traceback."""
    from mtkd.cache.build import build_cache
    from mtkd.data import IndexedTensorDataset

    rng = random.Random(SEED)
    torch.manual_seed(0)
    data = IndexedTensorDataset(torch.randn(64, 5), torch.randint(0, 3, (64,)))
    teacher = torch.nn.Linear(5, 3)
    build = lambda: build_cache([("t", lambda: teacher)], data, tmp / "cache", log=lambda m: None)  # noqa: E731
    entry = build().entries[0].path
    reference = entry.joinpath("logits.npy").read_bytes()
    edits = [
        lambda m: "not json",
        lambda m: json.dumps([m]),
        lambda m: json.dumps(dict(m, files={"../../escape.npy": m["files"]["logits.npy"]})),
        lambda m: json.dumps(dict(m, files={"logits.npy": dict(m["files"]["logits.npy"], bytes="many")})),
        lambda m: json.dumps(dict(m, num_classes=None)),
        lambda m: json.dumps({k: v for k, v in m.items() if k != "files"}),
        lambda m: json.dumps(m)[: rng.randint(1, 200)],
        lambda m: json.dumps(dict(m, format="mtkd.cache/999")),
    ]
    tried = held = 0
    for i in range(24):
        manifest = json.loads((entry / "manifest.json").read_text())
        if i % 3 == 2:  # damage a data file instead
            f = entry / "logits.npy"
            raw = bytearray(f.read_bytes())
            raw[rng.randrange(len(raw))] ^= 0xFF
            f.write_bytes(bytes(raw[: rng.choice([len(raw), len(raw) // 2])]))
        else:
            (entry / "manifest.json").write_text(edits[i % len(edits)](manifest))
        try:
            report = build()
            ok = report.built == ["t"] and entry.joinpath("logits.npy").read_bytes() == reference
        except Exception:  # noqa: BLE001 - any escape is a failed case
            ok = False
        tried += 1
        held += ok
    return tried, held, 0, "manifests: garbage, wrong types, keys missing, files outside the entry, truncated, " \
                           "other format; data files flipped or cut: each rebuilt, identical"


CLASSES = [yaml_bombs_depth_and_huge_values, set_values_out_of_range, data_files_of_random_bytes,
           csv_files_with_bad_rows, model_files_damaged_or_mismatched, code_in_files_without_opt_in,
           user_files_in_out_directory, out_paths_refused, second_process_and_stale_lock, damaged_markers,
           resume_with_changed_inputs, cache_entries_damaged, sigterm_during_training]
