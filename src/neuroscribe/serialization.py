"""The published tagged-dataclass JSON and JSONL, read strictly and written compatibly.

The neuron-explainer datasets store every nested object with a `dataclass_name` tag and write NaN
as `null`. Reading is driven by our dataclasses' type hints, so a malformed file fails with a
`DataError` that names the file, the path inside it (`most_positive_activation_records[3].activations`)
and the field, instead of a bare `TypeError` deep inside a constructor.

Compatibility rules:
- `dataclass_name` is written on every dataclass; on reading it may be absent (older files), but
  when present it must name the expected class.
- A tag naming a subclass of the expected class selects the subclass (a `TokenPairRecord` where an
  `ActivationRecord` is declared, as in attention-head records).
- `ScoredSequenceSimulation.sequence_simulation` is read as an alias of `simulation`, and
  `AttentionSimulationResults.attention_id` (its older name) as one of `attention_head_id`.
- A fixed-length tuple (a token pair's coordinates) is a JSON array of that length.
- Non-finite floats are written as `null`; `null` in a plain `float` slot reads back as NaN.
- Fields that exist only in neuroscribe (`NeuronRecord.stddev`, `most_negative_activation_records`,
  `excerpt_sources`) are left out while they are `None`, so files we write stay loadable by the
  reference code.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from neuroscribe import records, results
from neuroscribe.errors import DataError

T = TypeVar("T")

logger = logging.getLogger(__name__)

TAG = "dataclass_name"

FIELD_ALIASES: dict[type, dict[str, str]] = {
    results.ScoredSequenceSimulation: {"sequence_simulation": "simulation"},
    results.AttentionSimulationResults: {"attention_id": "attention_head_id"},
}
"""Alternative spellings found in published files: class -> {alias: field}."""

OMITTED_WHEN_NONE: dict[type, frozenset[str]] = {
    records.NeuronRecord: frozenset({"stddev", "most_negative_activation_records", "excerpt_sources"}),
    records.NeuronId: frozenset({"sae"}),
    results.SequenceSimulation: frozenset({"uncalibrated_simulation"}),
}
"""Fields written only when set: neuroscribe-only ones (so the reference loader can read our files)
and late reference additions (so files match those published before them)."""


def _dataclasses_of(module: types.ModuleType) -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
    }


KNOWN_DATACLASSES: dict[str, type] = {**_dataclasses_of(records), **_dataclasses_of(results)}
"""Every record and result class by its `dataclass_name`, for files whose type is not known ahead."""


# --- writing ------------------------------------------------------------------------------------


def to_json_obj(obj: object) -> Any:
    """Plain JSON data for a dataclass (tagged with `dataclass_name`), list, enum or scalar."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        omitted = OMITTED_WHEN_NONE.get(cls, frozenset())
        out: dict[str, Any] = {TAG: cls.__name__}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.name in omitted:
                continue
            out[f.name] = to_json_obj(value)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, list | tuple):
        # token and activation lists dominate big files: convert them without a call per item
        if all(type(item) is float for item in obj):
            return [item if math.isfinite(item) else None for item in obj]
        if all(type(item) is str for item in obj):
            return list(obj)
        return [to_json_obj(item) for item in obj]
    if isinstance(obj, dict):
        return {str(key): to_json_obj(value) for key, value in obj.items()}
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    # numpy scalars and arrays, without importing numpy here
    if hasattr(obj, "tolist"):
        return to_json_obj(obj.tolist())
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def dumps(obj: object, *, indent: int | None = None) -> str:
    """Compact JSON (one line unless `indent`), strict: NaN and infinities become `null`."""
    return json.dumps(to_json_obj(obj), ensure_ascii=False, allow_nan=False, indent=indent)


