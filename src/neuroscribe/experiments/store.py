"""The run directory: an append-only, crash-safe record of what a run finished.

Layout (read by reports, the leaderboard and the viewer):

    RUN/run.json                         manifest: resolved config, its hash, versions, git commit, models, methods
    RUN/results/<method_id>.jsonl        one result per finished unit: the published NeuronSimulationResults for
                                         the simulation scorer, our ExplanationScores for every other scorer
    RUN/outcomes/<method_id>.jsonl       one JSON object per unit: status, reason, explanation, scores (the headline
                                         score per variant), named_scores (every score), usage, seconds
    RUN/records/<layer>/<index>.json     the NeuronRecord that was used (published format)
    RUN/repeats/<r>/                     repeat r > 0 (`run --repeats N`): a run directory of its own

A unit's result line and outcome line are appended together under a file lock, each flushed and
fsynced, so several shard processes can share one run directory, and a kill at any point loses at most
the unit in flight. The outcome line commits the unit: a result line without one (a kill between the
two writes) is ignored by readers and dropped by `compact`. A partial last line (a kill or a full disk
mid-write) is cut off before the next append.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from neuroscribe import serialization
from neuroscribe.errors import DataError
from neuroscribe.records import NeuronRecord, UnitId, UnitKind
from neuroscribe.results import ResultRecord

logger = logging.getLogger(__name__)
Status = Literal["ok", "failed"]
REPEATS_DIR = "repeats"
"""Repeat r > 0 of a run RUN lives in RUN/repeats/<r>, a run directory of its own (repeat 0 is RUN itself)."""
LEGACY_HEADLINE = "ev_correlation"
"""What outcomes written before `named_scores` existed scored (the simulation's correlation)."""


@dataclass(frozen=True, kw_only=True)
class UnitUsage:
    """Model use attributed to one unit and method."""

    calls: int = 0
    """Model calls made (cache hits not included)."""
    cache_hits: int = 0
    """Calls answered from the response cache."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    """At the backend's configured prices."""

    def __add__(self, other: UnitUsage) -> UnitUsage:
        return UnitUsage(
            calls=self.calls + other.calls,
            cache_hits=self.cache_hits + other.cache_hits,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One candidate explanation of a best-of-n choice and its score on the selection split."""

    explanation: str
    selection_score: float | None = None
    """The deciding score on the selection split; None where undefined or not scored (see `error`)."""
    error: str | None = None
    """Why the candidate could not be scored (it was then not eligible)."""
    chosen: bool = False

    def to_json_obj(self) -> dict[str, Any]:
        return {"explanation": self.explanation, "selection_score": _finite_or_none(self.selection_score),
                "error": self.error, "chosen": self.chosen}

    @classmethod
    def from_json_obj(cls, data: Mapping[str, Any]) -> Candidate:
        score = data.get("selection_score")
        return cls(explanation=str(data["explanation"]), selection_score=None if score is None else float(score),
                   error=data.get("error"), chosen=bool(data.get("chosen", False)))


@dataclass(frozen=True, kw_only=True)
class UnitOutcome:
    """What happened to one unit under one method: its scores, or why it failed."""

    unit: UnitId
    status: Status
    reason: str | None = None
    """Why it failed (None when ok)."""
    stage: str | None = None
    """Where it failed: 'records', 'explain', 'calibrate', 'simulate' or 'score' (None when ok)."""
    explanation: str | None = None
    scores: Mapping[str, float | None] = field(default_factory=dict)
    """The headline score per variant (e.g. 'top_and_random', 'top_only', 'random_only'); None where undefined."""
    named_scores: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    """Every score the scorer computed: score name -> variant -> value (the headline among them)."""
    headline: str | None = None
    """Which of `named_scores` `scores` holds (e.g. 'ev_correlation'); None when failed."""
    calibrated: bool = False
    usage: UnitUsage = field(default_factory=UnitUsage)
    seconds: float = 0.0
    """Wall-clock time spent on the unit and method."""
    undefined: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Why each undefined score of `named_scores` is undefined: score name -> variant -> reason."""
    candidates: tuple[Candidate, ...] = ()
    """Every candidate explanation of a best-of-n choice with its selection score (empty: no choice made)."""
    selection: Mapping[str, str] = field(default_factory=dict)
    """How the choice was made: scorer, score, variant and split (empty: no choice made)."""

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "unit": {"layer": self.unit.layer, "index": self.unit.index, "kind": self.unit.kind.value,
                     **({"sae": self.unit.sae} if self.unit.sae else {})},
            "status": self.status,
            "reason": self.reason,
            "stage": self.stage,
            "explanation": self.explanation,
            "scores": {k: _finite_or_none(v) for k, v in self.scores.items()},
            "named_scores": {name: {k: _finite_or_none(v) for k, v in variants.items()}
                             for name, variants in self.named_scores.items()},
            "headline": self.headline,
            "calibrated": self.calibrated,
            "usage": {
                "calls": self.usage.calls,
                "cache_hits": self.usage.cache_hits,
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "cost_usd": self.usage.cost_usd,
            },
            "seconds": self.seconds,
            **({"undefined": {name: dict(v) for name, v in self.undefined.items()}} if self.undefined else {}),
            **({"candidates": [c.to_json_obj() for c in self.candidates], "selection": dict(self.selection)}
               if self.candidates else {}),
        }

    @classmethod
    def from_json_obj(cls, data: Mapping[str, Any], where: str) -> UnitOutcome:
        try:
            unit = data["unit"]
            usage = data.get("usage", {})
            status = data["status"]
            if status not in ("ok", "failed"):
                raise ValueError(f"status {status!r} is not 'ok' or 'failed'")
            scores = _score_map(data.get("scores", {}))
            named = {str(name): _score_map(variants) for name, variants in data.get("named_scores", {}).items()}
            headline = data.get("headline")
            if "named_scores" not in data and status == "ok":  # written before scorers had names
                named, headline = {LEGACY_HEADLINE: scores}, LEGACY_HEADLINE
            return cls(
                unit=UnitId(int(unit["layer"]), int(unit["index"]), UnitKind(unit.get("kind", "mlp_neuron")),
                            str(unit.get("sae", ""))),
                status=status,
                reason=data.get("reason"),
                stage=data.get("stage"),
                explanation=data.get("explanation"),
                scores=scores,
                named_scores=named,
                headline=None if headline is None else str(headline),
                calibrated=bool(data.get("calibrated", False)),
                usage=UnitUsage(
                    calls=int(usage.get("calls", 0)),
                    cache_hits=int(usage.get("cache_hits", 0)),
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
                    cost_usd=float(usage.get("cost_usd", 0.0)),
                ),
                seconds=float(data.get("seconds", 0.0)),
                undefined={str(name): {str(k): str(v) for k, v in variants.items()}
                           for name, variants in data.get("undefined", {}).items()},
                candidates=tuple(Candidate.from_json_obj(c) for c in data.get("candidates", ())),
                selection={str(k): str(v) for k, v in data.get("selection", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{where}: not a unit outcome ({type(error).__name__}: {error})") from None


def _score_map(data: Mapping[str, Any]) -> dict[str, float | None]:
    return {str(k): (None if v is None else float(v)) for k, v in data.items()}


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or value != value else value


def repeat_dirs(run_dir: str | Path) -> list[Path]:
    """The run directories of the repeats of the run in `run_dir` beyond the first, in repeat order."""
    root = Path(run_dir) / REPEATS_DIR
    found = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name))


class RunStore:
    """Reads and writes one run directory (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path / ".lock"))

    # --- paths --------------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.path / "run.json"

    def results_path(self, method_id: str) -> Path:
        return self.path / "results" / f"{_safe(method_id)}.jsonl"

    def outcomes_path(self, method_id: str) -> Path:
        return self.path / "outcomes" / f"{_safe(method_id)}.jsonl"

    def record_path(self, unit: UnitId) -> Path:
        return self.path / "records" / unit.sae / str(unit.layer) / f"{unit.index}.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def create(self) -> None:
        for sub in ("results", "outcomes", "records"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run's lock (shared by every process writing this directory)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            yield

    # --- manifest -----------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise DataError(f"{self.path} is not a run directory: it has no run.json (make one with `neuroscribe run`)")
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"{self.manifest_path}: unreadable manifest ({error})") from None
        if not isinstance(data, dict):
            raise DataError(f"{self.manifest_path}: the manifest is not a JSON object")
        return data

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Atomic (write a temporary file, then rename), so a kill never leaves half a manifest."""
        data = dict(manifest)
        data["updated"] = now_iso()
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        serialization.atomic_write_text(self.manifest_path, text)

    # --- per-unit results ---------------------------------------------------------------------------

    def append(self, method_id: str, outcome: UnitOutcome, result: ResultRecord | None) -> None:
        """Commit one unit: its result line (if any), then its outcome line, durably, under the lock."""
        if (result is None) != (outcome.status == "failed"):
            raise ValueError("an ok outcome needs a result and a failed one has none")
        lines = []
        if result is not None:
            lines.append((self.results_path(method_id), serialization.dumps(result)))
        lines.append((self.outcomes_path(method_id), json.dumps(outcome.to_json_obj(), ensure_ascii=False)))
        with self.locked():
            for path, line in lines:
                _append_line(path, line)

    def outcomes(self, method_id: str) -> dict[UnitId, UnitOutcome]:
        """The latest outcome per unit (a retried unit's later outcome wins)."""
        path = self.outcomes_path(method_id)
        latest: dict[UnitId, UnitOutcome] = {}
        for number, text in _complete_lines(path):
            try:
                outcome = UnitOutcome.from_json_obj(json.loads(text), f"{path}, line {number}")
            except (json.JSONDecodeError, DataError) as error:  # garbled: the unit is not committed, so redone
                logger.warning("%s, line %d: not a unit outcome (%s); skipped, its unit counts as not finished",
                               path, number, error)
                continue
            latest[outcome.unit] = outcome
        return latest

    def results(self, method_id: str) -> dict[UnitId, ResultRecord]:
        """The latest committed result per unit whose latest outcome is ok."""
        return self._results_of(method_id, self.outcomes(method_id))

    def _results_of(self, method_id: str, outcomes: Mapping[UnitId, UnitOutcome]) -> dict[UnitId, ResultRecord]:
        ok = {u for u, o in outcomes.items() if o.status == "ok"}
        path = self.results_path(method_id)
        latest: dict[UnitId, ResultRecord] = {}
        kinds = {(u.layer, u.index, u.sae): u.kind for u in ok}
        for number, text in _complete_lines(path):
            source = f"{path}, line {number}"
            try:
                result = serialization.result_from_json_obj(serialization.parse(text, source), source)
            except DataError as error:  # a garbled line: its unit has no intact result, so it is redone
                logger.warning("%s (skipped: its unit counts as not finished and is redone by the next run)", error)
                continue
            key = (result.neuron_id.layer_index, result.neuron_id.neuron_index, result.neuron_id.sae or "")
            if key in kinds:
                latest[result.neuron_id.to_unit(kinds[key])] = result
        return latest

    def finished(self, method_id: str) -> dict[UnitId, UnitOutcome]:
        """The latest outcome per unit that is final: failed, or ok with an intact result line. An ok outcome
        whose result line is missing or damaged (a torn or garbled line) is left out, so the unit is redone."""
        outcomes = self.outcomes(method_id)
        with_result = self._results_of(method_id, outcomes)  # one read of the outcome file, not two
        lost = sorted(u for u, o in outcomes.items() if o.status == "ok" and u not in with_result)
        if lost:
            logger.warning("%s: %d finished unit(s) have no intact result line (%s); they will be redone",
                           self.results_path(method_id), len(lost), ", ".join(map(str, lost[:5])))
        return {u: o for u, o in outcomes.items() if o.status == "failed" or u in with_result}

    def methods(self) -> list[str]:
        """Method ids in manifest order, then any other outcome files found (e.g. from a newer config)."""
        listed: list[str] = []
        if self.exists():
            listed = [str(m) for m in self.read_manifest().get("methods", [])]
        found = sorted(p.stem for p in (self.path / "outcomes").glob("*.jsonl"))
        return listed + [m for m in found if m not in listed]

    def compact(self) -> None:
        """Rewrite every results file with one line per committed unit (drops orphans and superseded lines)."""
        with self.locked():
            for method_id in self.methods():
                path = self.results_path(method_id)
                if not path.exists():
                    continue
                kept = self.results(method_id)
                text = "".join(serialization.dumps(r) + "\n" for _, r in sorted(kept.items()))
                serialization.atomic_write_text(path, text)

    # --- records ------------------------------------------------------------------------------------

    def write_record(self, unit: UnitId, record: NeuronRecord) -> None:
        serialization.atomic_write_text(self.record_path(unit), serialization.dumps(record) + "\n")

    def read_record(self, unit: UnitId) -> NeuronRecord | None:
        path = self.record_path(unit)
        if not path.is_file():
            return None
        return serialization.loads(path.read_text(encoding="utf-8"), NeuronRecord, source=str(path))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _safe(method_id: str) -> str:
    if not method_id or "/" in method_id or method_id.startswith("."):
        raise DataError(f"method id {method_id!r} cannot be a file name (no '/', no leading '.')")
    return method_id


def _complete_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every newline-terminated, non-empty line; a partial tail is skipped."""
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.endswith("\n") and line.strip():
                yield number, line


def _append_line(path: Path, line: str) -> None:
    """Append one line durably; first cut off a partial last line left by a crash or a full disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                handle.seek(0)
                content = handle.read()
                handle.truncate(content.rfind(b"\n") + 1)
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        start = handle.seek(0, os.SEEK_END)
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                handle.truncate(start)  # leave no partial line behind
            raise


