"""Rank explanation methods on the same units, with honest uncertainty.

Methods are ranked on the units that every ranked method scored, so a method that fails on the hard
units cannot rank higher for it. Each method's coverage (units scored / planned) and its mean over
all of its own scored units stand beside it; a method below the coverage threshold is flagged and
ranked after those above it. Each method is compared with the best non-control method *unit by unit*
(a paired test on the common units), because units differ far more from each other than methods do.
Failed units and undefined scores are missing (counted in coverage), never averaged in as 0.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from neuroscribe.errors import ConfigError
from neuroscribe.experiments.collection import EMBEDDED_MODEL_WARNING, MethodOutcomes, UnitKey, load_runs
from neuroscribe.experiments.scorer_grid import ScorerGrid, build_grid, format_estimate, format_mean_and_interval
from neuroscribe.scorers import primary_variant
from neuroscribe.scoring import Estimate, PairedComparison, bootstrap_mean, bootstrap_mean_over_repeats, paired_test

DEFAULT_MIN_COVERAGE = 0.9


@dataclass(frozen=True)
class ScoreKey:
    """Which number ranks methods: a score name and one of its variants (`NAME[.variant]` on the command line)."""

    name: str
    variant: str | None = None
    """None: the score's primary variant (top-and-random, or all)."""

    @classmethod
    def parse(cls, text: str) -> ScoreKey:
        name, _, variant = text.strip().partition(".")
        if not name:
            raise ConfigError(f"--score {text!r}: give a score name, e.g. ev_correlation or ev_correlation.random_only")
        return cls(name, variant or None)

    def __str__(self) -> str:
        return self.name if self.variant is None else f"{self.name}.{self.variant}"


@dataclass(frozen=True, kw_only=True)
class LeaderboardRow:
    rank: int
    method_id: str
    is_control: bool
    score: Estimate
    """Mean over the common units (bootstrap interval)."""
    own: Estimate
    """Mean over every unit this method scored."""
    random_only: Estimate | None
    """The same score's random-only variant over the common units, when ranking by another variant."""
    n_scored: int
    n_planned: int
    n_failed: int
    below_coverage: bool
    vs_best: PairedComparison | None
    """This method minus the best method, paired by unit; None for the best itself (or when none scored)."""
    is_reference: bool = False
    """This is the best method, the one the others are compared with."""

    @property
    def coverage(self) -> float:
        return self.n_scored / self.n_planned if self.n_planned else 0.0


@dataclass(frozen=True, kw_only=True)
class Leaderboard:
    rows: tuple[LeaderboardRow, ...]
    best: str | None
    """The best non-control method (the reference of the paired differences)."""
    score: ScoreKey
    n_common: int
    """Units every ranked (not flagged) method scored: what the ranking rests on."""
    min_coverage: float
    runs: tuple[str, ...]
    models: tuple[str, ...]
    notes: tuple[str, ...]
    grid: ScorerGrid
    """Every explanation source under every scorer of the runs (not only the ranked score)."""

    def _header(self) -> list[str]:
        return ["rank", "method", f"mean on the {self.n_common} common units (95% CI)",
                f"difference vs {self.best or 'best'} (95% CI)", "p (paired)", "coverage: scored / planned",
                "mean over its own scored units", "random-only on common units (95% CI)"]

    def _summary(self) -> str:
        return (f"Ranked by {self.score} on the {self.n_common} units that every ranked method scored; methods "
                f"below {self.min_coverage:.0%} coverage are flagged and ranked after the others.")

    def to_markdown(self) -> str:
        lines = ["# Leaderboard of explanation methods", ""]
        lines += [f"Runs: {', '.join(self.runs)}", f"Models: {'; '.join(self.models) or 'unknown'}", "",
                  self._summary(), ""]
        lines += [f"> {note}" for note in self.notes]
        if self.notes:
            lines.append("")
        header = self._header()
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_cells(row, self.min_coverage)) + " |" for row in self.rows]
        lines += ["", _explanation_of_columns(), ""]
        lines += ["## Every source under every scorer", "", GRID_NOTE, ""]
        lines.append("| " + " | ".join(self.grid.header()) + " |")
        lines.append("|" + "---|" * len(self.grid.header()))
        lines += ["| " + " | ".join(row) + " |" for row in self.grid.rows()]
        if self.grid.unit_properties:
            lines += ["", "Properties of the units (no explanation judged):", ""]
            lines += [f"- {line}" for line in self.grid.property_lines()]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self._header())
        body = "".join(
            f"<tr class=\"{'control' if row.is_control else 'method'}{' flagged' if row.below_coverage else ''}\">"
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(row, self.min_coverage)) + "</tr>"
            for row in self.rows
        )
        notes = "".join(f"<p class=\"note\">{html.escape(note)}</p>" for note in self.notes)
        grid_head = "".join(f"<th>{html.escape(h)}</th>" for h in self.grid.header())
        grid_body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                            for row in self.grid.rows())
        properties = "".join(f"<li>{html.escape(line)}</li>" for line in self.grid.property_lines())
        return (
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>neuroscribe leaderboard</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}tr.control td{color:#666;font-style:italic}"
            "tr.flagged td{background:#fbeaea}"
            ".note{background:#fff4d6;padding:.5em;border-left:4px solid #e0a800}</style></head><body>"
            "<h1>Leaderboard of explanation methods</h1>"
            f"<p>Runs: {html.escape(', '.join(self.runs))}<br>Models: {html.escape('; '.join(self.models))}</p>"
            f"<p>{html.escape(self._summary())}</p>"
            f"{notes}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p>{html.escape(_explanation_of_columns())}</p>"
            f"<h2>Every source under every scorer</h2><p>{html.escape(GRID_NOTE)}</p>"
            f"<table class=\"grid\"><thead><tr>{grid_head}</tr></thead><tbody>{grid_body}</tbody></table>"
            + (f"<p>Properties of the units (no explanation judged):</p><ul>{properties}</ul>" if properties else "")
            + "</body></html>\n"
        )


