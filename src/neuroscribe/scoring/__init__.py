"""Scoring: how well a simulation matches the truth, pooled over excerpts, with uncertainty over units.

Pure numpy/scipy: no models, no prompts, no I/O. See docs/records-and-scoring.md for the formulas.
"""

from neuroscribe.scoring.aggregate import (
    VARIANTS,
    SimulationPair,
    pair_with_records,
    pooled_scores,
    score_sequences,
    score_variants,
)
from neuroscribe.scoring.classification import accuracy, balanced_accuracy, precision, recall, roc_auc
from neuroscribe.scoring.metrics import (
    METRICS,
    Metric,
    Score,
    absolute_dev_explained_score,
    coefficient_of_determination,
    correlation,
    rsquared_score,
)
from neuroscribe.scoring.stats import (
    Estimate,
    PairedComparison,
    bootstrap_fraction_above,
    bootstrap_mean,
    bootstrap_mean_over_repeats,
    holm_adjusted,
    paired_test,
    spread_over_repeats,
    wilson_fraction,
)

__all__ = [
    "METRICS",
    "VARIANTS",
    "Estimate",
    "Metric",
    "PairedComparison",
    "Score",
    "SimulationPair",
    "absolute_dev_explained_score",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_fraction_above",
    "bootstrap_mean",
    "bootstrap_mean_over_repeats",
    "coefficient_of_determination",
    "correlation",
    "holm_adjusted",
    "pair_with_records",
    "paired_test",
    "pooled_scores",
    "precision",
    "recall",
    "roc_auc",
    "rsquared_score",
    "score_sequences",
    "score_variants",
    "spread_over_repeats",
    "wilson_fraction",
]
