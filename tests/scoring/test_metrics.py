"""Metric formulas, undefined cases and their invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from neuroscribe.errors import DataError
from neuroscribe.scoring import (
    METRICS,
    Score,
    absolute_dev_explained_score,
    coefficient_of_determination,
    correlation,
    rsquared_score,
)

TRUE = [0.0, 1.0, 3.0, 0.0, 2.0]
PRED = [1.0, 1.0, 2.0, 0.0, 4.0]


def test_correlation_matches_numpy() -> None:
    assert correlation(TRUE, PRED).value == pytest.approx(np.corrcoef(TRUE, PRED)[0, 1])


def test_reference_rsquared_uses_a_zero_baseline() -> None:
    # 1 - mean((t-p)^2) / mean(t^2) = 1 - (1 + 0 + 1 + 0 + 4)/5 / (14/5) = 1 - 6/14
    assert rsquared_score(TRUE, PRED).value == pytest.approx(1 - 6 / 14)


def test_absolute_dev_explained() -> None:
    # 1 - mean|t-p| / mean|t| = 1 - (1 + 0 + 1 + 0 + 2) / 6
    assert absolute_dev_explained_score(TRUE, PRED).value == pytest.approx(1 - 4 / 6)


def test_coefficient_of_determination_uses_the_mean_baseline() -> None:
    # SS_tot around mean 1.2: 1.44 + .04 + 3.24 + 1.44 + .64 = 6.8; SS_res = 6
    assert coefficient_of_determination(TRUE, PRED).value == pytest.approx(1 - 6 / 6.8)
    assert coefficient_of_determination(TRUE, [1.2] * 5).value == pytest.approx(0.0)


def test_perfect_prediction_scores_one_everywhere() -> None:
    for name in METRICS:
        assert METRICS.get(name)()(np.array(TRUE), np.array(TRUE)).value == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("metric", "true", "pred", "reason"),
    [
        (correlation, [1.0, 1.0, 1.0], [0.0, 1.0, 2.0], "true activations are constant"),
        (correlation, [0.0, 1.0, 2.0], [5.0, 5.0, 5.0], "predicted activations are constant"),
        (correlation, [], [], "no activations to score"),
        (correlation, [0.0, math.nan], [1.0, 2.0], "true activations contain 1 non-finite"),
        (correlation, [0.0, 1.0], [1.0, math.inf], "predicted activations contain 1 non-finite"),
        (rsquared_score, [0.0, 0.0], [1.0, 2.0], "all zero"),
        (absolute_dev_explained_score, [0.0, 0.0], [1.0, 2.0], "all zero"),
        (coefficient_of_determination, [2.0, 2.0], [1.0, 2.0], "constant"),
    ],
)
def test_undefined_cases_give_none_with_a_reason(metric: object, true: list[float], pred: list[float],
                                                 reason: str) -> None:
    assert callable(metric)
    score = metric(true, pred)
    assert isinstance(score, Score)
    assert score.value is None and not score.defined
    assert score.reason is not None and reason in score.reason


def test_reference_scores_stay_defined_for_constant_predictions() -> None:
    # Only correlation needs variance in the prediction; the deviation scores compare to a fixed baseline.
    assert rsquared_score([0.0, 2.0], [1.0, 1.0]).value == pytest.approx(1 - 1 / 2)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(DataError, match="3 true activations but 2 predicted"):
        correlation([1.0, 2.0, 3.0], [1.0, 2.0])


def test_registry_lists_every_metric() -> None:
    assert METRICS.names() == ["absolute_dev_explained", "coefficient_of_determination", "ev_correlation",
                               "rsquared"]


vectors = st.lists(st.floats(-100, 100, allow_nan=False), min_size=3, max_size=40)


@settings(max_examples=60, deadline=None)
@given(vectors, st.data(), st.floats(0.01, 100), st.floats(-100, 100))
def test_correlation_is_invariant_under_positive_affine_maps(true: list[float], data: st.DataObject, scale: float,
                                                             shift: float) -> None:
    pred = data.draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=len(true), max_size=len(true)))
    t, p = np.array(true), np.array(pred)
    assume(np.std(t) > 1e-3 and np.std(p) > 1e-3)
    base = correlation(t, p).value
    assert base is not None and -1.0 <= base <= 1.0
    assert correlation(t, scale * p + shift).value == pytest.approx(base, abs=1e-9)
    assert correlation(t, -scale * p + shift).value == pytest.approx(-base, abs=1e-9)
    assert correlation(p, t).value == pytest.approx(base, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(vectors)
def test_r2_of_the_mean_prediction_is_zero_and_never_exceeds_one(true: list[float]) -> None:
    t = np.array(true)
    assume(np.ptp(t) > 1e-3)
    assert coefficient_of_determination(t, np.full_like(t, t.mean())).value == pytest.approx(0.0, abs=1e-9)
    noisy = t + np.linspace(-1, 1, t.size)
    for metric in (coefficient_of_determination, rsquared_score, absolute_dev_explained_score):
        value = metric(t, noisy).value
        assert value is None or value <= 1.0 + 1e-12
