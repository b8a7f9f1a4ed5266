"""Optional dependencies (onnxruntime, transformers, pyarrow, pillow, ...): imported when a
feature needs them, with a one-line message naming the extra that installs them. A leaf
module: it imports nothing of mtkd but its errors."""
from __future__ import annotations

import importlib

from .errors import MtkdError


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MtkdError(f"{what} needs the optional package '{module}': pip install 'mtkd[{extra}]'") from None
