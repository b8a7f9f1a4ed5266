"""Peak memory of `mtkd cache` and `mtkd run` as the transfer set grows (data set `arrays`,
memory-mapped .npy files), against the same data in an in-memory `.npz` file.

    python benchmarks/memory.py                       # 1x, 2x, 4x of 128 MiB of inputs
    python benchmarks/memory.py --mib 16 --scales 1 4 --formats arrays   # a quick look
    python benchmarks/memory.py --mib 512 --formats arrays --write        # the docs' table (3 GiB at 4x)

Each command runs in its own process; the parent reads /proc/PID/status every 20 ms and keeps the
peak of RssAnon (memory the process owns: tensors, copies) and RssFile (pages of mapped files: the
memory map's page cache, which the kernel can drop and re-read at any time), plus the kernel's
peak RSS of the whole process (ru_maxrss, both kinds). Data: x_train [N, 512] float32 (N grows
with the scale) and an unlabeled pool x_unlabeled [N/2, 512] (so the transfer set is labeled +
unlabeled rows, read through one view of both maps), 2,000 test samples; one small MLP teacher
(trained 20 steps), the student distilled 60 steps (recipe offline over the transfer set) from
cached teacher outputs. Linux only. ``--write``: benchmarks/results/memory.json and memory.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

WIDTH = 512


def make_data(root: Path, rows: int, fmt: str) -> Path:
    """Inputs whose class is the sign pattern of two coordinates, written 64 MiB at a time."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    x = np.lib.format.open_memmap(root / "x_train.npy", "w+", np.float32, (rows, WIDTH))
    y = np.empty(rows, np.int64)
    step = max(1, (64 << 20) // (4 * WIDTH))
    for i in range(0, rows, step):
        block = rng.standard_normal((min(step, rows - i), WIDTH), dtype=np.float32)
        x[i:i + len(block)] = block
        y[i:i + len(block)] = (block[:, 0] > 0) * 2 + (block[:, 1] > 0)
    x.flush()
    del x
    np.save(root / "y_train.npy", y)
    pool = np.lib.format.open_memmap(root / "x_unlabeled.npy", "w+", np.float32, (rows // 2, WIDTH))
    for i in range(0, rows // 2, step):
        pool[i:i + step] = rng.standard_normal((min(step, rows // 2 - i), WIDTH), dtype=np.float32)
    pool.flush()
    del pool
    xt = rng.standard_normal((2000, WIDTH), dtype=np.float32)
    np.save(root / "x_test.npy", xt)
    np.save(root / "y_test.npy", ((xt[:, 0] > 0) * 2 + (xt[:, 1] > 0)).astype(np.int64))
    if fmt == "npz":
        arrays = {k: np.load(root / f"{k}.npy") for k in ("x_train", "y_train", "x_test", "y_test", "x_unlabeled")}
        np.savez(root / "data.npz", **arrays)
        del arrays
        return root / "data.npz"
    return root


def config(data: Path, fmt: str, out: Path) -> Path:
    cfg = {
        "seed": 0,
        "data": {"name": fmt, "path": str(data)},
        "teachers": [{"name": "t", "arch": "mlp", "hidden": [16], "train": {"steps": 20, "batch_size": 256,
                                                                             "eval_every": 20}}],
        "student": {"arch": "mlp", "hidden": [16]},
        "distill": {"steps": 60, "batch_size": 256, "eval_every": 60, "log_every": 20, "checkpoint_every": 60,
                    "cache": "always"},
        "output": {"dir": str(out), "plots": False},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def measure(cmd: list[str]) -> dict:
    """Peak RssAnon / RssFile (MiB, sampled) and ru_maxrss (MiB) of one command."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = {"RssAnon": 0, "RssFile": 0}
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaps it, with its resource usage
        if pid:
            break
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                key = line.split(":")[0]
                if key in peak:
                    peak[key] = max(peak[key], int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.02)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"anon": peak["RssAnon"] / 1024, "file": peak["RssFile"] / 1024, "maxrss": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=128, help="inputs at scale 1, MiB")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--formats", nargs="+", default=["arrays", "npz"], choices=["arrays", "npz"])
    p.add_argument("--tmp", help="where the generated data sets go (default: the system's temporary directory)")
    p.add_argument("--write", action="store_true", help="write benchmarks/results/memory.json and memory.md")
    args = p.parse_args()
    env_cmd = [sys.executable, "-m", "mtkd"]
    rows_1x = args.mib * 2**20 // (4 * WIDTH)
    lines = ["| data | x_train + x_unlabeled | command | peak RssAnon MiB | peak RssFile MiB | ru_maxrss MiB |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines))
    records = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for fmt in args.formats:
            for scale in args.scales:
                work = Path(tmp) / f"{fmt}{scale}"
                data = make_data(work / "data", rows_1x * scale, fmt)
                out = work / "run"
                cfg = config(data, fmt, out)
                for command in ("cache", "run"):
                    m = measure(env_cmd + [command, str(cfg), "--out", str(out), "--no-progress"])
                    inputs = args.mib * scale * 3 // 2  # x_train plus the pool of half as many rows
                    records.append({"format": fmt, "scale": scale, "x_train_mib": args.mib * scale,
                                    "inputs_mib": inputs, "command": f"mtkd {command}",
                                    **{k: round(v, 1) for k, v in m.items()}})
                    lines.append(f"| {fmt} | {inputs} MiB | mtkd {command} | {m['anon']:.0f} | {m['file']:.0f} "
                                 f"| {m['maxrss']:.0f} |")
                    print(lines[-1], flush=True)
                subprocess.run(["rm", "-rf", str(work)], check=True)
    if args.write:
        from mtkd.io import write_json, write_text

        results = Path(__file__).parent / "results"
        write_json(results / "memory.json", {"args": vars(args) | {"tmp": None}, "records": records})
        write_text(results / "memory.md", "# Peak memory as the data grows\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