GRID_NOTE = (
    "Each column is one scorer's headline score; within a column every source is averaged over the units all "
    "of that column's sources scored (its common units), with a 95% bootstrap interval. Columns may rest on "
    "different units: compare down a column, and across a row only with each column's unit count in mind."
)


def _explanation_of_columns() -> str:
    return (
        "Means are over units (each unit's score pools its scoring excerpts); intervals are 95% bootstrap intervals "
        "over units. Differences are paired by unit against the best method on the common units (p: sign-flip "
        "permutation test). Coverage counts units with a defined score among those planned (the config's units, "
        "attempted or not); failures and undefined scores are never counted as 0. (control) marks baselines: "
        "another unit's explanation, the token look-up explanation, the published explanation."
    )


def _estimate(estimate: Estimate | None) -> str:
    return "" if estimate is None else format_estimate(estimate)


def _cells(row: LeaderboardRow, min_coverage: float) -> list[str]:
    name = row.method_id + (" (control)" if row.is_control else "")
    if row.vs_best is None:
        difference, p_value = ("(reference)", "") if row.is_reference else ("n/a", "n/a")
    else:
        difference = format_mean_and_interval(row.vs_best.mean_difference, row.vs_best.low, row.vs_best.high)
        p_value = _p(row.vs_best.p_value)
    coverage = f"{row.n_scored} / {row.n_planned} ({row.coverage:.0%})" + (
        f", {row.n_failed} failed" if row.n_failed else "")
    if row.below_coverage:
        coverage += f" — below {min_coverage:.0%}, flagged"
    return [str(row.rank), name, _estimate(row.score) + f" (n={row.score.n})", difference, p_value, coverage,
            _estimate(row.own) + f" (n={row.own.n})", _estimate(row.random_only)]


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _defined(values: dict[UnitKey, float | None]) -> dict[UnitKey, float]:
    return {unit: value for unit, value in values.items() if value is not None}


def _unit_scores(method: MethodOutcomes, key: ScoreKey) -> dict[UnitKey, float]:
    """Each unit's defined score; with repeats, its mean over the repeats that define it."""
    if not method.repeats:
        return _defined(method.scores(key.variant, key.name))
    means = {}
    for unit, values in method.repeat_scores(key.variant, key.name).items():
        defined = [v for v in values if v is not None]
        if defined:
            means[unit] = sum(defined) / len(defined)
    return means


