"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Every file is written to a temporary sibling, flushed, fsynced and renamed over
the target; ``os.replace`` is atomic on POSIX and Windows.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from . import distributed


@functools.cache
def _umask() -> int:
    """The process's umask (reading it means setting it; once, then restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# called with every path written through _atomic, before it is written; rundir.py adds its
# note_written when a process opens a run directory (so io.py needs no import of rundir.py)
BEFORE_WRITE: list[Callable[[Path], None]] = []


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str, every_rank: bool = False) -> None:

    # under torchrun only rank 0 writes shared files (the others hold the same state), except a
    # file that is each rank's own (every_rank: a per-process checkpoint)
    if not every_rank and not distributed.is_main():
        return
    path = Path(path)
    for hook in BEFORE_WRITE:  # e.g. rundir.note_written: listed in its run's marker before it exists there
        hook(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a writer killed mid-write (SIGKILL) leaves its temporary file; the next write clears it
    # (each file has one writer at a time: in a distributed run only one rank writes)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; files get the user's umask, as open() would
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    _atomic(path, lambda h: h.write(text), "w")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def update_sha256(h, path: str | Path, chunk: int = 1 << 22) -> None:
    """Feed a file's bytes to the hashlib object ``h``, a chunk at a time (files may be GBs)."""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)


def save_torch(path: str | Path, obj: Any, every_rank: bool = False) -> None:
    _atomic(path, lambda h: torch.save(obj, h), "wb", every_rank)


def load_torch(path: str | Path) -> Any:
    """Load a checkpoint written by mtkd; ``weights_only`` so a file cannot run code."""
    return torch.load(path, map_location="cpu", weights_only=True)
