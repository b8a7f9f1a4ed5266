"""Seeds and random-generator state, so runs repeat and resumed runs continue exactly."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    # numpy's legacy state is a tuple holding an ndarray; stored as plain lists so
    # the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": list(_tuple_to_list(random.getstate())),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_list_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def _tuple_to_list(value: Any) -> Any:
    return [_tuple_to_list(v) for v in value] if isinstance(value, tuple) else value


def _list_to_tuple(value: Any) -> Any:
    return tuple(_list_to_tuple(v) for v in value) if isinstance(value, list) else value
