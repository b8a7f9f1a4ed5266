"""Ranges and sizes checked before anything uses them, once per run (never per step).

- Seeds are integers in ``0 .. SEED_MAX``: numpy's generators take seeds below 2**32, and mtkd
  derives a few seeds from the configured one (``seed + 1 + i`` for teacher ``i``).
- Thread counts are in ``0 .. MAX_THREADS`` (0 = torch's default).
- A model whose parameters, with their gradients, Adam moments and a checkpoint copy, would not
  fit in the machine's memory is refused with the estimate, before any tensor is allocated:
  the model is first built on PyTorch's ``meta`` device, which records shapes and allocates
  nothing. The same for the generated data sets whose size the config sets.
"""
from __future__ import annotations

import os

from .errors import ConfigError

SEED_MAX = 2**32 - 1 - 4096
MAX_THREADS = 1024
MAX_IMAGE_PIXELS = 2**26  # 8192 x 8192: a resized image larger than this is a mistake
BYTES_PER_PARAM = 4 * 5  # float32 weights, gradients, two Adam moments, a checkpoint copy


def machine_memory() -> int:
    """Physical memory in bytes (0 when unknown: then nothing is refused)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_seed(seed, where: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{where}: an integer from 0 to {SEED_MAX:,} (got {str(seed)[:40]})")


def check_threads(n, where: str = "distill.threads") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_THREADS:
        raise ConfigError(f"{where}: a thread count from 0 (torch's default) to {MAX_THREADS} (got {str(n)[:40]})")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(what: str, needed: int, where: str) -> None:
    total = machine_memory()
    if total and needed > total:
        raise ConfigError(f"{where}: {what} needs about {_gib(needed)} of memory, and this machine has "
                          f"{_gib(total)}; make it smaller")


def model_params_on_meta(build, where: str) -> int | None:
    """Parameters of the model ``build()`` makes, built on the meta device (nothing allocated);
    None when the model cannot be built there (then the real build decides)."""
    import torch

    try:
        with torch.device("meta"):
            model = build()
    except (TypeError, RuntimeError, OverflowError, ValueError) as exc:
        text = str(exc)
        if "verflow" in text or "too large" in text or "negative dimension" in text:
            raise ConfigError(f"{where}: a size is out of range ({text.splitlines()[0][:120]})") from None
        return None
    except Exception:  # noqa: BLE001 - a model that needs real tensors at build time
        return None
    return sum(p.numel() for p in model.parameters())


def check_model_size(build, where: str) -> None:
    params = model_params_on_meta(build, where)
    if params is not None:
        check_fits(f"a model of {params:,} parameters (with its gradients, optimizer state and checkpoint)",
                   params * BYTES_PER_PARAM, where)


def check_config(cfg) -> None:
    """The ranges and sizes of a parsed config, before data is loaded or any model built."""
    check_seed(cfg.seed)
    check_threads(cfg.distill.threads)
    data_seed = getattr(cfg.data, "seed", None)
    if data_seed is not None:
        check_seed(data_seed, "data.seed")
    if getattr(cfg.data, "name", None) == "mnist1d":  # generated: 40 float32 values per sample, a few copies
        samples = int(getattr(cfg.data, "num_samples", 0)) + int(getattr(cfg.data, "unlabeled", 0) or 0)
        check_fits(f"{samples:,} MNIST-1D samples", samples * 40 * 4 * 8, "data.num_samples / data.unlabeled")
    size = getattr(cfg.data, "size", None)
    if isinstance(size, (tuple, list)) and size and all(isinstance(v, int) for v in size):
        pixels = 1
        for v in size:
            pixels *= max(int(v), 1)
        if pixels > MAX_IMAGE_PIXELS:
            raise ConfigError(f"data.size: {list(size)} is {pixels:,} pixels per image, more than {MAX_IMAGE_PIXELS:,}; "
                              "give a smaller [height, width]")
