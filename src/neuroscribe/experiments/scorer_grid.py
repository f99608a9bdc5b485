"""Every explanation source under every scorer, side by side: the leaderboard's method x scorer table.

A method id is `SOURCE+SCORER` (an explainer or control judged by a scorer), or just `SCORER` for a scorer
that judges the unit itself (intruder). Each column holds one scorer's headline score in its primary
variant; within a column every source is averaged over the same units (those every source of the column
scored), so a row can be read across scorers and a column down sources. Units scored under one scorer but
not another are not forced to match across columns: each column says its own number of common units.
Explanation-free scorers are properties of the unit, shown apart with every variant (e.g. chance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neuroscribe.experiments.collection import MethodOutcomes
from neuroscribe.scorers import primary_variant
from neuroscribe.scoring import Estimate, bootstrap_mean

SOURCE_SEPARATOR = "+"


def split_method_id(method_id: str) -> tuple[str | None, str]:
    """(explanation source, scorer label); the source is None for a scorer that needs no explanation."""
    source, separator, scorer = method_id.rpartition(SOURCE_SEPARATOR)
    return (source, scorer) if separator else (None, method_id)


@dataclass(frozen=True, kw_only=True)
class GridCell:
    estimate: Estimate
    """Mean over the column's common units (bootstrap interval)."""
    n_scored: int
    n_planned: int


@dataclass(frozen=True, kw_only=True)
class GridColumn:
    scorer: str
    """The scorer's label (the part of the method id after the source)."""
    score: str
    """The headline score shown, `NAME.variant`."""
    n_common: int
    """Units every source of this column scored: what its means rest on."""
    cells: Mapping[str, GridCell]
    """Source -> cell; a source this scorer did not judge has none."""


@dataclass(frozen=True, kw_only=True)
class UnitProperty:
    """An explanation-free scorer's headline, every variant averaged over the units it scored."""

    scorer: str
    score: str
    variants: Mapping[str, Estimate]
    n_scored: int
    n_planned: int


@dataclass(frozen=True, kw_only=True)
class ScorerGrid:
    sources: tuple[str, ...]
    controls: frozenset[str]
    columns: tuple[GridColumn, ...]
    unit_properties: tuple[UnitProperty, ...]

    def header(self) -> list[str]:
        return ["source", *(f"{c.scorer}: {c.score} (on {c.n_common} common units)" for c in self.columns)]

    def rows(self) -> list[list[str]]:
        """One row of cells per source, in the grid's source order."""
        def cell(column: GridColumn, source: str) -> str:
            found = column.cells.get(source)
            if found is None:
                return "not run"
            return f"{format_estimate(found.estimate)} (scored {found.n_scored} / {found.n_planned})"

        return [[source + (" (control)" if source in self.controls else ""), *(cell(c, source) for c in self.columns)]
                for source in self.sources]

    def property_lines(self) -> list[str]:
        return [f"{p.scorer}: {p.score.partition('.')[0]} over {p.n_scored} / {p.n_planned} units: "
                + ", ".join(f"{variant} {format_estimate(e)}" for variant, e in p.variants.items())
                for p in self.unit_properties]


def format_mean_and_interval(mean: float | None, low: float | None, high: float | None) -> str:
    """'0.412 [0.301, 0.520]'; 'n/a' without a mean, no brackets without an interval."""
    if mean is None:
        return "n/a"
    interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return f"{mean:.3f}{interval}"


def format_estimate(estimate: Estimate) -> str:
    return format_mean_and_interval(estimate.mean, estimate.low, estimate.high)


def build_grid(methods: Sequence[MethodOutcomes], seed: int = 0) -> ScorerGrid:
    """The grid of `methods` (those of one leaderboard's runs), columns in the order scorers first appear."""
    sources: dict[str, None] = {}
    by_scorer: dict[str, list[tuple[str, MethodOutcomes]]] = {}
    free: list[MethodOutcomes] = []
    controls = set()
    for method in methods:
        source, scorer = split_method_id(method.method_id)
        if source is None:
            free.append(method)
            continue
        sources.setdefault(source)
        by_scorer.setdefault(scorer, []).append((source, method))
        if method.is_control:
            controls.add(source)
    columns = [_column(scorer, members, seed) for scorer, members in by_scorer.items()]
    properties = [_unit_property(method, seed) for method in free]
    return ScorerGrid(sources=tuple(sources), controls=frozenset(controls), columns=tuple(columns),
                      unit_properties=tuple(properties))


NOTHING_SCORED = "(no unit scored)"


def _headline(method: MethodOutcomes) -> tuple[str, str] | None:
    """(score name, primary variant) of the method's headline; None when no unit was scored."""
    if method.headline is None:
        return None
    variant = primary_variant(method.score_names().get(method.headline, ()))
    return None if variant is None else (method.headline, variant)


def _column(scorer: str, members: Sequence[tuple[str, MethodOutcomes]], seed: int) -> GridColumn:
    """The column; one whose every unit failed shows its sources at 0 scored, not nothing."""
    key = next((k for _, m in members if (k := _headline(m)) is not None), None)
    name, variant = key or (NOTHING_SCORED, "")
    scored = {source: {u: v for u, v in m.scores(variant, name).items() if v is not None} for source, m in members}
    having = [values for values in scored.values() if values]
    common = set.intersection(*(set(values) for values in having)) if having else set()
    cells = {source: GridCell(estimate=bootstrap_mean([v for u, v in sorted(scored[source].items()) if u in common],
                                                      seed=seed),
                              n_scored=len(scored[source]), n_planned=m.n_planned)
             for source, m in members}
    return GridColumn(scorer=scorer, score=f"{name}.{variant}" if key else name, n_common=len(common), cells=cells)


def _unit_property(method: MethodOutcomes, seed: int) -> UnitProperty:
    key = _headline(method)
    name, variant = key or (NOTHING_SCORED, "")
    variants = method.score_names().get(name, [])
    estimates = {v: bootstrap_mean([x for x in method.scores(v, name).values() if x is not None], seed=seed)
                 for v in variants}
    n_scored = sum(x is not None for x in method.scores(variant, name).values())
    return UnitProperty(scorer=method.method_id, score=f"{name}.{variant}" if key else name, variants=estimates,
                        n_scored=n_scored, n_planned=method.n_planned)