def atomic_write_bytes(path: str | Path, data: bytes, *, temp_prefix: str = ".tmp-") -> None:
    """Write via a fsynced temporary file beside `path` and an atomic rename: a reader (or a crash)
    never sees half a file. Temporary names start with `temp_prefix` so leftovers can be found."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix, suffix=path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # a failed write names no file: say which one
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dump_json_file(path: str | Path, obj: object, *, indent: int | None = None) -> None:
    """Write atomically, so a reader never sees half a file."""
    atomic_write_text(path, dumps(obj, indent=indent) + "\n")


def append_jsonl(path: str | Path, obj: object) -> None:
    """Append one line and fsync it, so a finished result survives a crash right after.

    If an earlier writer died mid-line, the torn line is closed off first so the new line stays whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = dumps(obj) + "\n"
    with path.open("a+b") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write(line.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


# --- reading ------------------------------------------------------------------------------------


class _Invalid(Exception):
    """Raised inside decoding with the path where it happened; turned into a DataError at the top."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


_Decoder = Callable[[object, str], object]


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_json_type(value)})"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _decode_float(value: object, path: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    if value is None:
        return math.nan  # the published writer turns NaN into null
    raise _Invalid(path, f"expected a number, got {_describe(value)}")


def _decode_int(value: object, path: str) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise _Invalid(path, f"expected an integer, got {_describe(value)}")


def _decode_str(value: object, path: str) -> str:
    if type(value) is str:
        return value
    raise _Invalid(path, f"expected a string, got {_describe(value)}")


def _decode_bool(value: object, path: str) -> bool:
    if type(value) is bool:
        return value
    raise _Invalid(path, f"expected true or false, got {_describe(value)}")


def _decode_any(value: object, path: str) -> object:
    return value


def _enum_decoder(cls: type[enum.Enum]) -> _Decoder:
    valid = [member.value for member in cls]

    def decode(value: object, path: str) -> object:
        try:
            return cls(value)
        except ValueError:
            raise _Invalid(path, f"expected one of {valid}, got {_describe(value)}") from None

    return decode


def _list_decoder(item_type: object) -> _Decoder:
    decode_item = _decoder_for(item_type)
    # Lists of tokens and activations dominate big files: when every item already has the exact type,
    # skip the per-item calls (and their path strings), and fall back to them only to convert or report.
    exact = item_type if item_type in (float, str, int) else None

    def decode(value: object, path: str) -> list[object]:
        if type(value) is not list:
            raise _Invalid(path, f"expected an array, got {_describe(value)}")
        if exact is not None and all(type(x) is exact for x in value):
            return list(value)
        return [decode_item(x, f"{path}[{i}]") for i, x in enumerate(value)]

    return decode


def _tuple_decoder(item_types: tuple[object, ...]) -> _Decoder:
    """A fixed-length tuple (e.g. a token pair's (query, key)), written as a JSON array."""
    decoders = [_decoder_for(item_type) for item_type in item_types]

    def decode(value: object, path: str) -> tuple[object, ...]:
        if type(value) is not list or len(value) != len(decoders):
            raise _Invalid(path, f"expected an array of {len(decoders)} items, got {_describe(value)}")
        return tuple(d(x, f"{path}[{i}]") for i, (d, x) in enumerate(zip(decoders, value, strict=True)))

    return decode


def _dict_decoder(value_type: object) -> _Decoder:
    decode_value = _decoder_for(value_type)

    def decode(value: object, path: str) -> dict[str, object]:
        if type(value) is not dict:
            raise _Invalid(path, f"expected an object, got {_describe(value)}")
        return {str(k): decode_value(v, _child(path, str(k))) for k, v in typing.cast(dict[str, object], value).items()}

    return decode


def _optional_decoder(inner: object) -> _Decoder:
    decode_inner = _decoder_for(inner)

    def decode(value: object, path: str) -> object:
        return None if value is None else decode_inner(value, path)

    return decode


def _dataclass_decoder(cls: type) -> _Decoder:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    required = [
        f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    aliases = FIELD_ALIASES.get(cls, {})
    known = ", ".join(f.name for f in fields)
    decoders: dict[str, _Decoder] = {}  # filled on first use, so a class may contain itself

    def decode(value: object, path: str) -> object:
        if not decoders:
            hints = typing.get_type_hints(cls)
            decoders.update({f.name: _decoder_for(hints[f.name]) for f in fields})
        if type(value) is not dict:
            raise _Invalid(path, f"expected a {cls.__name__} object, got {_describe(value)}")
        tag = typing.cast(dict[str, object], value).get(TAG)
        if tag is not None and tag != cls.__name__:
            subclass = KNOWN_DATACLASSES.get(str(tag))
            if subclass is not None and issubclass(subclass, cls):  # e.g. a TokenPairRecord in a NeuronRecord
                return _decoder_for(subclass)(value, path)
            raise _Invalid(_child(path, TAG), f"expected {cls.__name__!r}, found {tag!r}")
        kwargs: dict[str, object] = {}
        for key, raw in typing.cast(dict[str, object], value).items():
            if key == TAG:
                continue
            name = aliases.get(key, key)
            decode_field = decoders.get(name)
            if decode_field is None:
                close = difflib.get_close_matches(key, decoders, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _Invalid(_child(path, key), f"unknown field of {cls.__name__}{hint}; known fields: {known}")
            if name in kwargs:
                raise _Invalid(_child(path, key), f"field {name!r} of {cls.__name__} is given twice (as an alias)")
            kwargs[name] = decode_field(raw, _child(path, key))
        for name in required:
            if name not in kwargs:
                raise _Invalid(_child(path, name), f"missing required field of {cls.__name__}")
        decoded_as = getattr(cls, "decoded_as", None)  # a class may pick a subclass by content
        try:
            return (decoded_as(kwargs) if decoded_as is not None else cls)(**kwargs)
        except DataError as error:  # a class's own validation, e.g. TokenPairRecord's triangle size
            raise _Invalid(path, str(error)) from None

    return decode


_DECODERS: dict[object, _Decoder] = {}


def _decoder_for(tp: object) -> _Decoder:
    """The decoder for a type, built once per type."""
    decoder = _DECODERS.get(tp)
    if decoder is None:
        decoder = _DECODERS[tp] = _build_decoder(tp)
    return decoder


def _build_decoder(tp: object) -> _Decoder:
    simple: dict[object, _Decoder] = {
        float: _decode_float,
        int: _decode_int,
        str: _decode_str,
        bool: _decode_bool,
        Any: _decode_any,
        object: _decode_any,
    }
    if tp in simple:
        return simple[tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        non_none = [arg for arg in args if arg is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            return _optional_decoder(non_none[0])
        raise TypeError(f"unsupported union type {tp}")
    if origin is list:
        return _list_decoder(args[0] if args else Any)
    if origin is tuple and args and Ellipsis not in args:
        return _tuple_decoder(args)
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"unsupported dict key type in {tp}: JSON keys are strings")
        return _dict_decoder(args[1] if args else Any)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    raise TypeError(f"unsupported field type {tp}")


def _data_error(source: str, invalid: _Invalid) -> DataError:
    where = f"at {invalid.path}" if invalid.path else "at the top level"
    return DataError(f"{source}: {where}: {invalid.problem}")


def from_json_obj(data: object, cls: type[T], source: str = "<data>") -> T:
    """Build `cls` from parsed JSON; `source` (a file name, `file:line`) goes into every error."""
    try:
        return typing.cast(T, _decoder_for(cls)(data, ""))
    except _Invalid as invalid:
        raise _data_error(source, invalid) from None


def from_tagged_json_obj(data: object, source: str = "<data>") -> object:
    """Build whichever record or result class the top-level `dataclass_name` names."""
    tag = data.get(TAG) if isinstance(data, dict) else None
    if tag is None:
        raise DataError(f"{source}: at the top level: no {TAG!r} tag, so the record type is unknown")
    cls = KNOWN_DATACLASSES.get(str(tag))
    if cls is None:
        raise DataError(
            f"{source}: at {TAG}: unknown type {tag!r}; known: {', '.join(sorted(KNOWN_DATACLASSES))}"
        )
    return from_json_obj(data, cls, source)


RESULT_LINES: dict[str, type[results.ResultRecord]] = {
    cls.__name__: cls for cls in (results.ExplanationScores, results.AttentionSimulationResults)}
"""Result lines read by their tag; an untagged (or otherwise tagged) line is the published simulation format."""


def result_from_json_obj(data: object, source: str = "<data>") -> results.ResultRecord:
    """A results line: our `ExplanationScores` or the published `AttentionSimulationResults` when tagged so,
    else the published `NeuronSimulationResults` (whose older files carry no tag)."""
    tag = data.get(TAG) if isinstance(data, dict) else None
    cls = RESULT_LINES.get(str(tag), results.NeuronSimulationResults)
    return from_json_obj(data, cls, source)


def parse(text: str | bytes, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{source}: not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None


def loads(text: str | bytes, cls: type[T], source: str = "<string>") -> T:
    return from_json_obj(parse(text, source), cls, source)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None


def load_json_file(path: str | Path, cls: type[T]) -> T:
    path = Path(path)
    return loads(_read_text(path), cls, str(path))


def iter_jsonl_lines(text: str, source: str, *, allow_torn_tail: bool = False) -> Iterable[tuple[str, object]]:
    """(`source:line`, parsed JSON) for each non-blank line.

    With `allow_torn_tail`, an unparseable last line with no newline (a writer killed mid-line) is
    skipped with a warning instead of failing, so a run can resume after a crash.
    """
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        torn = allow_torn_tail and lineno == len(lines) and not text.endswith("\n")
        try:
            parsed = parse(line, where)
        except DataError:
            if torn:
                logger.warning("%s: skipping a torn last line (no newline, not valid JSON)", where)
                return
            raise
        yield where, parsed


def read_jsonl(path: str | Path, cls: type[T], *, allow_torn_tail: bool = False) -> list[T]:
    """One `cls` per non-blank line; errors name `file:line` and the path inside the line."""
    path = Path(path)
    lines = iter_jsonl_lines(_read_text(path), str(path), allow_torn_tail=allow_torn_tail)
    return [from_json_obj(data, cls, where) for where, data in lines]
