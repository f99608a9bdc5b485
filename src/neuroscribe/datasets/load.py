"""Load records, explanations and token summaries by unit reference or by path, and pull ranges into the cache.

Every loader takes either a unit reference (``gpt2-xl:5/131``, see `catalog`) or a location (a local
path, ``file://``, ``az://``, ``gs://`` or ``https://`` URL); public-store URLs honour the data root.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TypeVar

from neuroscribe.datasets.cache import DatasetCache
from neuroscribe.datasets.catalog import Artifact, DatasetSpec, UnitRef, get_dataset, looks_like_ref, parse_ref
from neuroscribe.datasets.io import (
    DEFAULT_SETTINGS,
    MissingFileError,
    ReadSettings,
    join,
    local_path,
    locate,
    read_bytes,
    reroute,
)
from neuroscribe.errors import DataError
from neuroscribe.records import ActivationRecord, ExcerptSources, NeuronRecord, TokenPairRecord
from neuroscribe.results import NeuronSimulationResults, TokenLookupTableSummaryOfNeuron, WeightBasedSummaryOfNeuron
from neuroscribe.serialization import dumps, from_json_obj, iter_jsonl_lines

T = TypeVar("T")


def resolve(ref_or_path: str | UnitRef, root: str | None = None, artifact: Artifact = Artifact.ACTIVATIONS) -> str:
    """The location (path or URL) that holds `artifact` of a unit, or a location with the data root applied."""
    if isinstance(ref_or_path, str) and not looks_like_ref(ref_or_path):
        return reroute(ref_or_path, root)
    ref = parse_ref(ref_or_path) if isinstance(ref_or_path, str) else ref_or_path
    spec = get_dataset(ref.dataset)
    relative = spec.relative_path(artifact, ref.layer, ref.index)
    return join(spec.root, relative) if spec.root is not None else locate(relative, root)


def _alternatives(location: str) -> list[str]:
    """A `.pt` record may also be published (or mirrored) as `.json` at the same path."""
    return [location, location[: -len(".pt")] + ".json"] if location.endswith(".pt") else [location]


def _read_decoded(location: str, settings: ReadSettings, decode: Callable[[bytes, str], T]) -> T:
    """Read and decode; a fresh download is decoded (so validated) before it is cached, and only once."""
    decoded: list[T] = []

    def check(data: bytes) -> None:
        decoded.append(decode(data, location))

    data = read_bytes(location, settings, check=check)
    # local files and cache hits skip the check, so decode here when it did not run
    return decoded[0] if decoded else decode(data, location)


def _read_first(location: str, settings: ReadSettings, decode: Callable[[bytes, str], T]) -> T:
    """Decode the first existing alternative of `location`."""
    missing: list[str] = []
    for candidate in _alternatives(location):
        try:
            return _read_decoded(candidate, settings, decode)
        except MissingFileError as error:
            missing.append(str(error))
    raise MissingFileError("; ".join(missing))


# --- decoders ------------------------------------------------------------------------------------

def _utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{source}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _json(data: bytes, source: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{source}: not valid JSON: {error}") from None


def _describe(value: object, depth: int = 0) -> str:
    """A short structural description of what a file held, for error messages."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__}{list(shape)} {getattr(value, 'dtype', '')}".strip()
    if isinstance(value, dict):
        if depth >= 1:
            return f"dict with {len(value)} keys"
        inner = ", ".join(f"{k!r}: {_describe(v, depth + 1)}" for k, v in list(value.items())[:12])
        more = ", ..." if len(value) > 12 else ""
        return f"dict {{{inner}{more}}}"
    if isinstance(value, list | tuple):
        first = f" of {_describe(value[0], depth + 1)}" if value and depth < 2 else ""
        return f"{type(value).__name__} of length {len(value)}{first}"
    return type(value).__name__


