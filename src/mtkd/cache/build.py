"""Build (or reuse) the cache entries of a teacher pool, one teacher in memory at a time.

Memory-aware schedule: each teacher is given as a *loader* (a function returning the model);
it is loaded, run over the whole transfer set in batches, its outputs streamed into
memory-mapped files, and released (``del`` + ``gc.collect()`` + ``torch.cuda.empty_cache()``)
before the next one is loaded, so the peak is one teacher plus one batch, whatever the pool.
An entry that already exists and verifies is reused without running the teacher; a damaged
one (truncated, corrupted) is reported and rebuilt.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..data import IndexedTensorDataset
from ..errors import ConfigError
from ..precision import autocast
from ..rundir import exclusive
from .store import STACK_LIMIT, CacheError, Entry, commit_entry, data_fingerprint, entry_key, new_entry_dir, \
    new_entry_root, open_entry, teacher_fingerprint
from .topk import compress_topk, expand_topk, topk_error

TeacherLoader = Callable[[], nn.Module]


@dataclass
class CacheOptions:
    storage: Literal["full", "topk"] = "full"
    dtype: Literal["float32", "float16"] = "float32"  # of stored logits (storage "full")
    topk: int = 0  # classes kept per sample (storage "topk")
    verify: Literal["checksum", "size", "none"] = "checksum"
    batch_size: int = 1024
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast while the teachers run
    temperature: float = 4.0  # at which the top-k error is measured

    def storage_key(self) -> dict:
        """What changes the stored numbers (verification and batch size do not)."""
        return {"storage": self.storage, "dtype": self.dtype if self.storage == "full" else "float16",
                "topk": self.topk if self.storage == "topk" else 0, "amp": self.amp}


@dataclass
class BuildReport:
    entries: list[Entry] = field(default_factory=list)
    built: list[str] = field(default_factory=list)  # teachers whose entry was (re)built
    seconds: dict[str, float] = field(default_factory=dict)  # build time per built teacher
    data_fingerprint: str = ""

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.entries)


def _release(model: nn.Module | None, device: torch.device) -> None:
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fill(model: nn.Module, name: str, data: IndexedTensorDataset, tmp: Path, opts: CacheOptions,
          device: torch.device, num_classes: int | None) -> dict:
    """Run ``model`` over ``data``, streaming its outputs into .npy memmaps in ``tmp``; returns metadata."""
    from ..teachers.frozen import FrozenTeacher

    teacher = FrozenTeacher(model, name, num_classes)  # validates every batch: shape, finite
    n = len(data)
    np.save(tmp / "index.npy", data.index.numpy().astype(np.int64))
    arrays: dict[str, np.ndarray] = {}
    err = {"kl_sum": 0.0, "kl_max": 0.0, "agree": 0.0}
    for start in range(0, n, opts.batch_size):
        xb = data.x[start:start + opts.batch_size].to(device)
        ib = data.index[start:start + opts.batch_size]
        with torch.inference_mode(), autocast(device, opts.amp):
            out = teacher(xb, ib).float().cpu()  # [b, C]
        if not arrays:  # shapes are known after the first batch
            c = out.shape[1]
            teacher.num_classes = c
            if opts.storage == "full":
                arrays["logits"] = np.lib.format.open_memmap(tmp / "logits.npy", "w+", opts.dtype, (n, c))
            else:
                k = min(opts.topk, c)
                vals, ids, _ = compress_topk(out[:1], k)
                arrays["values"] = np.lib.format.open_memmap(tmp / "values.npy", "w+", np.float16, (n, k))
                arrays["classes"] = np.lib.format.open_memmap(tmp / "classes.npy", "w+", ids.numpy().dtype, (n, k))
                arrays["tail"] = np.lib.format.open_memmap(tmp / "tail.npy", "w+", np.float32, (n,))
        end = start + len(out)
        if opts.storage == "full":
            arrays["logits"][start:end] = out.numpy().astype(opts.dtype)
        else:
            vals, ids, tail = compress_topk(out, opts.topk)
            arrays["values"][start:end], arrays["classes"][start:end], arrays["tail"][start:end] = \
                vals.numpy(), ids.numpy(), tail.numpy()
            e = topk_error(out, expand_topk(vals, ids, tail, out.shape[1]), opts.temperature)
            err["kl_sum"] += e["kl_mean"] * len(out)
            err["kl_max"] = max(err["kl_max"], e["kl_max"])
            err["agree"] += e["top1_agreement"] * len(out)
    for array in arrays.values():
        array.flush()
    meta = {"num_samples": n, "num_classes": int(teacher.num_classes or 0), "storage": opts.storage}
    if opts.storage == "topk":
        meta["topk_error"] = {"temperature": opts.temperature, "kl_mean": err["kl_sum"] / max(n, 1),
                              "kl_max": err["kl_max"], "top1_agreement": err["agree"] / max(n, 1)}
    del arrays
    return meta


def reuse_or_build(load: TeacherLoader, name: str, key_of: Callable[[nn.Module], str], root: Path,
                   fill: Callable[[nn.Module, Path], dict], device: torch.device, verify: str,
                   log: Callable[[str], None]) -> tuple[Entry, float | None]:
    """One teacher's entry ``root/name-key`` (key = ``key_of(model)``): reused if it exists and
    verifies, else (re)built by ``fill(model, tmp)`` (which writes the .npy files into the temporary
    directory ``tmp`` and returns the manifest's metadata) and committed atomically. The model is
    loaded here and released before returning, so one teacher is in memory at a time.
    Returns (entry, build seconds or None when reused)."""
    model = load()
    key = key_of(model)
    path = root / f"{name}-{key}"
    new_entry_root(root, name)
    # one process per entry at a time: another one (a second run sharing the cache) waits, then
    # reuses the entry the first one built or checked
    lock = exclusive(root / f".{name}-{key}.lock", f"teacher cache entry {path}", wait=log)
    try:
        if path.exists():
            try:
                entry = open_entry(path, verify)
                model = None  # the last reference: freed before the next teacher is loaded
                _release(model, device)
                log(f"teacher cache: reusing {path}")
                return entry, None
            except CacheError as exc:
                log(f"{exc}; rebuilding it")
        started = time.perf_counter()
        model.to(device)
        tmp = new_entry_dir(root, name, key)
        try:
            meta = fill(model, tmp)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            model = None
            _release(model, device)
        commit_entry(tmp, root, name, key, meta)
        entry = open_entry(path, "size")  # just written and checksummed
        seconds = time.perf_counter() - started
        log(f"teacher cache: built {path} ({entry.bytes / 2**20:.1f} MiB, {seconds:.1f} s)")
        return entry, seconds
    finally:
        lock.release()


def build_cache(teachers: Sequence[tuple[str, TeacherLoader]], data: IndexedTensorDataset, root: str | Path,
                options: CacheOptions | None = None, device: torch.device | str = "cpu", preprocessing: str = "",
                augmentation: str | None = None, num_classes: int | None = None,
                log: Callable[[str], None] = lambda m: None, fingerprint_data: Callable | None = None,
                extra_manifest: dict | None = None) -> BuildReport:
    """Make sure every teacher has a valid cache entry for ``data``; return them, in order.

    teachers: (name, loader) pairs; each loader returns the teacher's model and is called once.
    preprocessing: a description of whatever transforms inputs before the teachers see them
    (part of the key). augmentation: a description of random augmentation in the data
    pipeline, or None; a cache of one fixed view would serve outputs of another view, so
    this is refused (``mtkd.cache.views`` records views instead). fingerprint_data: how to
    fingerprint ``data`` when it is not held in memory (recorded views); extra_manifest: more
    manifest keys.
    """
    opts = options or CacheOptions()
    if augmentation:
        raise ConfigError(f"teacher-output cache: the data pipeline applies random augmentation ({augmentation}), "
                          "so a stored output would belong to another view of the sample; set distill.cache: off "
                          "to run the teachers live")
    if opts.storage == "topk" and opts.topk <= 0:
        raise ConfigError("cache: storage 'topk' needs topk > 0 (classes kept per sample)")
    root, device = Path(root), torch.device(device)
    report = BuildReport(data_fingerprint=fingerprint_data(data) if fingerprint_data
                         else data_fingerprint(data.x, data.index))
    for name, load in teachers:
        def fill(model: nn.Module, tmp: Path, name=name) -> dict:
            meta = _fill(model, name, data, tmp, opts, device, num_classes)
            meta.update({"data_fingerprint": report.data_fingerprint, "preprocessing": preprocessing,
                         "options": opts.storage_key(), **(extra_manifest or {})})
            return meta

        def key_of(model: nn.Module) -> str:
            return entry_key(report.data_fingerprint, teacher_fingerprint(model), preprocessing, opts.storage_key())

        entry, seconds = reuse_or_build(load, name, key_of, root, fill, device, opts.verify, log)
        report.entries.append(entry)
        if seconds is not None:
            report.seconds[name] = seconds
            report.built.append(name)
    return report


def open_cached_teachers(report: BuildReport, data: IndexedTensorDataset,
                         models: Sequence | None = None, stacked: bool = True) -> list:
    """CachedTeacher objects over the entries of ``report`` (built on ``data``), sharing one input check.

    models: optional live models (or FrozenTeachers, which keep their placement), one per entry, used
    for inputs outside the cache.
    stacked: also keep every teacher's logits in one [K, N, C] tensor (full storage only), so
    a step reads the whole pool with one gather; costs one in-memory copy of the entries, so it is
    done only up to ``STACK_LIMIT`` bytes: larger pools are read through their memory maps."""
    from ..teachers.cached import CachedPool, CachedTeacher, TransferSet

    for e in report.entries:
        if e.manifest["data_fingerprint"] != report.data_fingerprint:
            raise CacheError(f"teacher cache entry {e.path} was built on other data; rebuild it with `mtkd cache`")
    transfer = TransferSet(data.x, data.index)
    models = list(models) if models is not None else [None] * len(report.entries)
    teachers = [CachedTeacher(e, transfer, m) for e, m in zip(report.entries, models)]
    dtypes = {str(t.arrays["logits"].dtype) if "logits" in t.arrays else "topk" for t in teachers}
    small = sum(e.bytes for e in report.entries) <= STACK_LIMIT
    if stacked and small and len(teachers) > 1 and len(dtypes) == 1 and "topk" not in dtypes:
        CachedPool(teachers)  # the pool's lookups become one gather
    return teachers


def options_from(distill) -> CacheOptions:
    """CacheOptions from the ``distill`` section's cache_* keys."""
    storage = "topk" if distill.cache_storage == "topk" else "full"
    return CacheOptions(storage=storage, dtype="float16" if distill.cache_storage == "float16" else "float32",
                        topk=distill.cache_topk, amp=distill.amp, temperature=distill.temperature)


def cached_pool(teachers: Sequence, data: IndexedTensorDataset, root: str | Path, distill,
                device: torch.device, log: Callable[[str], None] = lambda m: None) -> list:
    """The pipeline's entry point: FrozenTeachers -> CachedTeachers over ``data`` (built or reused),
    each keeping its live model as the fallback for inputs outside the cache (validation data)."""
    from .. import distributed

    opts = options_from(distill)
    loaders = [(t.name, (lambda m=t.model: m)) for t in teachers]
    if distributed.is_main():  # one process builds, the others wait and then reuse it
        report = build_cache(loaders, data, root, opts, device, preprocessing="inputs as stored",
                             augmentation=getattr(data, "augmentation", None), log=log)
    distributed.barrier()
    if not distributed.is_main():
        report = build_cache(loaders, data, root, opts, device, preprocessing="inputs as stored")
    for e in report.entries:
        if "topk_error" in e.manifest:
            err = e.manifest["topk_error"]
            log(f"teacher cache: '{e.teacher}' top-{distill.cache_topk} float16 storage costs KL "
                f"{err['kl_mean']:.2e} nats on average (max {err['kl_max']:.2e}) at T={err['temperature']:g}, "
                f"top-1 agreement {err['top1_agreement']:.4f}")
    return [c.to(device) for c in open_cached_teachers(report, data, teachers)]
