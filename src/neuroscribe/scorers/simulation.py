"""The paper's scoring: simulate every scored excerpt from the explanation, then correlate with the truth.

Simulator (from `neuroscribe.simulator`), optional calibration on the calibration split, then the
reference's scores pooled over the scored excerpts, per variant. Its result line is the published
`NeuronSimulationResults` (the top-and-random pooling, as the reference writes it).
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from neuroscribe.errors import ConfigError, DataError, NeuroscribeError, StageError
from neuroscribe.llm.base import Backend, CallEstimate
from neuroscribe.records import Evidence, NeuronId
from neuroscribe.registry import registered_options
from neuroscribe.results import NeuronSimulationResults, ScoredExplanation, SequenceSimulation
from neuroscribe.scorers.base import ScorerInput, ScorerOutput, ScoringShape, split_scores
from neuroscribe.scoring import VARIANTS, Score, SimulationPair, pair_with_records, pooled_scores, score_variants
from neuroscribe.simulator import SIMULATORS, calibrate, create_simulator
from neuroscribe.simulator.calibration import CALIBRATION_METHODS, CalibratedSimulator, LinearMap

HEADLINE = "ev_correlation"
UNCALIBRATED = "uncalibrated_"
"""Prefix of each score computed before calibration (written only when the scorer calibrates)."""
CALIBRATION_SLOPE = "calibration_slope"
"""The fitted slope of linear calibration: negative means an anti-correlated explanation was flipped."""
SCALE_FREE_METRICS = (HEADLINE,)
"""The only scores of an ordinal-scale simulator's values before calibration (see
`neuroscribe.simulator.RegisteredSimulator.ordinal_scale`): the scale-dependent ones are left out."""
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class SimulationOptions:
    simulator: str = "all_at_once"
    """Registry name of the simulator: 'all_at_once', 'one_at_a_time', 'json', 'generated_logprobs', 'lexical',
    'embedding' or a plugin's."""
    simulator_options: Mapping[str, object] = field(default_factory=dict)
    """The simulator's own options (checked against its options dataclass)."""
    calibration: str = "none"
    """Map predictions onto the unit's activation scale first: 'none', 'linear' or 'percentile'."""

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            close = difflib.get_close_matches(self.calibration, CALIBRATION_METHODS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"calibration {self.calibration!r} is not one of {', '.join(CALIBRATION_METHODS)}."
                              f"{hint}")
        registered_options(SIMULATORS, self.simulator, self.simulator_options)


class SimulationScorer:
    """Simulator + calibration + the reference's scores (ev-correlation, r-squared, abs-dev, R^2)."""

    options_type: ClassVar[type[Any]] = SimulationOptions
    evidence: ClassVar[frozenset[Evidence]] = frozenset({Evidence.ACTIVATION_RECORDS})
    needs_explanation: ClassVar[bool] = True

    def __init__(self, backend: Backend, options: SimulationOptions) -> None:
        self.options = options
        self.simulator = create_simulator(options.simulator, backend, options.simulator_options)
        self.uncalibrated_metrics = SCALE_FREE_METRICS if SIMULATORS.get(options.simulator).ordinal_scale else None

    @classmethod
    def estimate(cls, options: Any, shape: ScoringShape) -> CallEstimate:
        simulator = SIMULATORS.get(options.simulator)
        per_excerpt = simulator.estimate(registered_options(SIMULATORS, options.simulator, options.simulator_options),
                                         shape.excerpt_tokens)
        calibrating = shape.n_calibration if options.calibration != "none" else 0
        return per_excerpt * (shape.n_scoring + calibrating)

    async def score(self, inputs: ScorerInput) -> ScorerOutput:
        top, rand = inputs.scoring.top, inputs.scoring.random
        if not top and not rand:
            raise StageError("records", DataError(f"{inputs.unit}: no excerpts left to score (disjoint splits "
                                                  "dropped them)"))
        fitted: CalibratedSimulator | None = None
        if self.options.calibration != "none":
            calibrated_simulator = await _at("calibrate", calibrate(
                self.simulator, self.options.calibration, inputs.explanation, inputs.calibration.all))
            assert isinstance(calibrated_simulator, CalibratedSimulator)
            fitted = calibrated_simulator
        uncalibrated: list[SequenceSimulation] = list(await _at("simulate", asyncio.gather(
            *(self.simulator.simulate(inputs.explanation, r.tokens) for r in [*top, *rand]))))
        simulations = uncalibrated if fitted is None else [fitted.apply(s) for s in uncalibrated]
        try:
            top_pairs = pair_with_records(simulations[: len(top)], top)
            random_pairs = pair_with_records(simulations[len(top):], rand)
            variants = score_variants(top_pairs, random_pairs)
            scores = _score_table({"top_and_random": [*top_pairs, *random_pairs], "top_only": top_pairs,
                                   "random_only": random_pairs}, self.uncalibrated_metrics if fitted is None else None)
            if fitted is not None:  # the scores before calibration, and the fitted slope, beside the calibrated
                raw_top = pair_with_records(uncalibrated[: len(top)], top)
                raw_random = pair_with_records(uncalibrated[len(top):], rand)
                raw = _score_table({"top_and_random": [*raw_top, *raw_random], "top_only": raw_top,
                                    "random_only": raw_random}, self.uncalibrated_metrics)
                scores.update({f"{UNCALIBRATED}{name}": values for name, values in raw.items()})
                if isinstance(fitted.value_map, LinearMap):
                    scores[CALIBRATION_SLOPE] = {"all": Score(fitted.value_map.slope)}
        except NeuroscribeError as error:
            raise StageError("score", error) from error
        result = NeuronSimulationResults(
            neuron_id=NeuronId.from_unit(inputs.unit),
            scored_explanations=[ScoredExplanation(explanation=inputs.explanation,
                                                   scored_simulation=variants["top_and_random"])],
        )
        values, reasons = split_scores(scores)
        return ScorerOutput(scores=values, headline=HEADLINE, result=result, calibrated=fitted is not None,
                            reasons=reasons)


def _score_table(pairs_by_variant: Mapping[str, Sequence[SimulationPair]],
                 metrics: Sequence[str] | None = None) -> dict[str, dict[str, Score]]:
    table: dict[str, dict[str, Score]] = {}
    for variant in VARIANTS:
        for metric, score in pooled_scores(pairs_by_variant[variant], metrics).items():
            table.setdefault(metric, {})[variant] = score
    return table


async def _at(stage: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except NeuroscribeError as error:
        raise StageError(stage, error) from error
