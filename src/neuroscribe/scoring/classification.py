"""Classification metrics for scorers that ask yes/no questions (detection, fuzzing) or pick one of k (intruder).

Labels are 1 (positive, e.g. the excerpt activates the unit) or 0; predictions are 0/1 answers, scores are
P(yes). Every function returns a `Score`, None with the reason where the metric is undefined (one class
only, no predicted positives, nothing to score), never a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from neuroscribe.errors import DataError
from neuroscribe.scoring.metrics import Score

Labels = Sequence[int] | Sequence[bool] | npt.NDArray[np.int_] | npt.NDArray[np.bool_]


def _binary(values: Labels | Sequence[float], what: str) -> npt.NDArray[np.bool_]:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isin(array, (0.0, 1.0)).all():
        raise DataError(f"{what} must be 0 or 1, got {sorted(set(array[~np.isin(array, (0.0, 1.0))]))[:5]}")
    return np.asarray(array == 1.0, dtype=np.bool_)


def _pair(labels: Labels, predictions: Labels) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    t, p = _binary(labels, "labels"), _binary(predictions, "predictions")
    if t.shape != p.shape:
        raise DataError(f"cannot score: {t.size} labels but {p.size} predictions")
    return t, p


def roc_auc(labels: Labels, scores: Sequence[float] | npt.NDArray[np.float64]) -> Score:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties
    counting one half (the Mann-Whitney U statistic over average ranks)."""
    t = _binary(labels, "labels")
    s = np.asarray(scores, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise DataError(f"cannot score: {t.size} labels but {s.size} scores")
    if not np.isfinite(s).all():
        return Score(None, f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return Score(None, f"AUC needs both classes, got {n_pos} positive and {n_neg} negative examples")
    ranks = rankdata(s, method="average")
    u = float(ranks[t].sum()) - n_pos * (n_pos + 1) / 2
    return Score(u / (n_pos * n_neg))


def recall(labels: Labels, predictions: Labels) -> Score:
    """True positives over actual positives; undefined without positives."""
    t, p = _pair(labels, predictions)
    if not t.any():
        return Score(None, "recall needs at least one positive example")
    return Score(float((t & p).sum() / t.sum()))


def precision(labels: Labels, predictions: Labels) -> Score:
    """True positives over predicted positives; undefined when nothing is predicted positive."""
    t, p = _pair(labels, predictions)
    if not p.any():
        return Score(None, f"precision needs a positive prediction, all {p.size} were negative")
    return Score(float((t & p).sum() / p.sum()))


def balanced_accuracy(labels: Labels, predictions: Labels) -> Score:
    """The mean of the true-positive and true-negative rates, so a constant answer scores 0.5 whatever the
    class balance; undefined unless both classes are present."""
    t, p = _pair(labels, predictions)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return Score(None, f"balanced accuracy needs both classes, got {n_pos} positive and {n_neg} negative")
    return Score(float(((t & p).sum() / n_pos + (~t & ~p).sum() / n_neg) / 2))


def accuracy(targets: Sequence[float], predictions: Sequence[float]) -> Score:
    """The share of predictions equal to their target (e.g. the intruder's position); undefined when empty."""
    t = np.asarray(targets, dtype=np.float64).ravel()
    p = np.asarray(predictions, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise DataError(f"cannot score: {t.size} targets but {p.size} predictions")
    if t.size == 0:
        return Score(None, "no examples to score")
    return Score(float((t == p).mean()))
