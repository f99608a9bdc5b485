"""Uncertainty over units: bootstrap intervals for mean scores and paired tests between methods.

Units whose score is undefined (`None`) are counted as missing and reported next to the mean, never
averaged in as 0. Every random choice takes a seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from neuroscribe.errors import ConfigError
from neuroscribe.scoring.metrics import FloatArray

_RESAMPLE_CHUNK_ELEMENTS = 4_000_000
"""Bootstrap index matrices are drawn in chunks of about this many entries to bound memory."""

EXACT_PERMUTATION_MAX_N = 14
"""Up to this many pairs, the sign-flip test enumerates all 2^n sign patterns instead of sampling."""


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A mean over units with a percentile-bootstrap confidence interval.

    `mean`, `low`, `high` are None with no defined values; `low`/`high` are None with fewer than 2.
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int
    """Units with a defined value (the ones averaged)."""
    n_missing: int
    """Units whose value was None (undefined score or failed unit), excluded from the mean."""
    confidence: float = 0.95

    @property
    def coverage(self) -> float:
        total = self.n + self.n_missing
        return self.n / total if total else 0.0

    def __str__(self) -> str:
        if self.mean is None:
            return f"n/a (0 of {self.n_missing} units defined)"
        interval = "" if self.low is None else f" [{self.low:.3f}, {self.high:.3f}]"
        missing = f", {self.n_missing} missing" if self.n_missing else ""
        return f"{self.mean:.3f}{interval} (n={self.n}{missing})"


@dataclass(frozen=True, kw_only=True)
class PairedComparison:
    """Method A minus method B over the units both scored.

    `p_value` is the two-sided sign-flip permutation test of mean difference 0 (exact for small n);
    `wilcoxon_p_value` the Wilcoxon signed-rank test (None when every difference is 0 or n < 2).
    """

    mean_difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n: int
    """Units where both methods have a defined score."""
    n_missing: int = 0
    """Units dropped because either score is None."""
    wilcoxon_p_value: float | None = None
    confidence: float = 0.95


def _check(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be at least 1, got {n_resamples}")


def _defined(values: Sequence[float | None]) -> FloatArray:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return np.asarray(kept, dtype=np.float64)


def _chunks(n_resamples: int, n: int) -> list[int]:
    """Rows per chunk of an (n_resamples x n) random matrix, bounding memory for any number of units."""
    rows = max(1, _RESAMPLE_CHUNK_ELEMENTS // max(n, 1))
    return [min(rows, n_resamples - start) for start in range(0, n_resamples, rows)]


def _bootstrap_means(values: FloatArray, n_resamples: int, rng: np.random.Generator) -> FloatArray:
    n = values.size
    index_type = np.int32 if n < 2**31 else np.int64  # int32 draws twice as fast
    return np.concatenate([values[rng.integers(0, n, size=(rows, n), dtype=index_type)].mean(axis=1)
                           for rows in _chunks(n_resamples, n)])


def _interval(samples: FloatArray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float | None], n_resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> Estimate:
    """Mean of the defined values with a percentile-bootstrap interval (resampling units)."""
    _check(confidence, n_resamples)
    defined = _defined(values)
    n_missing = len(values) - defined.size
    if defined.size == 0:
        return Estimate(mean=None, low=None, high=None, n=0, n_missing=n_missing, confidence=confidence)
    mean = float(defined.mean())
    if defined.size < 2:
        return Estimate(mean=mean, low=None, high=None, n=1, n_missing=n_missing, confidence=confidence)
    low, high = _interval(_bootstrap_means(defined, n_resamples, np.random.default_rng(seed)), confidence)
    return Estimate(mean=mean, low=low, high=high, n=int(defined.size), n_missing=n_missing, confidence=confidence)


def bootstrap_mean_over_repeats(values: Sequence[Sequence[float | None]], n_resamples: int = 1000, seed: int = 0,
                                confidence: float = 0.95) -> Estimate:
    """Mean over units of each unit's mean over repeats (`values[unit][repeat]`), with an interval that
    includes run-to-run noise: a two-stage bootstrap resamples units, then each drawn unit's repeats.

    A unit with no defined repeat is missing; one with some uses those it has.
    """
    _check(confidence, n_resamples)
    units = [_defined(unit) for unit in values]
    kept = [unit for unit in units if unit.size]
    n_missing = len(units) - len(kept)
    if not kept:
        return Estimate(mean=None, low=None, high=None, n=0, n_missing=n_missing, confidence=confidence)
    mean = float(np.mean([unit.mean() for unit in kept]))
    if len(kept) < 2:
        return Estimate(mean=mean, low=None, high=None, n=1, n_missing=n_missing, confidence=confidence)
    width = max(unit.size for unit in kept)
    padded = np.zeros((len(kept), width))
    counts = np.array([unit.size for unit in kept])
    for row, unit in zip(padded, kept, strict=True):
        row[: unit.size] = unit
    rng = np.random.default_rng(seed)
    samples = []
    for rows in _chunks(n_resamples, len(kept) * width):
        drawn = rng.integers(0, len(kept), size=(rows, len(kept)))  # stage 1: units
        repeats = np.floor(rng.random((rows, len(kept), width)) * counts[drawn][..., None]).astype(np.int64)
        values_drawn = padded[drawn[..., None], repeats]  # stage 2: each drawn unit's repeats
        used = np.arange(width)[None, None, :] < counts[drawn][..., None]
        samples.append(((values_drawn * used).sum(axis=2) / counts[drawn]).mean(axis=1))
    low, high = _interval(np.concatenate(samples), confidence)
    return Estimate(mean=mean, low=low, high=high, n=len(kept), n_missing=n_missing, confidence=confidence)


def spread_over_repeats(values: Sequence[float | None]) -> float | None:
    """One unit's standard deviation over repeats (n - 1 in the denominator); None with fewer than 2 defined."""
    defined = _defined(values)
    return float(defined.std(ddof=1)) if defined.size >= 2 else None


