"""What every pipeline (the classification one, the language-model one) does around its stages:
the device, the run directory (create, reopen, refuse), the disk-space check and the
fingerprint that ties a checkpoint to its config and code version."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from .errors import ConfigError, MtkdError
from .io import write_yaml
from .version import __version__


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("distill.device: 'cuda' was asked for but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


# ---------------------------------------------------------------- run directory

def _comparable(cfg_dict: dict) -> dict:
    """The parts of a resolved config that change results (not where output goes)."""
    out = dict(cfg_dict)
    out.pop("output", None)
    return out


def open_run_dir(out: Path, cfg_dict: dict, restart: bool, force: bool = False, lock: bool = True) -> str:
    """Create or reopen ``out`` (see :mod:`mtkd.rundir`: only a directory carrying mtkd's marker is
    reopened, under a lock); returns "new", "resume" or "done".

    A run directory holding another config, other input files (data, teacher files) or written by
    another mtkd version is refused, unless ``force``: then the new config replaces the saved one
    and finished stages are kept as they are. ``restart`` removes only what the marker lists."""
    from . import rundir

    rd, _ = rundir.claim(out, "run", lock=lock)
    try:
        return _open_claimed(rd, out, cfg_dict, restart, force)
    except BaseException:
        rd.release()
        raise


def _open_claimed(rd, out: Path, cfg_dict: dict, restart: bool, force: bool) -> str:
    from .rundir import changed_inputs, input_fingerprints

    if restart:
        rd.clear()
    inputs = input_fingerprints(cfg_dict)  # once per run: the files the config names
    is_run = (out / "config.yaml").is_file() and "config.yaml" in rd.entries
    if is_run:
        import yaml

        try:
            saved = yaml.safe_load((out / "config.yaml").read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError, ValueError):
            raise MtkdError(f"{out}/config.yaml is damaged; use --restart to start over or another --out") from None
        finished = (out / "summary.json").is_file()
        reasons = []
        if not isinstance(saved, dict) or _comparable(saved) != _comparable(cfg_dict):
            saved = saved if isinstance(saved, dict) else {}
            changed = sorted(k for k in set(saved) | set(cfg_dict)
                             if k != "output" and saved.get(k) != cfg_dict.get(k))
            reasons.append(f"a different config (sections {changed} differ)")
        moved = changed_inputs(rd.marker.get("inputs") or {}, inputs)
        if moved and not finished:
            reasons.append(f"input files that changed since it started ({', '.join(moved[:4])})")
        if rd.marker.get("mtkd_version") != __version__ and not finished:
            reasons.append(f"files of mtkd {rd.marker.get('mtkd_version')} (this is {__version__})")
        if reasons:
            if not force or finished:
                hint = "--force cannot change a finished run; " if force else ""
                raise MtkdError(f"{out} holds a {'finished ' if finished else ''}run with {'; '.join(reasons)}; "
                                f"{hint}use --restart to start over, another --out"
                                f"{'' if finished else ', or --force to continue it anyway'}")
            write_yaml(out / "config.yaml", cfg_dict)
            rd.marker.update(inputs=inputs, mtkd_version=__version__)
            rd.save_marker()
        return "done" if finished else "resume"
    try:
        rd.marker.update(inputs=inputs, mtkd_version=__version__)
        rd.save_marker()
        write_yaml(out / "config.yaml", cfg_dict)
    except OSError as exc:  # read-only disk, permissions, disk full: say so before any training
        raise MtkdError(f"--out {out}: cannot write the run directory ({exc.strerror or exc}); "
                        "choose a writable --out") from None
    return "new"


MIN_FREE_BYTES = 64 * 2**20  # room for metrics, plots and atomic rewrites beside the checkpoints


def check_free_space(out: Path, prep) -> None:
    """Refuse to start when the disk cannot hold what the run will write: every model file, and
    a checkpoint (weights plus two optimizer moments) plus its temporary copy during a rewrite."""
    needed = prep.params * 4 * (1 + 3 * 2) + MIN_FREE_BYTES
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise MtkdError(f"--out {out}: {free / 2**20:.0f} MiB free on its disk, the run needs about "
                        f"{needed / 2**20:.0f} MiB; free some space or choose another --out")


def fingerprint(*parts) -> str:
    text = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]



def announce(status: str, out: Path, notes, log) -> dict | None:
    """After :func:`open_run_dir`: the summary of a finished run (nothing left to do), else None,
    having said that the run resumes (when it does) and printed the run's notes."""
    if status == "done":
        log(f"{out} already holds a finished run; nothing to do (use --restart to run again)")
        return json.loads((out / "summary.json").read_text())
    if status == "resume":
        log(f"resuming the run in {out}")
    for note in notes:
        log(note)
    return None
