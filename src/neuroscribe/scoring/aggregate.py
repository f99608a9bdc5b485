"""From per-excerpt simulations to the scores of an explanation.

The paper's headline is pooled: one correlation over every token of every scored excerpt, not the
mean of per-excerpt correlations (those are undefined on excerpts where the unit never fires and
over-weight short excerpts). Per-excerpt scores are kept alongside, as in the published files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from neuroscribe.errors import DataError
from neuroscribe.records import ActivationRecord
from neuroscribe.results import ScoredSequenceSimulation, ScoredSimulation, SequenceSimulation
from neuroscribe.scoring.metrics import METRICS, FloatArray, Score

SimulationPair = tuple[SequenceSimulation, Sequence[float]]
"""A simulation of one excerpt and the excerpt's true activations."""

VARIANTS = ("top_and_random", "top_only", "random_only")
"""Which scoring excerpts are pooled: the paper reports top-and-random and random-only."""


def _checked_arrays(pairs: Sequence[SimulationPair]) -> list[tuple[FloatArray, FloatArray]]:
    scales = {simulation.activation_scale for simulation, _ in pairs}
    if len(scales) > 1:
        raise DataError(
            f"cannot pool simulations on different activation scales ({', '.join(sorted(scales))}); "
            "calibrate all of them or none"
        )
    arrays = []
    for i, (simulation, true) in enumerate(pairs):
        predicted = np.asarray(simulation.expected_activations, dtype=np.float64)
        truth = np.asarray(true, dtype=np.float64)
        if predicted.shape != truth.shape:
            raise DataError(
                f"excerpt {i}: the simulation predicts {predicted.size} activations but the excerpt has "
                f"{truth.size} true activations; simulate the same tokens that are scored"
            )
        arrays.append((truth, predicted))
    return arrays


def _published_scores(truth: FloatArray, predicted: FloatArray) -> dict[str, float | None]:
    """The scores the published result format has fields for, by field name."""
    out: dict[str, float | None] = {}
    for name in METRICS:
        metric = METRICS.get(name)()
        if metric.result_field is not None:
            out[metric.result_field] = metric(truth, predicted).value
    return out


def _concatenate(arrays: Sequence[tuple[FloatArray, FloatArray]]) -> tuple[FloatArray, FloatArray]:
    if not arrays:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty
    return np.concatenate([t for t, _ in arrays]), np.concatenate([p for _, p in arrays])


def score_sequences(pairs: Sequence[SimulationPair]) -> ScoredSimulation:
    """Per-excerpt scores plus the pooled scores over all excerpts (the published shape)."""
    arrays = _checked_arrays(pairs)
    scored = [
        ScoredSequenceSimulation(simulation=simulation, true_activations=[float(x) for x in truth],
                                 **_published_scores(truth, predicted))
        for (simulation, _), (truth, predicted) in zip(pairs, arrays, strict=True)
    ]
    return ScoredSimulation(scored_sequence_simulations=scored, **_published_scores(*_concatenate(arrays)))


def pooled_scores(pairs: Sequence[SimulationPair], metrics: Iterable[str] | None = None) -> dict[str, Score]:
    """Pooled scores by metric name, each with the reason when undefined (all registered by default)."""
    truth, predicted = _concatenate(_checked_arrays(pairs))
    names = list(METRICS) if metrics is None else list(metrics)
    return {name: METRICS.get(name)()(truth, predicted) for name in names}


def score_variants(top: Sequence[SimulationPair], random: Sequence[SimulationPair]) -> dict[str, ScoredSimulation]:
    """The three pooled variants: keys 'top_and_random', 'top_only', 'random_only'."""
    return {
        "top_and_random": score_sequences([*top, *random]),
        "top_only": score_sequences(top),
        "random_only": score_sequences(random),
    }


def pair_with_records(simulations: Sequence[SequenceSimulation],
                      records: Sequence[ActivationRecord]) -> list[SimulationPair]:
    """Match simulations to the records they simulate, checking they cover the same tokens."""
    if len(simulations) != len(records):
        raise DataError(f"{len(simulations)} simulations for {len(records)} scoring records; expected one each")
    for i, (simulation, record) in enumerate(zip(simulations, records, strict=True)):
        if simulation.tokens and list(simulation.tokens) != list(record.tokens):
            raise DataError(f"excerpt {i}: the simulation's tokens differ from the record's tokens")
        bad = next((j for j, a in enumerate(record.activations) if not math.isfinite(a)), None)
        if bad is not None:  # published files write NaN as null; a score over it would be NaN, not a number
            raise DataError(f"excerpt {i}: the true activation at token {bad} ({record.tokens[bad]!r}) is "
                            f"{record.activations[bad]}, so no score can use this excerpt")
    return [(simulation, record.activations) for simulation, record in zip(simulations, records, strict=True)]
