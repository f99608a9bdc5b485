"""How well simulated activations match true ones: pure functions of two equal-length vectors.

Every metric returns a `Score`: a value, or `None` with the reason it is undefined (constant or
all-zero truth, constant prediction, nothing to score). An undefined score is never a silent 0 or a
NaN that would poison a mean later.

Formulas (t = true activations, p = predicted, pooled over every scored token):
- `correlation`: Pearson r(t, p), the paper's headline "ev_correlation_score".
- `rsquared_score`: 1 - mean((t - p)^2) / mean(t^2), the reference's r-squared-style score (the
  baseline is predicting 0, not the mean, so it is not the textbook R^2).
- `absolute_dev_explained_score`: 1 - mean(|t - p|) / mean(|t|), as in the reference.
- `coefficient_of_determination`: 1 - sum((t - p)^2) / sum((t - mean(t))^2), the textbook R^2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from neuroscribe.errors import DataError
from neuroscribe.registry import Registry

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Score:
    """A metric's value, or None with the reason it is undefined."""

    value: float | None
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.value is not None


def _undefined(reason: str) -> Score:
    return Score(None, reason)


def _as_pair(true: Sequence[float] | FloatArray, predicted: Sequence[float] | FloatArray
             ) -> tuple[FloatArray, FloatArray] | Score:
    """Validated float arrays, or the Score that says why there is nothing to compute."""
    t = np.asarray(true, dtype=np.float64).ravel()
    p = np.asarray(predicted, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise DataError(f"cannot score: {t.size} true activations but {p.size} predicted ones")
    if t.size == 0:
        return _undefined("no activations to score")
    if not np.isfinite(t).all():
        return _undefined(f"true activations contain {int((~np.isfinite(t)).sum())} non-finite values")
    if not np.isfinite(p).all():
        return _undefined(f"predicted activations contain {int((~np.isfinite(p)).sum())} non-finite values")
    return t, p


def correlation(true: Sequence[float] | FloatArray, predicted: Sequence[float] | FloatArray) -> Score:
    """Pearson correlation; undefined when either side is constant (it has no variance to explain)."""
    pair = _as_pair(true, predicted)
    if isinstance(pair, Score):
        return pair
    t, p = pair
    if np.ptp(t) == 0:
        return _undefined(f"true activations are constant ({t[0]:g}) over {t.size} tokens")
    if np.ptp(p) == 0:
        return _undefined(f"predicted activations are constant ({p[0]:g}) over {p.size} tokens")
    tc = t - t.mean()
    pc = p - p.mean()
    denominator = float(np.sqrt(np.dot(tc, tc) * np.dot(pc, pc)))
    if denominator == 0.0:  # variance below float resolution
        return _undefined("activations vary too little to correlate (variance underflows)")
    return Score(float(np.clip(np.dot(tc, pc) / denominator, -1.0, 1.0)))


def _fraction_explained(true: Sequence[float] | FloatArray, predicted: Sequence[float] | FloatArray,
                        deviation: Callable[[FloatArray], FloatArray], *, around_mean: bool,
                        undefined_reason: str) -> Score:
    """1 - mean(deviation(t - p)) / mean(deviation(t - c)), with c = mean(t) or 0: the share of the
    baseline's error that the prediction removes."""
    pair = _as_pair(true, predicted)
    if isinstance(pair, Score):
        return pair
    t, p = pair
    if around_mean and np.ptp(t) == 0:
        return _undefined(undefined_reason)
    baseline = float(np.mean(deviation(t - t.mean() if around_mean else t)))
    if baseline == 0.0:
        return _undefined(undefined_reason)
    return Score(1.0 - float(np.mean(deviation(t - p))) / baseline)


def rsquared_score(true: Sequence[float] | FloatArray, predicted: Sequence[float] | FloatArray) -> Score:
    """1 - mean((t - p)^2) / mean(t^2) (the reference's score; its baseline predicts all zeros)."""
    return _fraction_explained(true, predicted, np.square, around_mean=False,
                               undefined_reason="true activations are all zero, so there is nothing to explain")


def absolute_dev_explained_score(true: Sequence[float] | FloatArray,
                                 predicted: Sequence[float] | FloatArray) -> Score:
    """1 - mean(|t - p|) / mean(|t|) (the reference's score)."""
    return _fraction_explained(true, predicted, np.abs, around_mean=False,
                               undefined_reason="true activations are all zero, so there is nothing to explain")


def coefficient_of_determination(true: Sequence[float] | FloatArray,
                                 predicted: Sequence[float] | FloatArray) -> Score:
    """Textbook R^2 = 1 - SS_res / SS_tot; negative when worse than predicting the true mean."""
    return _fraction_explained(true, predicted, np.square, around_mean=True,
                               undefined_reason="true activations are constant, so R^2 is undefined")


# --- the registry -------------------------------------------------------------------------------


class Metric(Protocol):
    """A pure, synchronous metric of true vs predicted activations (callers pool over excerpts)."""

    result_field: ClassVar[str | None]
    """The `ScoredSimulation` field it fills in published results, or None if the format has none."""

    def __call__(self, true: FloatArray, predicted: FloatArray) -> Score: ...


METRICS: Registry[Metric] = Registry("metric")


@METRICS.register("ev_correlation")
class CorrelationMetric:
    """Pearson correlation: the paper's headline score."""

    result_field: ClassVar[str | None] = "ev_correlation_score"

    def __call__(self, true: FloatArray, predicted: FloatArray) -> Score:
        return correlation(true, predicted)


@METRICS.register("rsquared")
class RSquaredMetric:
    """The reference's r-squared-style score (baseline: predicting zeros)."""

    result_field: ClassVar[str | None] = "rsquared_score"

    def __call__(self, true: FloatArray, predicted: FloatArray) -> Score:
        return rsquared_score(true, predicted)


@METRICS.register("absolute_dev_explained")
class AbsoluteDevExplainedMetric:
    """Fraction of the mean absolute activation explained."""

    result_field: ClassVar[str | None] = "absolute_dev_explained_score"

    def __call__(self, true: FloatArray, predicted: FloatArray) -> Score:
        return absolute_dev_explained_score(true, predicted)


@METRICS.register("coefficient_of_determination")
class CoefficientOfDeterminationMetric:
    """Textbook R^2 (the published result format has no field for it)."""

    result_field: ClassVar[str | None] = None

    def __call__(self, true: FloatArray, predicted: FloatArray) -> Score:
        return coefficient_of_determination(true, predicted)
