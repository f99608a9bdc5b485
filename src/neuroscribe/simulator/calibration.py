"""Put a simulator's 0-10 predictions on the unit's true activation scale.

Correlation does not care about scale, but r-squared and absolute-deviation scores do; so a
calibration wrapper learns a monotone map from predictions to activations on a calibration split
(never the scoring split) and applies it to every later prediction.

- 'linear': least-squares line from predicted to true activations (the paper's choice).
- 'percentile': a prediction's quantile among the calibration predictions is mapped to the same
  quantile of the true activations (robust to a simulator's non-linear use of the scale).
- 'none': predictions stay on the simulator's scale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.records import ActivationRecord
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator.base import Simulator

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("linear", "percentile", "none")

ValueMap = Callable[[Sequence[float]], list[float]]


@dataclass(frozen=True)
class LinearMap:
    slope: float
    intercept: float

    def __call__(self, values: Sequence[float]) -> list[float]:
        return [self.slope * v + self.intercept for v in values]


@dataclass(frozen=True)
class PercentileMap:
    """Piecewise-linear through (each distinct calibration prediction, the true activation at its quantile)."""

    predicted: tuple[float, ...]
    true: tuple[float, ...]

    def __call__(self, values: Sequence[float]) -> list[float]:
        return [float(v) for v in np.interp(values, self.predicted, self.true)]


def fit_linear(predicted: Sequence[float], true: Sequence[float]) -> LinearMap:
    x, y = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    if np.ptp(x) == 0:
        log.warning("calibration: constant predictions; every prediction maps to the mean true activation")
        return LinearMap(0.0, float(y.mean()))
    slope, intercept = np.polyfit(x, y, 1)
    return LinearMap(float(slope), float(intercept))


def fit_percentile(predicted: Sequence[float], true: Sequence[float]) -> PercentileMap:
    x, y = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    order = np.argsort(x, kind="stable")
    quantiles = np.empty(len(x))
    quantiles[order] = np.arange(len(x)) / max(len(x) - 1, 1)
    distinct, inverse = np.unique(x, return_inverse=True)
    # tied predictions share the mean quantile of their ranks, so ties never get spread apart
    mean_quantile = np.bincount(inverse, weights=quantiles) / np.bincount(inverse)
    return PercentileMap(tuple(float(v) for v in distinct),
                         tuple(float(v) for v in np.quantile(y, mean_quantile)))


_FITTERS: dict[str, Callable[[Sequence[float], Sequence[float]], ValueMap]] = {
    "linear": fit_linear,
    "percentile": fit_percentile,
}


class CalibratedSimulator:
    """A simulator whose expected values (and distribution values) pass through a fitted map."""

    def __init__(self, inner: Simulator, value_map: ValueMap, method: str) -> None:
        self.inner = inner
        self.value_map = value_map
        self.method = method

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        return self.apply(await self.inner.simulate(explanation, tokens))

    def apply(self, simulation: SequenceSimulation) -> SequenceSimulation:
        """An uncalibrated simulation (from `inner`) put on the unit's scale; it keeps the original beside it
        (the reference format's `uncalibrated_simulation`), so the calibration can be checked or undone."""
        return SequenceSimulation(
            tokens=simulation.tokens,
            expected_activations=self.value_map(simulation.expected_activations),
            activation_scale=ActivationScale.NEURON_ACTIVATIONS,
            distribution_values=[self.value_map(row) for row in simulation.distribution_values],
            distribution_probabilities=simulation.distribution_probabilities,
            uncalibrated_simulation=simulation,
        )


async def calibrate(simulator: Simulator, method: str, explanation: str,
                    calibration_records: Sequence[ActivationRecord]) -> Simulator:
    """`simulator` wrapped to predict on the true scale, fitted on `calibration_records` for `explanation`.

    The fit is per explanation (a simulator reads each explanation differently). 'none' returns
    `simulator` itself.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    if method == "none":
        return simulator
    if not any(record.tokens for record in calibration_records):
        raise DataError(f"{method} calibration needs calibration records with tokens, got none")
    simulations = await asyncio.gather(*(simulator.simulate(explanation, r.tokens) for r in calibration_records))
    predicted = [v for simulation in simulations for v in simulation.expected_activations]
    true = [a for record in calibration_records for a in record.activations]
    if len(predicted) != len(true):
        raise DataError(f"calibration: the simulator returned {len(predicted)} values for {len(true)} tokens")
    return CalibratedSimulator(simulator, _FITTERS[method](predicted, true), method)
