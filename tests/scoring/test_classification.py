"""Classification metrics against brute-force definitions (hypothesis), plus their undefined cases."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neuroscribe.errors import DataError
from neuroscribe.scoring import accuracy, balanced_accuracy, precision, recall, roc_auc

labelled_scores = st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])),
                           min_size=1, max_size=30)
labelled_answers = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30)


def brute_auc(pairs: list[tuple[bool, float]]) -> float:
    """Every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
    pos = [s for label, s in pairs if label]
    neg = [s for label, s in pairs if not label]
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    return sum(wins) / len(wins)


@given(labelled_scores)
def test_auc_is_the_share_of_correctly_ordered_pairs(pairs: list[tuple[bool, float]]) -> None:
    labels, scores = [int(t) for t, _ in pairs], [s for _, s in pairs]
    score = roc_auc(labels, scores)
    if len(set(labels)) < 2:
        assert score.value is None and "both classes" in (score.reason or "")
    else:
        assert score.value == pytest.approx(brute_auc(pairs))


@given(labelled_answers)
def test_rates_match_their_counting_definitions(pairs: list[tuple[bool, bool]]) -> None:
    labels, answers = [int(t) for t, _ in pairs], [int(p) for _, p in pairs]
    tp = sum(t and p for t, p in pairs)
    pos = sum(t for t, _ in pairs)
    neg = len(pairs) - pos
    tn = sum(not t and not p for t, p in pairs)
    predicted = sum(p for _, p in pairs)
    assert recall(labels, answers).value == (tp / pos if pos else None)
    assert precision(labels, answers).value == (tp / predicted if predicted else None)
    expected = (tp / pos + tn / neg) / 2 if pos and neg else None
    value = balanced_accuracy(labels, answers).value
    assert (value is None) == (expected is None)
    assert value is None or math.isclose(value, expected or 0.0)
    assert accuracy(labels, answers).value == pytest.approx((tp + tn) / len(pairs))


def test_perfect_inverted_and_constant_answers() -> None:
    labels = [1, 1, 0, 0]
    assert roc_auc(labels, [0.9, 0.8, 0.2, 0.1]).value == 1.0
    assert roc_auc(labels, [0.1, 0.2, 0.8, 0.9]).value == 0.0
    assert roc_auc(labels, [0.5] * 4).value == 0.5
    assert balanced_accuracy(labels, [1, 1, 1, 1]).value == 0.5
    assert precision(labels, [0, 0, 0, 0]).reason is not None


def test_undefined_and_invalid_inputs() -> None:
    assert roc_auc([], []).value is None
    assert roc_auc([1, 0], [float("nan"), 0.0]).reason == "scores contain 1 non-finite values"
    assert accuracy([], []).value is None
    assert recall([0, 0], [1, 0]).value is None
    with pytest.raises(DataError, match="0 or 1"):
        recall([2, 0], [1, 0])
    with pytest.raises(DataError, match="2 labels but 1 predictions"):
        balanced_accuracy([1, 0], [1])
