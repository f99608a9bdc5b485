"""Bootstrap intervals over units and the paired comparison used by the leaderboard."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroscribe.errors import ConfigError
from neuroscribe.scoring import (
    bootstrap_fraction_above,
    bootstrap_mean,
    bootstrap_mean_over_repeats,
    holm_adjusted,
    paired_test,
    spread_over_repeats,
    wilson_fraction,
)


def test_missing_values_are_counted_not_averaged() -> None:
    estimate = bootstrap_mean([0.2, None, 0.4, math.nan, 0.6])
    assert estimate.mean == pytest.approx(0.4)
    assert (estimate.n, estimate.n_missing) == (3, 2)
    assert estimate.coverage == pytest.approx(0.6)
    assert estimate.low is not None and estimate.high is not None
    assert 0.2 <= estimate.low <= 0.4 <= estimate.high <= 0.6


def test_wilson_fraction_matches_the_textbook_values_and_counts_undecided_as_missing() -> None:
    half = wilson_fraction([True] * 5 + [False] * 5)
    assert (half.mean, half.n, half.n_missing) == (0.5, 10, 0)
    assert half.low == pytest.approx(0.2366, abs=1e-4) and half.high == pytest.approx(0.7634, abs=1e-4)
    every = wilson_fraction([True] * 9 + [None, None])
    assert (every.mean, every.high, every.n, every.n_missing) == (1.0, 1.0, 9, 2)
    assert every.low == pytest.approx(0.7008, abs=1e-4)  # a bootstrap would say [1, 1]
    none = wilson_fraction([False] * 10)
    assert none.low == 0.0 and none.high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_fraction([None]).mean is None and wilson_fraction([None]).n_missing == 1
    with pytest.raises(ConfigError):
        wilson_fraction([True], confidence=1.0)


@given(st.integers(1, 500), st.data(), st.floats(0.5, 0.999))
def test_wilson_interval_holds_the_share_mirrors_and_narrows(n: int, data: st.DataObject, confidence: float) -> None:
    k = data.draw(st.integers(0, n))
    estimate = wilson_fraction([True] * k + [False] * (n - k), confidence=confidence)
    mirror = wilson_fraction([False] * k + [True] * (n - k), confidence=confidence)
    assert estimate.low is not None and estimate.high is not None and estimate.mean == k / n
    assert mirror.low is not None and mirror.high is not None
    assert 0.0 <= estimate.low <= k / n <= estimate.high <= 1.0
    assert estimate.low == pytest.approx(1 - mirror.high, abs=1e-12)
    assert estimate.high == pytest.approx(1 - mirror.low, abs=1e-12)
    more = wilson_fraction([True] * (4 * k) + [False] * (4 * (n - k)), confidence=confidence)
    assert more.low is not None and more.high is not None
    assert more.high - more.low < estimate.high - estimate.low
    wider = wilson_fraction([True] * k + [False] * (n - k), confidence=(1 + confidence) / 2)
    assert wider.low is not None and wider.high is not None
    assert wider.low <= estimate.low and wider.high >= estimate.high


def test_bootstrap_is_seeded_and_the_interval_shrinks_with_more_units() -> None:
    rng = np.random.default_rng(1)
    small = list(rng.normal(0.15, 0.2, size=30))
    large = list(rng.normal(0.15, 0.2, size=3000))
    assert bootstrap_mean(small, seed=3) == bootstrap_mean(small, seed=3)
    s, big = bootstrap_mean(small), bootstrap_mean(large)
    assert s.low is not None and s.high is not None and big.low is not None and big.high is not None
    assert (big.high - big.low) < (s.high - s.low) / 5
    # the normal-theory half-width for 3000 units is 1.96 * 0.2 / sqrt(3000) ~ 0.0072
    assert (big.high - big.low) / 2 == pytest.approx(1.96 * 0.2 / math.sqrt(3000), rel=0.15)


def test_degenerate_inputs() -> None:
    assert bootstrap_mean([]).mean is None
    none_defined = bootstrap_mean([None, None])
    assert none_defined.mean is None and none_defined.n_missing == 2
    assert "n/a" in str(none_defined)
    one = bootstrap_mean([0.5])
    assert one.mean == 0.5 and one.low is None and one.high is None
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_mean([0.1, 0.2], confidence=1.5)


def test_fraction_above_threshold() -> None:
    estimate = bootstrap_fraction_above([0.9, 0.1, None, 0.75, 0.2], threshold=0.7)
    assert estimate.mean == pytest.approx(0.5) and estimate.n == 4 and estimate.n_missing == 1


def test_paired_test_detects_a_consistent_improvement() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 0.5, size=60)
    a = b + 0.05 + rng.normal(0, 0.02, size=60)
    result = paired_test(list(a), list(b), seed=1)
    assert result.mean_difference == pytest.approx(float(np.mean(a - b)))
    assert result.low is not None and result.low > 0
    assert result.p_value is not None and result.p_value < 0.001
    assert result.wilcoxon_p_value is not None and result.wilcoxon_p_value < 0.001
    assert result.n == 60


def test_paired_test_finds_nothing_between_exchangeable_methods() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0, 1, size=80), rng.uniform(0, 1, size=80)
    result = paired_test(list(a), list(b), seed=0)
    assert result.p_value is not None and result.p_value > 0.05
    assert result.low is not None and result.high is not None and result.low < 0 < result.high


def test_exact_permutation_for_small_samples() -> None:
    # 5 positive differences: only the all-positive and all-negative sign patterns reach |mean| -> p = 2/32
    result = paired_test([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert result.p_value == pytest.approx(2 / 32)
    tiny = paired_test([1e-14, 2e-14, 3e-14, 4e-14, 5e-14], [0.0, 1e-14, 2e-14, 3e-14, 4e-14])
    assert tiny.p_value == pytest.approx(2 / 32)  # ties are judged relative to the scale


def test_paired_test_drops_units_missing_on_either_side() -> None:
    result = paired_test([0.5, None, 0.3, 0.9], [0.4, 0.2, None, 0.8])
    assert (result.n, result.n_missing) == (2, 2)
    assert result.mean_difference == pytest.approx(0.1)
    identical = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert identical.mean_difference == 0 and identical.p_value == 1.0 and identical.wilcoxon_p_value is None
    with pytest.raises(ConfigError, match="same units"):
        paired_test([0.1], [0.1, 0.2])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-1, 1)), min_size=2, max_size=50), st.integers(0, 2**32 - 1))
def test_interval_contains_the_mean_and_stays_in_range(values: list[float | None], seed: int) -> None:
    estimate = bootstrap_mean(values, n_resamples=200, seed=seed)
    defined = [v for v in values if v is not None]
    assert estimate.n == len(defined) and estimate.n + estimate.n_missing == len(values)
    if len(defined) >= 2:
        assert estimate.low is not None and estimate.high is not None and estimate.mean is not None
        assert min(defined) - 1e-12 <= estimate.low <= estimate.high <= max(defined) + 1e-12


def test_holm_adjustment() -> None:
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04); None is not a test
    assert holm_adjusted([0.04, None, 0.01, 0.02]) == [pytest.approx(0.04), None, pytest.approx(0.03),
                                                        pytest.approx(0.04)]
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]
    assert holm_adjusted([]) == []


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    trials, covered = 300, 0
    for trial in range(trials):
        sample = rng.gamma(0.5, 0.4, size=60) - 0.05  # skewed, like per-unit scores; true mean 0.15
        estimate = bootstrap_mean(list(sample), n_resamples=500, seed=trial)
        assert estimate.low is not None and estimate.high is not None
        covered += estimate.low <= 0.15 <= estimate.high
    assert 0.89 <= covered / trials <= 0.99


def test_paired_test_rejects_at_the_nominal_rate_under_the_null() -> None:
    rng = np.random.default_rng(11)
    trials = 300
    rejections = 0
    for trial in range(trials):
        base = rng.uniform(0, 1, size=30)
        a, b = base + rng.normal(0, 0.1, 30), base + rng.normal(0, 0.1, 30)
        p_value = paired_test(list(a), list(b), seed=trial, n_resamples=500).p_value
        assert p_value is not None
        rejections += p_value < 0.05
    assert 0.02 <= rejections / trials <= 0.09


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=3, max_size=40), st.integers(0, 1000))
def test_swapping_the_methods_mirrors_the_comparison(pairs: list[tuple[float, float]], seed: int) -> None:
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    forward, backward = paired_test(a, b, seed=seed, n_resamples=300), paired_test(b, a, seed=seed, n_resamples=300)
    assert forward.mean_difference == pytest.approx(-backward.mean_difference, abs=1e-12)
    assert forward.p_value == pytest.approx(backward.p_value)
    if forward.low is not None:
        assert backward.high == pytest.approx(-forward.low, abs=1e-9)
        assert backward.low == pytest.approx(-forward.high, abs=1e-9)


def test_seed_noise_widens_the_interval_and_one_repeat_is_the_plain_bootstrap() -> None:
    rng = np.random.default_rng(3)
    unit_means = rng.normal(0.2, 0.1, size=40)
    quiet = [[m + e for e in rng.normal(0, 0.001, size=3)] for m in unit_means]
    noisy = [[m + e for e in rng.normal(0, 0.3, size=3)] for m in unit_means]
    quiet_estimate, noisy_estimate = bootstrap_mean_over_repeats(quiet), bootstrap_mean_over_repeats(noisy)
    assert quiet_estimate.mean == pytest.approx(np.mean([np.mean(u) for u in quiet]))
    assert quiet_estimate.low is not None and quiet_estimate.high is not None
    assert noisy_estimate.low is not None and noisy_estimate.high is not None
    assert noisy_estimate.high - noisy_estimate.low > 1.2 * (quiet_estimate.high - quiet_estimate.low)
    single = bootstrap_mean_over_repeats([[m] for m in unit_means], seed=5)
    plain = bootstrap_mean(list(unit_means), seed=5)
    assert single.mean == pytest.approx(plain.mean)
    assert single.low == pytest.approx(plain.low, abs=0.01) and single.high == pytest.approx(plain.high, abs=0.01)


def test_repeats_missing_everywhere_are_missing_units_and_spreads_need_two() -> None:
    estimate = bootstrap_mean_over_repeats([[None, None], [0.5, None], [0.1, 0.3]])
    assert estimate.n == 2 and estimate.n_missing == 1
    assert estimate.mean == pytest.approx((0.5 + 0.2) / 2)
    assert spread_over_repeats([0.1, None, 0.3]) == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert spread_over_repeats([0.1, None]) is None


@given(st.lists(st.lists(st.one_of(st.none(), st.floats(-1, 1)), min_size=1, max_size=4), min_size=2, max_size=20),
       st.integers(0, 2**32 - 1))
def test_repeat_interval_stays_in_the_range_of_the_scores(values: list[list[float | None]], seed: int) -> None:
    estimate = bootstrap_mean_over_repeats(values, n_resamples=200, seed=seed)
    if estimate.mean is None or estimate.low is None or estimate.high is None:
        return
    assert -1 - 1e-9 <= estimate.low <= estimate.high <= 1 + 1e-9
