"""Exceptions that the CLI turns into a one-line error and a non-zero exit code."""


class SmoacsError(Exception):
    """A user-facing error: the message names the field, file or site and the reason."""


class SpecError(SmoacsError):
    """An invalid campaign specification or other configuration."""


class InputError(SmoacsError):
    """Unreadable or invalid input data (structures, files, checkpoints)."""
