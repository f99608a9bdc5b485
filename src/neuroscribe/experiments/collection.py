"""Outcomes of one or more run directories, merged per method: what reports and leaderboards read.

Runs made from the same config (same hash), such as the shards of one experiment, are merged unit by
unit. Runs from different configs keep their methods apart: a method id that occurs in more than one
config is qualified with the run's name, e.g. `baseline/token_activation_pair+all_at_once`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuroscribe.errors import DataError
from neuroscribe.experiments.store import RunStore, UnitOutcome, UnitUsage, repeat_dirs
from neuroscribe.records import UnitId
from neuroscribe.scorers import primary_variant

EMBEDDED_MODEL_WARNING = (
    "These numbers were produced with the embedded model (SmolLM2-135M-Instruct). As a simulator it does not "
    "follow explanations (its predictions barely depend on them), so its scores are a plumbing check of the "
    "pipeline, not a measurement of explanation quality. Methods scored by the `embedding` or `lexical` simulator "
    "ask no LLM and do follow explanations, weakly (on the paper's carousel neurons, mean r with the truth 0.24 "
    "and 0.20, against 0.04 and 0.00 for a mismatched explanation; the paper's GPT-4 simulator 0.41)."
)


UnitKey = tuple[int, int, str]
"""(layer, index, kind) of a unit, as outcomes of several runs are merged; the kind of a latent of one of
several autoencoders is 'autoencoder_latent:<sae id>', so latents of different autoencoders stay apart."""


def unit_key(unit: UnitId) -> UnitKey:
    return unit.layer, unit.index, f"{unit.kind.value}:{unit.sae}" if unit.sae else unit.kind.value


def unit_label(key: UnitKey) -> str:
    """'layer/index', or 'sae:layer/index' for a latent of one of several autoencoders (as [units] refs)."""
    layer, index, kind = key
    sae = kind.partition(":")[2]
    return f"{sae}:{layer}/{index}" if sae else f"{layer}/{index}"


@dataclass(frozen=True, kw_only=True)
class MethodOutcomes:
    """Every unit's latest outcome under one method, merged over the runs that share its config."""

    method_id: str
    outcomes: Mapping[UnitKey, UnitOutcome]
    """(layer, index, kind) -> outcome."""
    is_control: bool = False
    models: tuple[str, ...] = ()
    planned: int = 0
    """Units the run's config names (from the manifests), attempted or not; 0 where no manifest says."""
    repeats: tuple[Mapping[UnitKey, UnitOutcome], ...] = ()
    """The outcomes of the run's further repeats (`run --repeats N`: repeat 1 first); empty without repeats."""

    def repeat_scores(self, variant: str | None = None, name: str | None = None) -> dict[UnitKey, list[float | None]]:
        """Per unit of `outcomes`: its score in every repeat, repeat 0 first (None where failed or undefined)."""
        return {unit: [_value(o, name, variant), *(_value(r[unit], name, variant) if unit in r else None
                                                   for r in self.repeats)]
                for unit, o in sorted(self.outcomes.items())}

    def scores(self, variant: str | None = None, name: str | None = None) -> dict[UnitKey, float | None]:
        """Per unit: the score `name` (default: the scorer's headline) in `variant` (default: its primary
        variant, top-and-random or all), or None for a failed unit or an undefined score (never averaged in)."""
        return {unit: _value(o, name, variant) for unit, o in sorted(self.outcomes.items())}

    def score_names(self) -> dict[str, list[str]]:
        """Every score name the method's scorer computed, with its variants, in the order first seen."""
        found: dict[str, list[str]] = {}
        for outcome in self.outcomes.values():
            for name, variants in outcome.named_scores.items():
                known = found.setdefault(name, [])
                known += [v for v in variants if v not in known]
        return found

    @property
    def headline(self) -> str | None:
        """The score the method's scorer leads with (e.g. 'ev_correlation'), from its first ok outcome."""
        return next((o.headline for _, o in sorted(self.outcomes.items()) if o.headline), None)

    @property
    def n_planned(self) -> int:
        """The denominator of coverage: the planned units (never fewer than those with an outcome)."""
        return max(self.planned, len(self.outcomes))

    @property
    def n_ok(self) -> int:
        return sum(o.status == "ok" for o in self.outcomes.values())

    @property
    def n_failed(self) -> int:
        return sum(o.status == "failed" for o in self.outcomes.values())

    @property
    def usage(self) -> UnitUsage:
        total = UnitUsage()
        for outcome in self.outcomes.values():
            total = total + outcome.usage
        return total

    @property
    def seconds(self) -> float:
        return sum(o.seconds for o in self.outcomes.values())


