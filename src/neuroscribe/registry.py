"""Name -> class registries, so a config can name a component and adding one never edits the others."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from neuroscribe.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of component classes (explainers, simulators, scorers, backends)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ConfigError(f"{self.kind} {name!r} is registered twice ({self._entries[name]} and {cls})")
            self._entries[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries)) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


class Configurable(Protocol):
    """A registered class whose config options are checked against its own frozen dataclass."""

    options_type: ClassVar[type[Any]]


C = TypeVar("C", bound=Configurable)


def registered_options(registry: Registry[C], name: str, options: Mapping[str, object], where: str = "") -> Any:
    """The options of the component registered as `name`, checked and built (unknown name or option:
    ConfigError with the closest valid one); `where` says where in a config they come from."""
    return build_options(registry.get(name).options_type, options, where or f"{registry.kind} {name!r}")


def build_options(options_cls: type[T], options: Mapping[str, object], where: str) -> T:
    """Make a component's frozen options dataclass from a config mapping.

    An unknown key fails naming it and the closest valid one; a wrong type or an out-of-range value
    (the dataclass's own `__post_init__` check) fails naming the option, so a typo in a config never
    silently falls back to a default.
    """
    valid = [f.name for f in dataclasses.fields(options_cls)]  # type: ignore[arg-type]
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown option {key!r}.{hint} Valid options: {', '.join(valid)}")
    hints = typing.get_type_hints(options_cls)
    options = {key: _enum_member(value, hints[key]) for key, value in options.items()}
    for key, value in options.items():
        if not _matches(value, hints[key]):
            raise ConfigError(f"{where}: option {key!r} must be {_type_name(hints[key])}, got {value!r}")
    try:
        return options_cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _enum_member(value: object, hint: object) -> object:
    """A TOML string naming a member of an enum option (e.g. unit_kind = "attention_head") as that member."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and not isinstance(value, hint):
        try:
            return hint(value)  # a member's value, or an alias the enum accepts (`_missing_`)
        except ValueError:
            return value
    return value


def _matches(value: object, hint: object) -> bool:
    """A shallow check of config values (scalars, Literal, unions, tuples of scalars)."""
    origin = typing.get_origin(hint)
    if hint is typing.Any or hint is object:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (tuple, list))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: object) -> str:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