def _plain(value: object) -> object:
    """Tensors and tuples to lists, recursively, so a torch file can go through the JSON schema."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _torch(data: bytes, source: str) -> object:
    import torch

    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad or unsafe pickle
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"{source}: cannot load with torch.load(weights_only=True): {first_line}. Only a dict in the "
            f"NeuronRecord JSON schema (tensors allowed for lists) is supported."
        ) from None
    if not isinstance(loaded, dict):
        raise DataError(
            f"{source}: expected a dict in the NeuronRecord JSON schema (keys like 'neuron_id', "
            f"'most_positive_activation_records', 'random_sample'), found {_describe(loaded)}"
        )
    return loaded


def _record(data: bytes, source: str) -> NeuronRecord:
    if not source.endswith(".pt"):
        return from_json_obj(_json(data, source), NeuronRecord, source)
    loaded = _torch(data, source)
    try:
        return from_json_obj(_plain(loaded), NeuronRecord, source)
    except DataError as error:
        raise DataError(
            f"{error}. A .pt record must be a dict in the NeuronRecord JSON schema (tensors allowed for lists); "
            f"this file holds: {_describe(loaded)}"
        ) from None


def _decoder(cls: type[T]) -> Callable[[bytes, str], T]:
    def decode(data: bytes, source: str) -> T:
        return from_json_obj(_json(data, source), cls, source)

    return decode


def _explanations(data: bytes, source: str) -> list[NeuronSimulationResults]:
    lines = iter_jsonl_lines(_utf8(data, source), source)
    return [from_json_obj(obj, NeuronSimulationResults, where) for where, obj in lines]


def _raw_json_object(data: bytes, source: str) -> dict[str, object]:
    obj = _json(data, source)
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a JSON object, found {_describe(obj)}")
    return obj


def _well_formed(data: bytes, source: str) -> None:
    """A cheap check that a download is a whole file of its kind (full decoding waits until it is loaded)."""
    if source.endswith(".pt"):
        _torch(data, source)
    elif source.endswith(".jsonl"):
        for _ in iter_jsonl_lines(_utf8(data, source), source):
            pass
    else:
        _json(data, source)


# --- loaders -------------------------------------------------------------------------------------

def load_neuron_record(
    ref_or_path: str | UnitRef, root: str | None = None, settings: ReadSettings = DEFAULT_SETTINGS
) -> NeuronRecord:
    """A unit's collated activations (`.json`, or `.pt` via torch.load(weights_only=True)).

    For a reference into a token-pair dataset every excerpt comes back as a `TokenPairRecord`, so its
    (query, key) layout is checked on load and the attention-head explainer can use it directly. A
    reference into a collected dataset comes with its `excerpt_sources` (read from the file beside the
    record); published data and records read by path have none.
    """
    record = _read_first(resolve(ref_or_path, root, Artifact.ACTIVATIONS), settings, _record)
    if not (isinstance(ref_or_path, UnitRef) or looks_like_ref(ref_or_path)):
        return record
    spec = _dataset_of(ref_or_path)
    if Artifact.EXCERPT_SOURCES in spec.templates:
        location = resolve(ref_or_path, root, Artifact.EXCERPT_SOURCES)
        sources = _read_first(location, settings, _decoder(ExcerptSources))
        try:
            record = dataclasses.replace(record, excerpt_sources=sources)
        except DataError as error:
            raise DataError(f"{location}: {error}") from None
    return _with_token_pairs(record, str(ref_or_path)) if spec.by_token_pair else record


def _dataset_of(ref: str | UnitRef) -> DatasetSpec:
    return get_dataset(ref.dataset if isinstance(ref, UnitRef) else parse_ref(ref).dataset)


def _with_token_pairs(record: NeuronRecord, source: str) -> NeuronRecord:
    def convert(records: list[ActivationRecord], where: str) -> list[ActivationRecord]:
        converted: list[ActivationRecord] = []
        for i, item in enumerate(records):
            if isinstance(item, TokenPairRecord):
                converted.append(item)
                continue
            try:
                converted.append(TokenPairRecord(tokens=item.tokens, activations=item.activations))
            except DataError as error:
                raise DataError(f"{source}: {where}[{i}]: {error}") from None
        return converted

    by_quantile = record.random_sample_by_quantile
    negative = record.most_negative_activation_records
    return dataclasses.replace(
        record,
        most_positive_activation_records=convert(record.most_positive_activation_records,
                                                 "most_positive_activation_records"),
        random_sample=convert(record.random_sample, "random_sample"),
        random_sample_by_quantile=None if by_quantile is None else [
            convert(bucket, f"random_sample_by_quantile[{q}]") for q, bucket in enumerate(by_quantile)
        ],
        most_negative_activation_records=None if negative is None else convert(
            negative, "most_negative_activation_records"),
    )


def load_explanations(
    ref_or_path: str | UnitRef, root: str | None = None, settings: ReadSettings = DEFAULT_SETTINGS
) -> list[NeuronSimulationResults]:
    """The published scored explanations of a unit (every line of its `.jsonl`)."""
    return _read_first(resolve(ref_or_path, root, Artifact.EXPLANATIONS), settings, _explanations)


def load_token_lookup(
    ref_or_path: str | UnitRef, root: str | None = None, settings: ReadSettings = DEFAULT_SETTINGS
) -> TokenLookupTableSummaryOfNeuron:
    """Tokens with the highest average activation for the unit."""
    decode = _decoder(TokenLookupTableSummaryOfNeuron)
    return _read_first(resolve(ref_or_path, root, Artifact.TOKENS_BY_ACTIVATION), settings, decode)


def load_weight_summary(
    ref_or_path: str | UnitRef, root: str | None = None, settings: ReadSettings = DEFAULT_SETTINGS
) -> WeightBasedSummaryOfNeuron:
    """Tokens with the largest input and output weights for the unit."""
    decode = _decoder(WeightBasedSummaryOfNeuron)
    return _read_first(resolve(ref_or_path, root, Artifact.TOKENS_BY_WEIGHT), settings, decode)


def load_related_neurons(
    ref_or_path: str | UnitRef, root: str | None = None, settings: ReadSettings = DEFAULT_SETTINGS
) -> dict[str, object]:
    """Weight-connected neurons as published: a plain JSON object (its dataclass was never published)."""
    return _read_first(resolve(ref_or_path, root, Artifact.RELATED_NEURONS), settings, _raw_json_object)


def read_text(
    ref_or_path: str | UnitRef,
    root: str | None = None,
    artifact: Artifact = Artifact.ACTIVATIONS,
    settings: ReadSettings = DEFAULT_SETTINGS,
) -> tuple[str, str]:
    """(published-format JSON text, its location) of any file, for tools that render whatever they are given.

    A `.pt` record comes back as the JSON of the record it holds.
    """

    def decode(data: bytes, source: str) -> tuple[str, str]:
        if source.endswith(".pt"):
            return dumps(_record(data, source)), source
        if source.endswith(".json") and local_path(source) is None:
            _json(data, source)  # refuse to cache a garbled download; local files are the caller's to judge
        return _utf8(data, source), source

    return _read_first(resolve(ref_or_path, root, artifact), settings, decode)


# --- pull ----------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class PullSummary:
    """What `pull` did; `failed` pairs each location with its reason, nothing is retried silently."""

    fetched: int = 0
    already_cached: int = 0
    local: int = 0
    """Files under a local root: nothing to download."""
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.fetched + self.already_cached + self.local + len(self.failed)


def pull(
    refs: Sequence[UnitRef],
    artifacts: Sequence[Artifact] = (Artifact.ACTIVATIONS,),
    root: str | None = None,
    *,
    workers: int = 8,
    settings: ReadSettings = DEFAULT_SETTINGS,
    progress: bool = True,
) -> PullSummary:
    """Download files of `refs` into the cache in parallel; re-running resumes (cached files are skipped).

    Every file is checked to be well-formed (it parses) before it is cached; one failing file never stops
    the others.
    """
    from tqdm import tqdm

    for ref in refs:  # a wrong artifact fails up front, before any download
        for artifact in artifacts:
            get_dataset(ref.dataset).template(artifact)
    locations = list(dict.fromkeys(resolve(ref, root, artifact) for ref in refs for artifact in artifacts))
    summary = PullSummary()

    def fetch_one(location: str) -> str:
        if local_path(location) is not None:
            return "local"
        store = settings.cache if settings.cache is not None else DatasetCache()
        if any(store.get(candidate) is not None for candidate in _alternatives(location)):
            return "cached"
        _read_first(location, settings, _well_formed)
        return "fetched"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
        total=len(locations), unit="file", desc="pull", disable=not progress
    ) as bar:
        futures = {pool.submit(fetch_one, location): location for location in locations}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except DataError as error:
                summary.failed.append((futures[future], str(error)))
            else:
                if outcome == "fetched":
                    summary.fetched += 1
                elif outcome == "cached":
                    summary.already_cached += 1
                else:
                    summary.local += 1
            bar.update(1)
    summary.failed.sort()
    return summary
