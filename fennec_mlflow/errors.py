"""The one root of user-facing errors.

Anything derived from :class:`FennecError` is a problem the user can fix (a bad input, a
missing file, a store that cannot answer); the CLI prints it as one line (exit code 2) and
the scoring server answers it with HTTP 400. Any other exception is a bug and keeps its
traceback. Subclasses also derive from ``ValueError`` or ``LookupError`` where callers
already catch those.
"""
from __future__ import annotations


class FennecError(Exception):
    """A problem the user can fix; its message says what was wrong and how to fix it."""


class InvalidInputError(FennecError, ValueError):
    """A value given by the user (option, file content, request field) is not acceptable."""


class UnknownNameError(FennecError, KeyError):
    """A name (estimator, benchmark, model, task) that nothing is registered under."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ResourceUnavailableError(FennecError, RuntimeError):
    """Something the work needs is not on this machine (weights, a dataset, an optional package)."""


class MissingFileError(FennecError, FileNotFoundError):
    """A file or folder the user named (or the work expects) does not exist; the message says how to make it."""
