"""The on-disk teacher-output store: one directory per (teacher, data, preprocessing) fingerprint.

Frozen teachers see the same transfer set every epoch, so their logits are a function of
(data, weights, preprocessing) alone: computing them once and reading them back turns K teacher
forward passes per step into K index gathers. An entry is a directory

    <root>/<teacher name>-<key>/manifest.json   format, fingerprints, shapes, dtypes, sizes, sha256
                               /logits.npy      [N, C] float32 or float16      (storage "full")
                               /values.npy      [N, k] float16 top-k log-probs (storage "topk")
                               /classes.npy     [N, k] int16/int32 class ids of those values
                               /tail.npy        [N] float32 probability mass outside the top k
                               /index.npy       [N] int64 sample index of each row

written into a temporary sibling and renamed into place (atomic: a reader never sees half an
entry), and opened with ``np.load(mmap_mode="c")``: pages are read on demand and stay in the
OS page cache, so later epochs read at memory speed. ``key`` hashes the data arrays, the
teacher's architecture and weights, the preprocessing description and the storage options,
so a changed teacher or data set gets a new entry and is never served stale outputs.
Every open checks each file's size against the manifest (a truncated file) and, unless told
otherwise, its sha256 (a corrupted one).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..version import __version__
from ..errors import MtkdError
from ..io import update_sha256

STACK_LIMIT = 256 * 2**20  # bytes of stored outputs up to which a pool is stacked in memory

FORMAT = "mtkd.cache/1"


class CacheError(MtkdError):
    """A cache entry is missing, truncated, corrupted or does not match what asks for it."""


# ---------------------------------------------------------------- fingerprints

def _hash_tensor(h: "hashlib._Hash", t: torch.Tensor, chunk_bytes: int = 1 << 24) -> None:
    """Feed shape, dtype and bytes of ``t`` to ``h``, 16 MiB of rows at a time: a memory-mapped
    tensor is read page by page and never copied whole (the digest is that of all bytes in order)."""
    t = t.detach().cpu().contiguous()  # no copy for a contiguous CPU tensor (a memory map)
    h.update(f"{tuple(t.shape)}{t.dtype}".encode())
    if not t.numel():
        return
    if t.dim() == 0:
        t = t.reshape(1)
    rows = max(1, chunk_bytes // max(1, t[0].numel() * t.element_size()))
    for start in range(0, len(t), rows):
        h.update(t[start:start + rows].view(torch.uint8).numpy())  # a buffer view: no bytes copy


def data_fingerprint(x: torch.Tensor, index: torch.Tensor) -> str:
    """sha256 of the transfer set as the teachers see it: inputs [N, ...] and sample indices [N]."""
    h = hashlib.sha256()
    if getattr(x, "decoded_on_read", False):  # images kept encoded: their files' bytes (mtkd.data.lazy_images)
        x.digest_into(h)
    else:
        _hash_tensor(h, x)
    _hash_tensor(h, index)
    return h.hexdigest()


def teacher_fingerprint(model: nn.Module) -> str:
    """sha256 of a teacher's architecture (its repr) and every tensor of its state_dict,
    buffers included (0-d ones such as BatchNorm's ``num_batches_tracked`` too)."""
    h = hashlib.sha256(type(model).__qualname__.encode() + repr(model).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        _hash_tensor(h, tensor)
    if hasattr(model, "content_fingerprint"):  # teachers read from ONNX / pickle / TorchScript files
        h.update(model.content_fingerprint().encode())
    return h.hexdigest()


def entry_key(data_fp: str, teacher_fp: str, preprocessing: str, storage: dict) -> str:
    text = json.dumps([FORMAT, data_fp, teacher_fp, preprocessing, storage], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    update_sha256(h, path)
    return h.hexdigest()


# ---------------------------------------------------------------- one entry

@dataclass
class Entry:
    """An opened cache entry: arrays memory-mapped copy-on-write (never written back)."""

    path: Path
    manifest: dict
    arrays: dict  # name -> np.ndarray (a memmap)

    @property
    def teacher(self) -> str:
        return self.manifest["teacher"]

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())


def new_entry_root(root: Path, name: str) -> None:
    """Create the cache folder ``root`` (listed in the marker of the run directory holding it, if any);
    a read-only place gives one line."""
    from ..rundir import note_written

    note_written(root / name)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"teacher cache {root}: cannot create it ({exc.strerror or exc}); set distill.cache_dir "
                         "to a writable folder or distill.cache: off") from None


def new_entry_dir(root: Path, name: str, key: str) -> Path:
    """A fresh temporary directory beside the entry ``root/name-key``, to be filled and committed."""
    new_entry_root(root, name)
    return Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-{key}.", suffix=".tmp"))


def commit_entry(tmp: Path, root: Path, name: str, key: str, meta: dict) -> Path:
    """Checksum every .npy file in ``tmp``, write the manifest, rename ``tmp`` to ``root/name-key``.

    The rename is the commit: a reader sees the old entry, no entry, or the whole new one."""
    final = root / f"{name}-{key}"
    try:
        files = {}
        for target in sorted(tmp.glob("*.npy")):
            with open(target, "rb+") as handle:
                os.fsync(handle.fileno())
            array = np.load(target, mmap_mode="r")
            files[target.name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                                  "bytes": target.stat().st_size, "sha256": file_sha256(target)}
            del array
        manifest = {"format": FORMAT, "mtkd_version": __version__, "teacher": name, "key": key,
                    **meta, "files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():  # a damaged entry being rebuilt
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _well_formed(manifest) -> bool:
    """The structure open_entry relies on: {"files": {"<name>.npy": {"bytes", "sha256", "shape", "dtype"}}}."""
    import re

    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return False
    types = {"teacher": str, "storage": str, "num_classes": int, "num_samples": int}
    if not all(isinstance(manifest.get(k), t) for k, t in types.items()):
        return False
    for name, info in manifest["files"].items():
        if not (isinstance(name, str) and re.fullmatch(r"[a-z_]+\.npy", name) and isinstance(info, dict)
                and isinstance(info.get("bytes"), int) and isinstance(info.get("sha256"), str)
                and isinstance(info.get("shape"), list) and isinstance(info.get("dtype"), str)):
            return False
    return True


def open_entry(path: Path, verify: str = "checksum") -> Entry:
    """Open a cache entry; raise :class:`CacheError` saying what is wrong if it is damaged.

    verify: "checksum" (size and sha256 of every file), "size" (sizes only, for very large
    entries opened often) or "none".
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CacheError(f"teacher cache entry {path} has no manifest.json (an interrupted write?); "
                         "delete the directory or rebuild with `mtkd cache`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheError(f"teacher cache entry {path}: manifest.json is damaged ({exc}); delete the "
                         "directory or rebuild with `mtkd cache`") from None
    if not _well_formed(manifest):  # hand-edited or from elsewhere: never trusted
        raise CacheError(f"teacher cache entry {path}: manifest.json is not an mtkd cache manifest (a key missing, "
                         "a value of the wrong type, or a file name outside the entry); rebuild with `mtkd cache`")
    if manifest.get("format") != FORMAT:
        raise CacheError(f"teacher cache entry {path} has format {manifest.get('format')!r}, this mtkd reads "
                         f"{FORMAT!r}; rebuild it with `mtkd cache`")
    arrays = {}
    for file_name, info in manifest["files"].items():
        file = path / file_name
        size = file.stat().st_size if file.is_file() else -1
        if verify != "none" and size != info["bytes"]:
            raise CacheError(f"teacher cache file {file} is truncated or missing ({size} bytes, the manifest "
                             f"says {info['bytes']}); rebuild it with `mtkd cache` or delete {path}")
        if verify == "checksum" and file_sha256(file) != info["sha256"]:
            raise CacheError(f"teacher cache file {file} is corrupted (sha256 differs from the manifest); "
                             f"rebuild it with `mtkd cache` or delete {path}")
        try:
            array = np.load(file, mmap_mode="c")
        except (OSError, ValueError) as exc:
            raise CacheError(f"teacher cache file {file} cannot be read ({exc}); rebuild it with `mtkd cache` "
                             f"or delete {path}") from None
        if list(array.shape) != info["shape"] or str(array.dtype) != info["dtype"]:
            raise CacheError(f"teacher cache file {file} holds {list(array.shape)} {array.dtype}, the manifest "
                             f"says {info['shape']} {info['dtype']}; rebuild it with `mtkd cache`")
        arrays[file_name.removesuffix(".npy")] = array
    return Entry(path, manifest, arrays)
