"""What the viewer can open, brought to one shape: an ordered list of units and a loader per unit.

A source is a run directory (`run.json`), a local dataset (`dataset.json`, as the collector writes),
a published NeuronRecord `.json`, or a results `.jsonl` / `.json` (published explanations, or a run's
results of any scorer). Units load one at a time, so building pages for a large dataset never holds
every record in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from neuroscribe import datasets, serialization
from neuroscribe.datasets import MissingFileError, looks_like_ref
from neuroscribe.datasets.collect import AUTOENCODERS_INDEX
from neuroscribe.errors import ConfigError, DataError
from neuroscribe.experiments.leaderboard import build_leaderboard
from neuroscribe.experiments.store import RunStore, UnitOutcome
from neuroscribe.records import NeuronRecord, TokenPairRecord, UnitId, UnitKind
from neuroscribe.results import (
    AttentionSimulationResults,
    ExplanationScores,
    NeuronSimulationResults,
    ResultRecord,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

PUBLISHED_METHOD = "published"
"""The method id under which a unit reference's published explanations are shown."""


@dataclass(frozen=True, kw_only=True)
class MethodFindings:
    """What one method found about one unit: its outcome (runs only) and its result line, the published
    simulation format or, for every other scorer, `ExplanationScores`."""

    method_id: str
    outcome: UnitOutcome | None = None
    results: ResultRecord | None = None


@dataclass(frozen=True, kw_only=True)
class UnitSources:
    """Everything known about one unit, from whichever files the source has."""

    unit: UnitId
    record: NeuronRecord | None = None
    record_path: Path | None = None
    methods: list[MethodFindings] = field(default_factory=list)
    lookup_table: TokenLookupTableSummaryOfNeuron | None = None
    weight_summary: WeightBasedSummaryOfNeuron | None = None


@dataclass(frozen=True, kw_only=True)
class Collection:
    """An opened source: its units in display order and how to load each."""

    title: str
    path: Path
    kind: str
    """'run', 'dataset', 'record', 'explanations' or 'reference'."""
    description: list[tuple[str, str]]
    """(label, value) lines shown at the top of the index."""
    provenance: list[tuple[str, str]] = field(default_factory=list)
    """Further (label, value) lines, shown folded (package versions, platform, shards)."""
    method_ids: list[str]
    units: list[UnitId]
    load: Callable[[UnitId], UnitSources]
    leaderboard_html: str | None = None
    notes: tuple[str, ...] = ()
    """Caveats shown on every page, e.g. that the embedded model's scores are only a plumbing check."""


