"""Exceptions that carry a user-facing, one-line message.

The CLI turns :class:`MtkdError` into ``error: <message>`` and exit status 2;
anything else is a bug and keeps its traceback.
"""


class MtkdError(Exception):
    """Bad input from the user: config, command line, files. Message is shown as is."""


class ConfigError(MtkdError):
    """A config value is missing, unknown or of the wrong type."""


class TeacherError(MtkdError):
    """A teacher produced unusable output (wrong shape, NaN or infinite values)."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception from a library (torch, onnxruntime, ...) as one short line: its first
    non-empty line, cut at ``limit`` characters. Multi-line library messages become one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__
