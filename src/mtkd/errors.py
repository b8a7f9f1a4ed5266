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