def open_source(path: str | Path, *, dataset: str | Path | None = None, data_root: str | None = None) -> Collection:
    """Open a run, a local dataset, a published file, or a unit reference such as `gpt2-xl:5/131`.

    `dataset` adds related tokens from a local dataset; `data_root` is where references are read from
    (default: $NEUROSCRIBE_DATA_ROOT, else the public store).
    """
    if not Path(path).exists() and looks_like_ref(str(path)):
        return _open_reference(str(path), data_root)
    path = Path(path)
    dataset_root = Path(dataset) if dataset is not None else None
    if dataset_root is not None and not dataset_root.is_dir():
        raise DataError(f"--dataset {dataset_root}: no such directory (give a local dataset with a dataset.json)")
    if path.is_dir():
        if (path / "run.json").is_file():
            return _open_run(path, dataset_root)
        if (path / "dataset.json").is_file():
            return _open_dataset(path)
        raise DataError(
            f"{path}: a directory with neither run.json (a run) nor dataset.json (a local dataset); "
            "give a run directory, a dataset directory, a NeuronRecord .json or an explanations .jsonl"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file or directory")
    if path.suffix == ".jsonl":
        return _open_explanations(path, _read_result_lines(path))
    obj = serialization.from_tagged_json_obj(_read_json(path), str(path))
    if isinstance(obj, NeuronRecord):
        return _open_record(path, obj, dataset_root or _dataset_root_of_record(path))
    if isinstance(obj, NeuronSimulationResults | ExplanationScores | AttentionSimulationResults):
        return _open_explanations(path, [obj])
    raise DataError(
        f"{path}: holds a {type(obj).__name__}; the viewer opens a NeuronRecord, NeuronSimulationResults, "
        "AttentionSimulationResults, ExplanationScores, a run directory or a local dataset"
    )


def _read_result_lines(path: Path) -> list[ResultRecord]:
    """A results file as a run writes it: lines tagged ExplanationScores are ours, lines tagged
    AttentionSimulationResults the published attention format, the rest the published simulation format
    (whose older files carry no tag)."""
    return [serialization.result_from_json_obj(data, where)
            for where, data in serialization.iter_jsonl_lines(_read_text(path), str(path))]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None


def _read_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None


# --- related tokens (local dataset layout) --------------------------------------------------------


def _dataset_root_of_record(path: Path) -> Path | None:
    """`<root>/collated-activations/<layer>/<index>.json` -> `<root>`, where related tokens may sit."""
    parents = path.resolve().parents
    return parents[2] if len(parents) > 2 and parents[1].name == "collated-activations" else None


def _optional_file(path: Path, cls: type[T]) -> T | None:
    return serialization.load_json_file(path, cls) if path.is_file() else None


def _with_related(sources: UnitSources, root: Path | None) -> UnitSources:
    if root is None:
        return sources
    unit = sources.unit
    root = root / unit.sae  # a collection of several autoencoders keeps each one's dataset in its own folder
    tail = Path(str(unit.layer)) / f"{unit.index}.json"
    return UnitSources(
        unit=unit,
        record=sources.record,
        record_path=sources.record_path,
        methods=sources.methods,
        lookup_table=_optional_file(root / "related-tokens" / "activation-based" / tail,
                                    TokenLookupTableSummaryOfNeuron),
        weight_summary=_optional_file(root / "related-tokens" / "weight-based" / tail, WeightBasedSummaryOfNeuron),
    )


# --- the kinds of source ------------------------------------------------------------------------


RUN_SUMMARY_KEYS = ("name", "description", "config_source", "config_hash", "overrides", "created", "updated",
                    "git_commit", "backends", "unit_kind", "units", "controls")
"""Manifest entries shown first on a run's index; the others are folded (the full config is in run.json)."""


def _manifest_lines(manifest: Mapping[str, object], keys: Sequence[str]) -> list[tuple[str, str]]:
    """Scalars as they are; nested values as compact JSON, cut short (the full config is in the file)."""
    lines = []
    for key in keys:
        if key not in manifest:
            continue
        value = manifest[key]
        if isinstance(value, str | int | float | bool) or value is None:
            text = str(value)
        else:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
            if len(text) > 300:
                text = text[:299] + "…"
        lines.append((key, text))
    return lines


def _unit_kind(manifest: Mapping[str, object]) -> UnitKind:
    value = manifest.get("unit_kind", UnitKind.MLP_NEURON.value)
    try:
        return UnitKind(str(value))
    except ValueError:
        raise DataError(f"unit kind {value!r} is unknown; known: {', '.join(k.value for k in UnitKind)}") from None


def _run_dataset_root(path: Path, manifest: Mapping[str, object]) -> Path | None:
    """The local dataset a run read its records from, if any: the one it collected, or the one it names."""
    config = manifest.get("config")
    records = config.get("records") if isinstance(config, dict) else None
    candidates = [path / "dataset"]
    if isinstance(records, dict):
        collect = records.get("collect")
        if isinstance(collect, dict) and collect.get("out"):
            candidates.insert(0, Path(str(collect["out"])))
        if records.get("dataset"):
            candidates.append(Path(str(records["dataset"])))
    return next((c for c in candidates if (c / "dataset.json").is_file() or (c / AUTOENCODERS_INDEX).is_file()),
                None)


def _open_run(path: Path, dataset_root: Path | None) -> Collection:
    store = RunStore(path)
    manifest = store.read_manifest()
    dataset_root = dataset_root or _run_dataset_root(path, manifest)
    method_ids = store.methods()
    outcomes = {m: store.outcomes(m) for m in method_ids}
    results = {m: store.results(m) for m in method_ids}
    kind = _unit_kind(manifest)
    recorded = {
        UnitId(int(p.parent.name), int(p.stem), kind)
        for p in (path / "records").glob("*/*.json")
        if p.parent.name.isdigit() and p.stem.isdigit()
    }
    units = sorted(recorded.union(*(o.keys() for o in outcomes.values())))

    def load(unit: UnitId) -> UnitSources:
        findings = [
            MethodFindings(method_id=m, outcome=outcomes[m].get(unit), results=results[m].get(unit))
            for m in method_ids
            if unit in outcomes[m]
        ]
        record = store.read_record(unit)
        sources = UnitSources(unit=unit, record=record, record_path=store.record_path(unit) if record else None,
                              methods=findings)
        return _with_related(sources, dataset_root)

    leaderboard_html, notes = _leaderboard(path) if method_ids else (None, ())
    return Collection(
        title=f"run {path.resolve().name}",
        path=path,
        kind="run",
        description=[("run directory", str(path)),
                     *([("related tokens from", str(dataset_root))] if dataset_root is not None else []),
                     *_manifest_lines(manifest, RUN_SUMMARY_KEYS)],
        provenance=_manifest_lines(
            manifest, [k for k in manifest if k not in (*RUN_SUMMARY_KEYS, "config", "methods")]),
        method_ids=method_ids,
        units=units,
        load=load,
        leaderboard_html=leaderboard_html,
        notes=notes,
    )


def _leaderboard(path: Path) -> tuple[str | None, tuple[str, ...]]:
    """The run's leaderboard page and notes; where none can be made (e.g. every unit failed), a note says
    why, since the units are worth seeing anyway."""
    try:
        leaderboard = build_leaderboard([path])
    except ConfigError as error:
        return None, (f"no leaderboard: {error}",)
    return leaderboard.to_html(), leaderboard.notes


def _open_dataset(path: Path) -> Collection:
    manifest = _read_json(path / "dataset.json")
    if not isinstance(manifest, dict):
        raise DataError(f"{path / 'dataset.json'}: the manifest is not a JSON object")
    kind = _unit_kind(manifest)
    files = {
        UnitId(int(p.parent.name), int(p.stem), kind): p
        for p in (path / "collated-activations").glob("*/*.json")
        if p.parent.name.isdigit() and p.stem.isdigit()
    }
    if not files:
        raise DataError(f"{path}: a dataset with no records under collated-activations/<layer>/<index>.json")

    def load(unit: UnitId) -> UnitSources:
        record_path = files[unit]
        record = serialization.load_json_file(record_path, NeuronRecord)
        return _with_related(UnitSources(unit=unit, record=record, record_path=record_path), path)

    return Collection(
        title=f"dataset {path.resolve().name}",
        path=path,
        kind="dataset",
        description=[("dataset directory", str(path)), *_manifest_lines(manifest, list(manifest))],
        method_ids=[],
        units=sorted(files),
        load=load,
    )


def _record_unit(record: NeuronRecord) -> UnitId:
    """Records of token pairs belong to attention heads; the published files do not say so otherwise."""
    pairs = any(isinstance(r, TokenPairRecord) for r in record.most_positive_activation_records)
    return record.neuron_id.to_unit(UnitKind.ATTENTION_HEAD if pairs else UnitKind.MLP_NEURON)


def _if_published(load: Callable[[], T]) -> T | None:
    """An optional artifact of a published unit (explanations, related tokens): None where it does not exist."""
    try:
        return load()
    except MissingFileError:
        return None


def _open_reference(ref: str, data_root: str | None) -> Collection:
    record = datasets.load_neuron_record(ref, data_root)
    unit = _record_unit(record)
    lines = _if_published(lambda: datasets.load_explanations(ref, data_root)) or []
    published = None if not lines else NeuronSimulationResults(
        neuron_id=record.neuron_id, scored_explanations=[e for line in lines for e in line.scored_explanations])
    sources = UnitSources(
        unit=unit,
        record=record,
        methods=[] if published is None else [MethodFindings(method_id=PUBLISHED_METHOD, results=published)],
        lookup_table=_if_published(lambda: datasets.load_token_lookup(ref, data_root)),
        weight_summary=_if_published(lambda: datasets.load_weight_summary(ref, data_root)),
    )
    return Collection(
        title=ref,
        path=Path(ref),
        kind="reference",
        description=[("unit reference", ref), ("read from", datasets.resolve(ref, data_root))],
        method_ids=[] if published is None else [PUBLISHED_METHOD],
        units=[unit],
        load=lambda _: sources,
    )


def _open_record(path: Path, record: NeuronRecord, dataset_root: Path | None) -> Collection:
    unit = _record_unit(record)
    sources = _with_related(UnitSources(unit=unit, record=record, record_path=path), dataset_root)
    return Collection(
        title=f"record {unit.layer}/{unit.index}",
        path=path,
        kind="record",
        description=[("record file", str(path))],
        method_ids=[],
        units=[unit],
        load=lambda _: sources,
    )


def _open_explanations(path: Path, lines: Sequence[ResultRecord]) -> Collection:
    method_id = path.name
    by_unit: dict[UnitId, ResultRecord] = {}
    for result in lines:
        kind = UnitKind.ATTENTION_HEAD if isinstance(result, AttentionSimulationResults) else UnitKind.MLP_NEURON
        unit = result.neuron_id.to_unit(kind)
        if unit in by_unit:
            logger.warning("%s: unit %s appears more than once; showing its last line", path, unit)
        by_unit[unit] = result
    if not by_unit:
        raise DataError(f"{path}: no explanations in the file (it is empty)")
    return Collection(
        title=f"explanations {path.name}",
        path=path,
        kind="explanations",
        description=[("explanations file", str(path)), ("units", str(len(by_unit)))],
        method_ids=[method_id],
        units=sorted(by_unit),
        load=lambda unit: UnitSources(unit=unit, methods=[MethodFindings(method_id=method_id,
                                                                         results=by_unit[unit])]),
    )
