"""Attention-head scoring, as the reference scores attention-head explanations: the token-pair simulator
predicts, for strong and weak (query, key) pairs of the scored split, whether the explained head links
them strongly, and the score is the ROC AUC of those predictions against the labels.

Strong pairs (label 1) are each scored top excerpt's strongest pairs; weak pairs (label 0) are drawn with
the unit's seed from the pairs of every scored excerpt, top and random, that stay below `weak_threshold`
of the unit's max activation. Weak pairs of top excerpts make the simulator tell pairs apart within an
excerpt, not only excerpts apart. The result line is the published `AttentionSimulationResults`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neuroscribe.errors import ConfigError, DataError, NeuroscribeError, ParseError, StageError
from neuroscribe.llm.base import Backend, CallEstimate
from neuroscribe.records import Evidence, NeuronId, TokenPairRecord
from neuroscribe.results import (
    AttentionSimulation,
    AttentionSimulationResults,
    ScoredAttentionExplanation,
    ScoredAttentionSimulation,
)
from neuroscribe.scorers.base import ScorerInput, ScorerOutput, ScoringShape
from neuroscribe.scorers.examples import require_positive, unit_rng
from neuroscribe.scorers.judging import ALL, require_explanation
from neuroscribe.scoring import roc_auc
from neuroscribe.simulator.token_pair import Pair, TokenPairSimulator, TokenPairSimulatorOptions

log = logging.getLogger(__name__)

HEADLINE = "roc_auc"
STRONG_PAIRS, WEAK_PAIRS = "strong_pairs", "weak_pairs"


@dataclass(frozen=True, kw_only=True)
class AttentionSimulationOptions(TokenPairSimulatorOptions):
    strong_per_excerpt: int = 1
    """Strongest pairs of each scored top excerpt asked about (label 1)."""
    n_weak: int = 5
    """Weak pairs asked about (label 0), drawn with the unit's seed from every scored excerpt."""
    weak_threshold: float = 0.1
    """A pair is weak below this fraction of the unit's max activation (the reference's 0.1); a strong pair
    must reach it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "strong_per_excerpt", "n_weak")
        if not 0.0 < self.weak_threshold <= 1.0:
            raise ConfigError(f"weak_threshold must be in (0, 1], got {self.weak_threshold}")


@dataclass(frozen=True)
class AskedPair:
    record: TokenPairRecord
    pair: Pair
    label: int


def strong_pairs(records: list[TokenPairRecord], per_excerpt: int, floor: float) -> list[AskedPair]:
    """Each record's `per_excerpt` strongest pairs that reach `floor`."""
    return [AskedPair(r, (q, k), 1) for r in records for q, k, value in r.top_pairs(per_excerpt) if value >= floor]


def weak_pairs(records: list[TokenPairRecord], n: int, ceiling: float, rng: np.random.Generator) -> list[AskedPair]:
    """`n` pairs below `ceiling`, drawn without replacement from every pair of `records`."""
    candidates = [(i, q, k) for i, r in enumerate(records) for q in range(len(r.tokens)) for k in range(q + 1)
                  if r.activation(q, k) < ceiling]
    if len(candidates) < n:
        raise DataError(f"the scored excerpts have {len(candidates)} pairs below {ceiling:.4g}, {n} weak pairs were "
                        "asked for; lower n_weak or raise weak_threshold")
    chosen = rng.choice(len(candidates), size=n, replace=False)
    return [AskedPair(records[i], (q, k), 0) for i, q, k in (candidates[c] for c in sorted(chosen))]


class AttentionSimulationScorer:
    """Token-pair simulation of an attention head; scores `roc_auc` (headline), `p_strong` (the mean predicted
    P(strong) over the strong and the weak pairs) and `unparsed_pairs` (answers that could not be read)."""

    options_type: ClassVar[type[Any]] = AttentionSimulationOptions
    evidence: ClassVar[frozenset[Evidence]] = frozenset({Evidence.TOKEN_PAIR_RECORDS})
    needs_explanation: ClassVar[bool] = True

    def __init__(self, backend: Backend, options: AttentionSimulationOptions) -> None:
        self.options = options
        self.simulator = TokenPairSimulator(backend, options)

    @classmethod
    def estimate(cls, options: Any, shape: ScoringShape) -> CallEstimate:
        n_pairs: int = shape.n_scoring // 2 * options.strong_per_excerpt + options.n_weak
        per_pair: CallEstimate = TokenPairSimulator.estimate(options, shape.excerpt_tokens)
        return per_pair * n_pairs

    def draw(self, inputs: ScorerInput) -> list[AskedPair]:
        """The strong pairs, then the weak ones; a unit short of either fails at stage 'records'."""
        scored = inputs.token_pair_scoring
        top = [r for r in scored.top if isinstance(r, TokenPairRecord)]
        every = [r for r in scored.all if isinstance(r, TokenPairRecord)]
        threshold = self.options.weak_threshold * inputs.max_activation
        try:
            if not inputs.max_activation > 0:
                raise DataError(f"{inputs.unit}: no pair of the top excerpts activates above 0; nothing to score")
            strong = strong_pairs(top, self.options.strong_per_excerpt, threshold)
            if not strong:
                raise DataError(f"{inputs.unit}: no pair of the {len(top)} scored top excerpts reaches {threshold:.4g} "
                                f"(weak_threshold x max activation)")
            weak = weak_pairs(every, self.options.n_weak, threshold, unit_rng(inputs, "attention_simulation"))
        except DataError as error:
            raise StageError("records", error) from error
        return [*strong, *weak]

    async def _predict(self, explanation: str, asked: AskedPair) -> float | ParseError:
        try:
            return await self.simulator.simulate(explanation, asked.record.tokens, asked.pair)
        except ParseError as error:
            log.warning("unreadable answer for pair %s, left out: %s", asked.pair, error)
            return error

    async def score(self, inputs: ScorerInput) -> ScorerOutput:
        require_explanation(inputs)
        asked = self.draw(inputs)
        try:
            answers = await asyncio.gather(*(self._predict(inputs.explanation, a) for a in asked))
        except NeuroscribeError as error:  # the backend failed, or a prompt cannot fit
            raise StageError("simulate", error) from error
        read = [(a, p) for a, p in zip(asked, answers, strict=True) if isinstance(p, float)]
        if not read:
            first = next(p for p in answers if isinstance(p, ParseError))
            raise StageError("parse", first)
        labels, predictions = [a.label for a, _ in read], [p for _, p in read]
        auc = roc_auc(labels, predictions).value
        strong = [p for a, p in read if a.label == 1]
        weak = [p for a, p in read if a.label == 0]
        scores: dict[str, dict[str, float | None]] = {
            HEADLINE: {ALL: auc},
            "p_strong": {STRONG_PAIRS: float(np.mean(strong)) if strong else None,
                         WEAK_PAIRS: float(np.mean(weak)) if weak else None},
            "unparsed_pairs": {ALL: float(len(asked) - len(read))},
        }
        simulations = [AttentionSimulation(tokens=list(a.record.tokens), token_pair_coords=a.pair,
                                           token_pair_label=a.label, simulation_prediction=p) for a, p in read]
        result = AttentionSimulationResults(
            attention_head_id=NeuronId.from_unit(inputs.unit),
            scored_explanations=[ScoredAttentionExplanation(
                explanation=inputs.explanation,
                scored_attention_simulation=ScoredAttentionSimulation(attention_simulations=simulations,
                                                                      roc_auc_score=auc))],
        )
        return ScorerOutput(scores=scores, headline=HEADLINE, result=result)
