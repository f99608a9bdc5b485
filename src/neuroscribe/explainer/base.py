"""The explainer interface: what a unit did in, candidate explanations out.

An explainer declares the evidence it needs (`evidence`); the runner builds exactly that for each
unit, from the explaining (train) split only, and refuses, when the config is loaded, an explainer
whose evidence the configured unit kind cannot provide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from neuroscribe.errors import NeuroscribeError
from neuroscribe.llm.base import Backend, CallEstimate, Usage
from neuroscribe.records import ActivationRecord, Evidence, TokenPairRecord, UnitId
from neuroscribe.results import TokenLookupTableSummaryOfNeuron, WeightBasedSummaryOfNeuron


@dataclass(frozen=True, kw_only=True)
class ExplainerInput:
    """What an explainer may look at for one unit (the training split, never the scoring split).

    Only the fields for the evidence the explainer declared are filled in.
    """

    unit: UnitId
    records: list[ActivationRecord] = field(default_factory=list)
    max_activation: float = 0.0
    """Scale for 0-10 normalization; usually the max over the unit's top records."""
    lookup_table: TokenLookupTableSummaryOfNeuron | None = None
    token_pair_records: list[TokenPairRecord] = field(default_factory=list)
    weight_summary: WeightBasedSummaryOfNeuron | None = None
    other_units_records: Mapping[UnitId, list[ActivationRecord]] = field(default_factory=dict)
    """Top excerpts of other units of the run, by unit."""


@dataclass(frozen=True, kw_only=True)
class ExplainerOutput:
    """Candidate explanations, plus why any requested candidate could not be produced."""

    explanations: list[str]
    failures: list[NeuroscribeError] = field(default_factory=list)
    """One error per candidate that failed: the backend's `BackendError`, a `ParseError` with the raw
    answer, or a `DataError` (e.g. a prompt that cannot fit), so callers can tell them apart."""
    notes: list[str] = field(default_factory=list)
    """What was changed to fit the prompt (e.g. 'dropped 2 of 5 excerpts to fit 2048 tokens')."""
    usage: Usage = field(default_factory=Usage)


class Explainer(Protocol):
    """An explainer; its class is registered in `neuroscribe.explainer.EXPLAINERS`.

    The class is built as `cls(backend, options)` with `options` an instance of `options_type`,
    checked when the config is loaded.
    """

    options_type: ClassVar[type[Any]]
    """The frozen options dataclass that config options are checked against."""
    evidence: ClassVar[frozenset[Evidence]]
    """What the runner must supply in `ExplainerInput`."""

    def __init__(self, backend: Backend, options: Any) -> None: ...

    @classmethod
    def estimate(cls, options: Any, n_excerpts: int, excerpt_tokens: int) -> CallEstimate:
        """Calls and tokens for one unit, shown `n_excerpts` excerpts of `excerpt_tokens` tokens each."""
        ...

    async def explain(self, inputs: ExplainerInput) -> ExplainerOutput: ...
