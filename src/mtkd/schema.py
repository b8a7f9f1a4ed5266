"""Validation helpers every component's options go through, in a leaf module (it imports
nothing of mtkd but its errors): one line per error, naming the key and what is allowed."""
from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError


def did_you_mean(name: Any, options) -> str:
    """" (did you mean 'temperature'?)" for the closest of ``options`` to a mistyped ``name``, else ""."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [str(c) for c in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choices(table) -> str:
    return ", ".join(sorted(table))


def validate(schema: type[BaseModel], raw: Any, where: str, what: str) -> BaseModel:
    """Validate ``raw`` against ``schema``; turn pydantic's error into one line naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        path = f"{where}.{key}" if key else where
        allowed = ", ".join(k for k in schema.model_fields)
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(str(err["loc"][-1]) if err["loc"] else key, schema.model_fields)
            raise ConfigError(f"{path}: unknown key for {what}{hint}; allowed keys: {allowed}") from None
        if err["type"] == "missing":
            raise ConfigError(f"{path}: required key for {what} is missing") from None
        got = err.get("input")
        raise ConfigError(f"{path}: {err['msg']} (got {got!r})") from None


def pick(table: dict, raw: dict, key: str, where: str, kind: str, default: str | None = None) -> str:
    name = raw.get(key, default)
    if name is None:
        raise ConfigError(f"{where}.{key}: required; choose a {kind}: {choices(table)}")
    if not isinstance(name, str) or name not in table:
        raise ConfigError(f"{where}.{key}: unknown {kind} {name!r}{did_you_mean(name, table)}; "
                          f"choose one of: {choices(table)}")
    return name