def bootstrap_fraction_above(values: Sequence[float | None], threshold: float, n_resamples: int = 1000,
                             seed: int = 0, confidence: float = 0.95) -> Estimate:
    """Share of units scoring at least `threshold` (e.g. the paper's 'above 0.7'), over defined units."""
    indicators = [None if v is None or math.isnan(v) else float(v >= threshold) for v in values]
    return bootstrap_mean(indicators, n_resamples=n_resamples, seed=seed, confidence=confidence)


def wilson_fraction(outcomes: Sequence[bool | None], confidence: float = 0.95) -> Estimate:
    """Share of True among the decided outcomes (None: undecided, counted as missing) with a Wilson score
    interval. Unlike a bootstrap, it stays honest for few trials and at 0 or all: 9 of 9 gives [0.70, 1],
    not [1, 1]; it is defined from one trial on."""
    _check(confidence, 1)
    decided = [o for o in outcomes if o is not None]
    n, n_missing = len(decided), len(outcomes) - len(decided)
    if not n:
        return Estimate(mean=None, low=None, high=None, n=0, n_missing=n_missing, confidence=confidence)
    successes = sum(decided)
    share = successes / n
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    shrink = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / shrink
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / shrink
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(mean=share, low=low, high=high, n=n, n_missing=n_missing, confidence=confidence)


def _sign_flip_p_value(differences: FloatArray, n_resamples: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of |mean| under random sign flips (each unit's A/B labels exchangeable)."""
    observed = abs(float(differences.mean()))
    threshold = observed * (1 - 1e-9)  # the observed labelling must count despite rounding in the sums
    n = differences.size
    if n <= EXACT_PERMUTATION_MAX_N:
        patterns = np.arange(2**n)[:, None] >> np.arange(n)  # row k: the bits of k, one per unit
        signs = (patterns & 1) * 2.0 - 1.0
        null_means = np.abs(signs @ differences / n)
        return float(np.mean(null_means >= threshold))
    at_least_as_extreme = 0
    for rows in _chunks(n_resamples, n):
        random_signs = rng.integers(0, 2, size=(rows, n), dtype=np.int8) * 2 - 1
        at_least_as_extreme += int(np.sum(np.abs(random_signs @ differences / n) >= threshold))
    # the observed labelling counts as one permutation, so p is never exactly 0
    return (at_least_as_extreme + 1) / (n_resamples + 1)


def paired_test(a: Sequence[float | None], b: Sequence[float | None], seed: int = 0, n_resamples: int = 5000,
                confidence: float = 0.95) -> PairedComparison:
    """Compare two methods scored on the same units (a[i] and b[i] are the same unit)."""
    _check(confidence, n_resamples)
    if len(a) != len(b):
        raise ConfigError(f"paired test needs the same units on both sides, got {len(a)} and {len(b)} scores")
    kept = [(x, y) for x, y in zip(a, b, strict=True)
            if x is not None and y is not None and not math.isnan(x) and not math.isnan(y)]
    n_missing = len(a) - len(kept)
    if not kept:
        return PairedComparison(mean_difference=None, low=None, high=None, p_value=None, n=0, n_missing=n_missing,
                                confidence=confidence)
    differences = np.asarray([x - y for x, y in kept], dtype=np.float64)
    mean = float(differences.mean())
    n = differences.size
    if n < 2:
        return PairedComparison(mean_difference=mean, low=None, high=None, p_value=None, n=n, n_missing=n_missing,
                                confidence=confidence)
    rng = np.random.default_rng(seed)
    low, high = _interval(_bootstrap_means(differences, n_resamples, rng), confidence)
    p_value = _sign_flip_p_value(differences, n_resamples, rng)
    wilcoxon_p = None
    if np.any(differences != 0):
        from scipy import stats as scipy_stats  # slow to import (seconds); only the paired test needs it

        wilcoxon_p = float(scipy_stats.wilcoxon(differences, zero_method="wilcox").pvalue)
    return PairedComparison(mean_difference=mean, low=low, high=high, p_value=p_value, n=n, n_missing=n_missing,
                            wilcoxon_p_value=wilcoxon_p, confidence=confidence)


def holm_adjusted(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, for comparing several methods against one baseline at once.

    Controls the family-wise error rate without assuming independence; None entries stay None and do
    not count as tests.
    """
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(order)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))  # adjusted values must not decrease with rank
        adjusted[i] = running
    return adjusted