def rank_methods(methods: Sequence[MethodOutcomes], key: ScoreKey, *, min_coverage: float = DEFAULT_MIN_COVERAGE,
                 seed: int = 0) -> tuple[list[LeaderboardRow], str | None, int]:
    """Rows in rank order, the best non-control method, and how many common units the ranking rests on."""
    scored = {m.method_id: _unit_scores(m, key) for m in methods}
    coverage = {m.method_id: len(scored[m.method_id]) / m.n_planned if m.n_planned else 0.0 for m in methods}
    ranked_ids = [m.method_id for m in methods if scored[m.method_id] and coverage[m.method_id] >= min_coverage]
    basis = ranked_ids or [m.method_id for m in methods if scored[m.method_id]]
    common = set.intersection(*(set(scored[m]) for m in basis)) if basis else set()

    def on_common(method: MethodOutcomes, values: dict[UnitKey, float], variant: str | None) -> Estimate:
        if method.repeats:  # the interval includes run-to-run noise
            repeats = method.repeat_scores(variant, key.name)
            return bootstrap_mean_over_repeats([repeats[u] for u in sorted(values) if u in common], seed=seed)
        return bootstrap_mean([v for u, v in sorted(values.items()) if u in common], seed=seed)

    estimates = {m.method_id: on_common(m, scored[m.method_id], key.variant) for m in methods}

    def order(method: MethodOutcomes) -> tuple[bool, bool, float, float, str]:
        mean = estimates[method.method_id].mean
        flagged = method.method_id not in ranked_ids
        return (flagged, mean is None, -(mean or 0.0), -coverage[method.method_id], method.method_id)

    ordered = sorted(methods, key=order)
    candidates = [m for m in ordered if m.method_id in ranked_ids and estimates[m.method_id].mean is not None]
    best = next((m for m in candidates if not m.is_control), candidates[0] if candidates else None)
    rows = []
    for rank, method in enumerate(ordered, start=1):
        values = scored[method.method_id]
        random_only = None
        if key.variant != "random_only" and "random_only" in method.score_names().get(key.name, ()):
            random_only = on_common(method, _unit_scores(method, ScoreKey(key.name, "random_only")), "random_only")
        rows.append(LeaderboardRow(
            rank=rank,
            method_id=method.method_id,
            is_control=method.is_control,
            score=estimates[method.method_id],
            own=bootstrap_mean(list(values.values()), seed=seed),
            random_only=random_only,
            n_scored=len(values),
            n_planned=method.n_planned,
            n_failed=method.n_failed,
            below_coverage=method.method_id not in ranked_ids,
            vs_best=None if best is None or method is best else _paired(values, scored[best.method_id], common, seed),
            is_reference=method is best,
        ))
    return rows, None if best is None else best.method_id, len(common)


def _paired(ours: dict[UnitKey, float], theirs: dict[UnitKey, float], common: set[UnitKey],
            seed: int) -> PairedComparison:
    units = sorted(set(ours) & set(theirs) & common)
    return paired_test([ours[u] for u in units], [theirs[u] for u in units], seed=seed)


def default_score(methods: Sequence[MethodOutcomes]) -> ScoreKey:
    """The headline score of the first method that has one (the simulation's ev_correlation by default)."""
    headline = next((m.headline for m in methods if m.headline), None)
    return ScoreKey(headline or "ev_correlation")


def build_leaderboard(run_dirs: Sequence[str | Path], seed: int = 0, *, score: str | ScoreKey | None = None,
                      min_coverage: float = DEFAULT_MIN_COVERAGE) -> Leaderboard:
    """Rank every method found in `run_dirs` that computed `score` (shards of one config merge; see
    `collection.load_runs`)."""
    if not 0.0 <= min_coverage <= 1.0:
        raise ConfigError(f"the coverage threshold must be in [0, 1], got {min_coverage}")
    collection = load_runs(run_dirs)
    key = ScoreKey.parse(score) if isinstance(score, str) else (score or default_score(collection.methods))
    having = [m for m in collection.methods if key.name in m.score_names()]
    if key.variant is None:  # name the variant ranked by, so the table says what it shows
        variants = dict.fromkeys(v for m in having for v in m.score_names()[key.name])
        key = ScoreKey(key.name, primary_variant(variants))
    notes = list(collection.notes)
    if collection.uses_embedded_model:
        notes.insert(0, EMBEDDED_MODEL_WARNING)
    left_out = [m.method_id for m in collection.methods if m not in having and m.n_ok]
    if left_out:
        notes.append(f"not ranked: {', '.join(left_out)} (no {key.name!r} score; rank them with --score NAME)")
    if not having and collection.methods:
        known = sorted({n for m in collection.methods for n in m.score_names()})
        raise ConfigError(f"no method of {', '.join(map(str, run_dirs))} has a score {key.name!r}; "
                          f"scores found: {', '.join(known) or '(none)'}")
    repeated = {1 + len(m.repeats) for m in having if m.repeats}
    if repeated:
        notes.append(f"scores are each unit's mean over {', '.join(map(str, sorted(repeated)))} repeats with other "
                     "sampling seeds; their intervals include that run-to-run noise (two-stage bootstrap)")
    rows, best, n_common = rank_methods(having, key, min_coverage=min_coverage, seed=seed)
    if len({row.n_planned for row in rows}) > 1:
        notes.append("methods were planned on different numbers of units; the ranking uses the common units")
    return Leaderboard(rows=tuple(rows), best=best, score=key, n_common=n_common, min_coverage=min_coverage,
                       runs=tuple(str(p) for p in collection.run_dirs), models=tuple(collection.models),
                       notes=tuple(notes), grid=build_grid(collection.methods, seed=seed))
