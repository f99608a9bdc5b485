"""The scorer interface: one explanation of one unit, judged against held-out evidence.

A scorer hides the truth from whatever model it asks, computes its numbers with the pure metrics of
`neuroscribe.scoring`, and returns named scores, each with its variants (which excerpts were pooled:
'top_and_random', 'top_only', 'random_only', per quantile where it applies), plus the per-example
predictions behind them, in a result record the run store writes as one JSONL line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from neuroscribe.llm.base import Backend, CallEstimate
from neuroscribe.records import ActivationRecord, Evidence, ScoringSet, UnitId
from neuroscribe.results import (
    ResultRecord,
    TokenLookupTableSummaryOfNeuron,
    WeightBasedSummaryOfNeuron,
)
from neuroscribe.scoring import Score

ScoreTable = Mapping[str, Mapping[str, float | None]]
"""Score name -> variant -> value (None where the score is undefined, never a silent 0)."""
ReasonTable = Mapping[str, Mapping[str, str]]
"""Score name -> variant -> why that score is undefined (only for the undefined ones)."""


MetricTable = Mapping[str, Mapping[str, Score | float | None]]
"""What a scorer computes before it is written: metric results (`Score`s keep their reasons), numbers or None."""


def split_scores(table: MetricTable) -> tuple[ScoreTable, ReasonTable]:
    """A table of metric results (`Score`s, plain numbers, or None) as values, and the reasons of those
    that are undefined, so an undefined score is never written without its why."""
    values: dict[str, dict[str, float | None]] = {}
    reasons: dict[str, dict[str, str]] = {}
    for name, variants in table.items():
        for variant, entry in variants.items():
            value = entry.value if isinstance(entry, Score) else entry
            values.setdefault(name, {})[variant] = value
            if value is None:
                why = entry.reason if isinstance(entry, Score) and entry.reason else "undefined"
                reasons.setdefault(name, {})[variant] = why
    return values, reasons

PRIMARY_VARIANTS = ("top_and_random", "all")
"""The variants that summarize a score: the paper's top-and-random pooling, or 'all' for scorers whose
examples are not cut into top and random (detection, fuzzing, intruder)."""


def primary_variant(variants: Iterable[str]) -> str | None:
    """The variant a score is summarized by when none is named (the first of PRIMARY_VARIANTS it has, else
    its first variant)."""
    found = list(variants)
    return next((v for v in PRIMARY_VARIANTS if v in found), found[0] if found else None)


def _empty() -> ScoringSet:
    return ScoringSet(top=[], random=[])


@dataclass(frozen=True, kw_only=True)
class ScorerInput:
    """What a scorer may use for one unit: the explanation and held-out evidence (never the explaining
    split). Only the fields for the evidence the scorer declared are filled in."""

    unit: UnitId
    explanation: str
    scoring: ScoringSet = field(default_factory=_empty)
    """The scored split's top and random excerpts (activation records)."""
    calibration: ScoringSet = field(default_factory=_empty)
    """The calibration split (activation records), disjoint from `scoring` by split position."""
    random_pool: list[ActivationRecord] = field(default_factory=list)
    """With activation records: every excerpt of the unit's random sample that the explainer was not shown
    (candidates for non-activating examples; excerpts that equal a shown one are left out)."""
    max_activation: float = 0.0
    """With activation records: the unit's largest activation over its top excerpts (the 0-10 scale's 10)."""
    quantiles: list[list[ActivationRecord]] = field(default_factory=list)
    """Excerpts sampled within each activation quantile, lowest quantile first (quantile records)."""
    quantile_boundaries: list[float | None] = field(default_factory=list)
    """The activation boundaries of those quantiles, as the record gives them (None: open-ended)."""
    token_pair_scoring: ScoringSet = field(default_factory=_empty)
    """The scored split as token-pair records (attention heads)."""
    lookup_table: TokenLookupTableSummaryOfNeuron | None = None
    weight_summary: WeightBasedSummaryOfNeuron | None = None
    other_units_records: Mapping[UnitId, list[ActivationRecord]] = field(default_factory=dict)
    """Top excerpts of other units of the run, by unit."""
    seed: int = 0
    """The run's seed, for any random choice the scorer makes (shuffles, draws)."""


@dataclass(frozen=True, kw_only=True)
class ScorerOutput:
    scores: ScoreTable
    headline: str
    """The score in `scores` that summarizes this scorer (what the leaderboard ranks by default)."""
    result: ResultRecord
    """Written to the method's results file; holds the per-example predictions."""
    calibrated: bool = False
    """Whether predictions were mapped onto the unit's scale before scoring."""
    reasons: ReasonTable = field(default_factory=dict)
    """Why each undefined score in `scores` is undefined (e.g. 'constant prediction')."""


@dataclass(frozen=True, kw_only=True)
class ScoringShape:
    """The size of one unit's held-out evidence, for cost estimates."""

    n_scoring: int
    """Excerpts in the scored split (top + random)."""
    n_calibration: int
    excerpt_tokens: int


class Scorer(Protocol):
    """A scorer; its class is registered in `neuroscribe.scorers.SCORERS`.

    The class is built as `cls(backend, options)` with `options` an instance of `options_type`,
    checked when the config is loaded. `score` raises a `NeuroscribeError` (a `StageError` to name
    the stage) when no score can be given: a failure is never a score.
    """

    options_type: ClassVar[type[Any]]
    evidence: ClassVar[frozenset[Evidence]]
    needs_explanation: ClassVar[bool]
    """False for a scorer that judges the unit itself (e.g. an intruder check): it runs once per unit, as a
    method named by its label, and `ScorerInput.explanation` is empty."""

    def __init__(self, backend: Backend, options: Any) -> None: ...

    @classmethod
    def estimate(cls, options: Any, shape: ScoringShape) -> CallEstimate: ...

    async def score(self, inputs: ScorerInput) -> ScorerOutput: ...
