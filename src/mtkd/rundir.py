"""Run-directory ownership: mtkd removes or overwrites only what it wrote.

A directory is an mtkd run directory only if it holds the marker ``.mtkd-run.json``, which
mtkd writes before anything else:

    {"format": "mtkd.run/1", "mtkd_version": "0.1.0", "run_id": "...", "kind": "run",
     "entries": ["config.yaml", "checkpoints", ...],      # top-level names mtkd created here
     "inputs": {"data/train.csv": {"bytes": ..., "sha256": ...}, ...}}   # files the config names

``entries`` grows as mtkd creates top-level files and folders (every atomic write and every
writer that opens a file itself registers its name; the marker is rewritten atomically when a
name is new). A folder mtkd created is mtkd's with what is inside it. ``--restart`` removes
exactly the listed entries; anything else in the directory stays byte for byte. A directory
without the marker (a project, a home directory, a run of an mtkd version before the marker)
is never adopted unless it is empty.

One process per run directory: an exclusive ``flock`` (the ``filelock`` package) on
``.mtkd-run.lock`` inside it, held while the process works there, with the holder's pid and
host in ``.mtkd-run.lock.info``. The operating system drops a killed process's lock, so a
stale lock never blocks a resume.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from typing import Callable
from pathlib import Path

from . import distributed
from .errors import MtkdError
from .io import BEFORE_WRITE, write_json
from .version import __version__

FORMAT = "mtkd.run/1"
MARKER = ".mtkd-run.json"
LOCK = ".mtkd-run.lock"
# names mtkd may leave in a directory before its marker exists (the lock is taken first)
HOUSEKEEPING = {MARKER, LOCK, LOCK + ".info"}
FULL_HASH_BYTES = 64 * 2**20  # input files up to this size are hashed whole; larger ones by size, time, ends

_OPEN: dict[Path, "RunDir"] = {}  # resolved path -> the run directory this process holds


def _key(path) -> Path:
    return Path(os.path.realpath(path))


# ---------------------------------------------------------------- locks

def _holder(lock_path: Path) -> str:
    try:
        holder = json.loads(Path(str(lock_path) + ".info").read_text())
        return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"
    except (OSError, ValueError):
        return "another process"


def exclusive(lock_path: Path, what: str, wait: Callable[[str], None] | None = None):
    """Take the exclusive lock ``lock_path`` and write who holds it beside it. Held by another
    process: without ``wait``, raises MtkdError naming the holder at once (two runs must not
    share a run directory); with ``wait``, says once through it whom it waits for and blocks
    until the holder is done (a cache entry that another run is building or checking: then
    this one reuses it). The OS drops the lock of a process that dies. Returns the lock."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path), thread_local=False)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if wait is None:
                raise MtkdError(f"{what} is in use by {_holder(lock_path)}; wait for it to finish or stop it, "
                                "then run again") from None
            wait(f"{what} is in use by {_holder(lock_path)}; waiting for it to finish")
            lock.acquire()
    except OSError as exc:  # read-only directory, permissions
        raise MtkdError(f"{what}: cannot take its lock {lock_path} ({exc.strerror or exc}); "
                        "is it writable?") from None
    try:
        Path(str(lock_path) + ".info").write_text(json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    except OSError:
        pass  # the lock is what counts; the note only names the holder
    return lock


# ---------------------------------------------------------------- --out checks

def check_out_path(out: Path, option: str = "--out") -> None:
    """Refuse an output directory that is a file, a symlink, the working directory or one of
    its parents, the file system root or the home directory, before anything is written."""
    out = Path(out)
    absolute = Path(os.path.abspath(out))
    if out.is_symlink():
        raise MtkdError(f"{option} {out} is a symbolic link; give the real directory it points to "
                        f"({os.path.realpath(out)}) or a new path")
    if out.exists() and not out.is_dir():
        raise MtkdError(f"{option} {out} is a file, not a directory; choose a new directory")
    cwd, home = Path(os.path.abspath(os.getcwd())), Path(os.path.abspath(Path.home()))
    if absolute == cwd or absolute in cwd.parents or absolute == home or absolute == Path(absolute.anchor):
        raise MtkdError(f"{option} {out} is the working directory, one of its parents, the home directory or "
                        "the file system root; give a new folder for mtkd's files, e.g. runs/NAME")
    # a symlink among the parents the user named (below the working directory or the home directory)
    base = cwd if absolute.is_relative_to(cwd) else home if absolute.is_relative_to(home) else None
    if base is not None:
        p = base
        for part in absolute.relative_to(base).parts[:-1]:
            p = p / part
            if p.is_symlink():
                raise MtkdError(f"{option} {out} goes through the symbolic link {p}; give the real path "
                                f"({os.path.realpath(out)})")


def user_entries(out: Path) -> list[str]:
    """Names in ``out`` that are not mtkd's housekeeping files."""
    return sorted(p.name for p in out.iterdir() if p.name not in HOUSEKEEPING) if out.is_dir() else []


def read_marker(out: Path) -> dict | None:
    """The marker of ``out``; None without one; MtkdError for a damaged one (never trusted)."""
    path = Path(out) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        marker = None
    if not (isinstance(marker, dict) and marker.get("format") == FORMAT and isinstance(marker.get("entries"), list)
            and all(isinstance(e, str) and e and "/" not in e and e not in ("..", ".") for e in marker["entries"])):
        raise MtkdError(f"{path} is damaged (not an mtkd.run/1 marker); mtkd will not touch {out}: "
                        "move the files you want to keep and remove the directory, or choose another --out")
    return marker


# ---------------------------------------------------------------- input fingerprints

def _file_fingerprint(path: Path) -> dict:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        if st.st_size <= FULL_HASH_BYTES:
            while block := handle.read(1 << 22):
                h.update(block)
        else:  # a data set larger than memory: its size, time and both ends (read once per run)
            h.update(handle.read(1 << 22))
            handle.seek(-(1 << 22), os.SEEK_END)
            h.update(handle.read(1 << 22))
            h.update(str(st.st_mtime_ns).encode())
    return {"bytes": st.st_size, "sha256": h.hexdigest()}


def input_fingerprints(cfg_dict: dict) -> dict:
    """{path: {"bytes", "sha256"}} of every existing file a config's data/teachers/student name
    (directories: their files' names and sizes, at most 10,000)."""
    found: dict[str, dict] = {}

    def visit(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)
        elif isinstance(value, str) and len(value) < 4096 and value not in found:
            p = Path(value.split(":", 1)[1] if value.startswith(("hf:", "timm:", "torchvision:")) else value)
            try:
                if p.is_file():
                    found[value] = _file_fingerprint(p)
                elif p.is_dir() and value not in (".", ""):
                    files = sorted(f for f in p.rglob("*") if f.is_file())[:10000]
                    h = hashlib.sha256("\n".join(f"{f.relative_to(p)} {f.stat().st_size}" for f in files).encode())
                    found[value] = {"files": len(files), "sha256": h.hexdigest()}
            except OSError:
                pass

    for section in ("data", "teachers", "student"):
        visit(cfg_dict.get(section))
    return found


def changed_inputs(saved: dict, now: dict) -> list[str]:
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


# ---------------------------------------------------------------- the run directory

class RunDir:
    """A directory this process owns: its marker, its lock, and the names it created."""

    def __init__(self, path: Path, marker: dict, lock):
        self.path, self.marker, self.lock = path, marker, lock
        self.entries = set(marker["entries"])

    def save_marker(self) -> None:
        self.marker["entries"] = sorted(self.entries)
        write_json(self.path / MARKER, self.marker)

    def note(self, name: str) -> None:
        """Record that mtkd created the top-level entry ``name`` (a no-op when already listed)."""
        if name not in self.entries and name not in HOUSEKEEPING:
            self.entries.add(name)
            self.save_marker()

    def clear(self) -> None:
        """--restart: remove every listed entry, and nothing else."""
        for name in sorted(self.entries):
            p = self.path / name
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
        self.entries = set()
        self.marker["inputs"] = {}
        self.save_marker()

    def release(self) -> None:
        _OPEN.pop(_key(self.path), None)
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def precheck(out: Path, kind: str = "run") -> "RunDir | None":
    """The checks of :func:`claim` that need no write, to run before any slow work: the path,
    and a non-empty directory without the marker. Returns the RunDir if this process holds it."""
    out = Path(out)
    check_out_path(out)
    held = _OPEN.get(_key(out)) if out.exists() else None
    if held is not None:
        return held
    if out.is_dir():
        marker = read_marker(out)
        if marker is None and user_entries(out):
            old = (out / "config.yaml").is_file() and any((out / n).exists() for n in
                                                          ("metrics.jsonl", "stages.json", "checkpoints", "summary.json"))
            hint = ("it looks like a run of an mtkd version before run markers: move it aside, or copy the "
                    "files you need and remove it, then run again" if old else
                    "mtkd writes only into a new or empty directory or one it created; choose another --out")
            raise MtkdError(f"--out {out} is not an mtkd {kind} directory: it holds files mtkd did not write "
                            f"({', '.join(user_entries(out)[:3])}{', ...' if len(user_entries(out)) > 3 else ''}) "
                            f"and no {MARKER}; {hint}")
        if marker is not None and marker.get("kind", "run") != kind:
            raise MtkdError(f"--out {out} is an mtkd {marker.get('kind')} directory, not a {kind} directory; "
                            "choose another --out")
    return None


def claim(out: Path, kind: str = "run", lock: bool = True) -> tuple[RunDir, bool]:
    """Open ``out`` for writing as an mtkd directory of ``kind`` ("run", "report"): check the path,
    refuse a non-empty directory without the marker, take the lock, write the marker first in a
    new directory. Returns (the run directory, whether it was new)."""

    out = Path(out)
    held = precheck(out, kind)
    if held is not None:  # this process already holds it (e.g. mtkd cache, then its pipeline stages)
        return held, False
    try:
        out.mkdir(parents=True, exist_ok=True)
        taken = exclusive(out / LOCK, f"{out}") if lock else None
    except OSError as exc:
        raise MtkdError(f"--out {out}: cannot write the run directory ({exc.strerror or exc}); "
                        "choose a writable --out") from None
    try:
        marker = read_marker(out)  # again, under the lock
        new = marker is None
        if new:
            if user_entries(out):
                raise MtkdError(f"--out {out} received files from elsewhere while mtkd opened it; choose another --out")
            marker = {"format": FORMAT, "mtkd_version": __version__, "run_id": uuid.uuid4().hex[:12],
                      "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "entries": [], "inputs": {}}
        rd = RunDir(out, marker, taken)
        if new:
            try:
                rd.save_marker()
            except OSError as exc:
                raise MtkdError(f"--out {out}: cannot write the run directory ({exc.strerror or exc}); "
                                "choose a writable --out") from None
    except BaseException:
        if taken is not None:
            taken.release()
        raise
    _OPEN[_key(out)] = rd
    if note_written not in BEFORE_WRITE:
        BEFORE_WRITE.append(note_written)
    return rd, new


def release(out: Path) -> None:
    rd = _OPEN.get(_key(out))
    if rd is not None:
        rd.release()


def note_written(path: Path) -> None:
    """Called for every file mtkd writes: list its top-level name in the marker of the run
    directory that holds it, if this process holds one (cheap: a dict lookup per parent)."""
    if not _OPEN:
        return
    if not distributed.is_main():  # under torchrun rank 0 keeps the marker
        return
    path = Path(_key(path))
    for parent in path.parents:
        rd = _OPEN.get(parent)
        if rd is not None:
            rd.note(path.relative_to(parent).parts[0])
            return


def check_new_file(path: Path, overwrite: bool, option: str = "--out") -> None:
    """A file a command writes outside a run directory: refuse one that exists (mtkd cannot tell
    that it wrote it) unless ``overwrite`` names it, and a directory, a symlink or a run's marker."""
    path = Path(path)
    if path.is_symlink():
        raise MtkdError(f"{option} {path} is a symbolic link; give a regular file path")
    if path.is_dir():
        raise MtkdError(f"{option} {path} is a directory; give a file path")
    if path.name in HOUSEKEEPING:
        raise MtkdError(f"{option} {path}: that name is mtkd's run-directory marker; choose another file name")
    if path.exists() and not overwrite:
        raise MtkdError(f"{option} {path} exists; mtkd replaces a file only when told: pass --overwrite "
                        "to replace it, or choose another file name")