def _value(outcome: UnitOutcome, name: str | None, variant: str | None) -> float | None:
    if outcome.status != "ok":
        return None
    table = outcome.scores if name is None else outcome.named_scores.get(name, {})
    chosen = variant or primary_variant(table)
    return None if chosen is None else table.get(chosen)


@dataclass(frozen=True, kw_only=True)
class RunCollection:
    """The merged outcomes of some run directories, with what their manifests say."""

    run_dirs: tuple[Path, ...]
    manifests: tuple[Mapping[str, Any], ...]
    methods: tuple[MethodOutcomes, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def uses_embedded_model(self) -> bool:
        return any(
            backend.get("model") == "embedded"
            for manifest in self.manifests
            for backend in manifest.get("backends", {}).values()
        )

    @property
    def disjointness(self) -> list[str]:
        """How each run kept explanation and scoring excerpts apart (run.json `disjointness`), distinct values."""
        return list(dict.fromkeys(str(m.get("disjointness", "not recorded")) for m in self.manifests))

    @property
    def models(self) -> list[str]:
        found: list[str] = []
        for manifest in self.manifests:
            for name, backend in manifest.get("backends", {}).items():
                label = f"{name}: {backend.get('type')} {backend.get('model')}"
                if backend.get("id"):
                    label += f" ({backend['id']})"
                if label not in found:
                    found.append(label)
        return found


def load_runs(run_dirs: Sequence[str | Path]) -> RunCollection:
    if not run_dirs:
        raise DataError("no run directories given")
    stores = [RunStore(path) for path in run_dirs]
    manifests = [store.read_manifest() for store in stores]
    by_hash: dict[str, list[int]] = {}
    for i, manifest in enumerate(manifests):
        by_hash.setdefault(str(manifest.get("config_hash", f"unknown-{i}")), []).append(i)
    method_counts: dict[str, int] = {}
    for members in by_hash.values():
        for method_id in dict.fromkeys(m for i in members for m in stores[i].methods()):
            method_counts[method_id] = method_counts.get(method_id, 0) + 1
    methods: list[MethodOutcomes] = []
    for members in by_hash.values():
        first = manifests[members[0]]
        run_name = str(first.get("config", {}).get("name") or stores[members[0]].path.name)
        controls = set(first.get("controls", []))
        planned = len({str(u) for i in members for u in manifests[i].get("units", [])})
        models = tuple(
            f"{b.get('type')}:{b.get('model')}" for b in first.get("backends", {}).values()
        )
        for method_id in dict.fromkeys(m for i in members for m in stores[i].methods()):
            merged: dict[tuple[int, int, str], UnitOutcome] = {}
            for i in members:
                for unit, outcome in stores[i].outcomes(method_id).items():
                    key = unit_key(unit)
                    if key not in merged or merged[key].status != "ok":
                        merged[key] = outcome
            label = method_id if method_counts[method_id] == 1 else f"{run_name}/{method_id}"
            repeats = tuple(
                {unit_key(u): o for u, o in RunStore(path).outcomes(method_id).items()}
                for path in repeat_dirs(stores[members[0]].path))
            methods.append(MethodOutcomes(method_id=label, outcomes=merged, is_control=method_id in controls,
                                          models=models, planned=planned, repeats=repeats))
    notes = []
    if len(by_hash) > 1:
        notes.append(f"{len(by_hash)} different configs; methods from different configs are not paired unit by unit "
                     "unless they share units")
    return RunCollection(run_dirs=tuple(s.path for s in stores), manifests=tuple(manifests), methods=tuple(methods),
                         notes=tuple(notes))
