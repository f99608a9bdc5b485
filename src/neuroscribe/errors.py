"""One family of errors, so callers can catch everything neuroscribe raises with one clause.

Every message says what went wrong, where (file, unit, field) and, when there is one, what to do.
"""

from __future__ import annotations

import errno


class NeuroscribeError(Exception):
    """Base of every error neuroscribe raises on purpose."""


class ConfigError(NeuroscribeError):
    """A config, option or argument is invalid."""


class DataError(NeuroscribeError):
    """A file or record is malformed, missing or unusable (e.g. constant activations)."""


class BackendError(NeuroscribeError):
    """A language-model backend failed: unreachable, refused, timed out, or returned garbage."""

    def __init__(self, message: str, *, retryable: bool = False, status_code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


class CapabilityError(BackendError):
    """The backend cannot do what the request asks (e.g. prompt logprobs on a chat-only server)."""


class ParseError(NeuroscribeError):
    """A model's answer could not be parsed; keeps the raw text so the failure can be recorded."""

    def __init__(self, message: str, *, raw_text: str) -> None:
        super().__init__(message)
        self.raw_text = raw_text


class StageError(NeuroscribeError):
    """Something failed at a named stage (e.g. 'records', 'calibrate', 'simulate'); `error` is why.

    Lets a component say where in its own work it failed, so a run records the stage, not a guess."""

    def __init__(self, stage: str, error: NeuroscribeError) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


def describe_os_error(error: OSError) -> str:
    """A filesystem failure in words: which path, why, and that finished work is kept."""
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None) or "(no path given)"
    why = error.strerror or str(error)
    hint = {errno.ENOSPC: "free space, or choose another --out",
            errno.EROFS: "the file system is read-only; choose another --out",
            errno.EACCES: "check the permissions, or choose another --out"}.get(error.errno or 0, "fix it")
    return (f"{why}: {paths} ({hint}). Work finished before this is kept; run the same command again to go on "
            "from there.")


def describe(error: NeuroscribeError) -> str:
    """The message of `error`, with the start of the raw answer when it is a `ParseError`."""
    if isinstance(error, ParseError):
        return f"{error} (raw answer: {error.raw_text[:200]!r})"
    return str(error)
