"""Small helpers the backends' options dataclasses share (checks, and the name tag of answer-changing options).

Each backend declares a frozen keyword-only options dataclass (`HFOptions`, `OpenAIOptions`, ...) as its
`options_type`; a config's `[backends.NAME.options]` table is checked against it with
`neuroscribe.registry.build_options` (unknown keys with the closest valid one, wrong types) and then by the
dataclass's own `__post_init__` (ranges). This module imports nothing heavy, so validating a config stays fast.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def option_values(options: Any) -> dict[str, Any]:
    """The fields of an options dataclass as keyword arguments (shallow: values are not copied)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def require_at_least(minimum: float, **values: float | None) -> None:
    """ValueError naming the first option below `minimum`; None means "unset" (the backend picks) and passes."""
    for name, value in values.items():
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")


def require_one_of(literal: Any, **values: object) -> None:
    """ValueError naming an option whose value is not one of the `Literal[...]` type's values."""
    choices = typing.get_args(literal)
    for name, value in values.items():
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def answer_tag(options: Any, *names: str) -> str:
    """'' when each named option has its default, else '[name=value,...]' for those that differ.

    Appended to a backend's name, which enters every response-cache key: answers under non-default settings
    get their own cache entries, while default settings keep the keys they always had.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(options)}
    changed = [f"{name}={getattr(options, name)}" for name in names if getattr(options, name) != defaults[name]]
    return f"[{','.join(changed)}]" if changed else ""
