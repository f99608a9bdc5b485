"""Synthetic results and outcomes for experiment tests (no models)."""

from __future__ import annotations

from neuroscribe.experiments.store import UnitOutcome
from neuroscribe.records import NeuronId, UnitId
from neuroscribe.results import (
    ActivationScale,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
)


def make_result(unit: UnitId, explanation: str, score: float | None) -> NeuronSimulationResults:
    simulation = SequenceSimulation(tokens=["a", "b"], expected_activations=[0.0, 1.0],
                                    activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS)
    scored = ScoredSimulation(
        scored_sequence_simulations=[ScoredSequenceSimulation(simulation=simulation, true_activations=[0.0, 2.0],
                                                              ev_correlation_score=score)],
        ev_correlation_score=score,
    )
    return NeuronSimulationResults(neuron_id=NeuronId.from_unit(unit),
                                   scored_explanations=[ScoredExplanation(explanation=explanation,
                                                                          scored_simulation=scored)])


def ok_outcome(unit: UnitId, score: float | None, random_only: float | None = None) -> UnitOutcome:
    scores = {"top_and_random": score, "top_only": score, "random_only": random_only}
    return UnitOutcome(unit=unit, status="ok", explanation=f"explanation of {unit}", scores=scores,
                       named_scores={"ev_correlation": scores}, headline="ev_correlation")
