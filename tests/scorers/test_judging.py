"""Reading yes/no answers (text and log-probabilities) and marking excerpts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scorer_helpers import verdicts_choice

from neuroscribe.errors import ParseError
from neuroscribe.llm.base import Choice, TokenLogprob
from neuroscribe.records import ActivationRecord
from neuroscribe.scorers.examples import marked_positions, random_positions, render, top_positions
from neuroscribe.scorers.judging import Verdict, parse_verdicts


@pytest.mark.parametrize("text", ["1: yes\n2: No\n3: YES", "1. yes\n2) no\n3 - yes", "Excerpt 1: **yes**\n2: no\n"
                                  "3: yes, it mentions apples", "1: yes\n1: yes\n2: no\n3: yes\n4: no"])
def test_numbered_verdicts_are_read_in_the_forms_models_write(text: str) -> None:
    assert parse_verdicts(Choice(text=text), 3) == [Verdict(True), Verdict(False), Verdict(True)]


@pytest.mark.parametrize(("text", "match"), [
    ("Yes, all of them.", r"excerpt\(s\) \[1, 2\]"),
    ("1: yes", r"excerpt\(s\) \[2\]"),
    ("1: yes\n1: no\n2: no", "both yes and no"),
])
def test_unreadable_verdicts_are_parse_errors_with_the_raw_text(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match) as caught:
        parse_verdicts(Choice(text=text), 2)
    assert caught.value.raw_text == text


def test_p_yes_is_read_at_the_answer_token_and_renormalised_over_yes_and_no() -> None:
    choice = verdicts_choice([0.8, 0.3])
    assert [round(v.p_yes or 0, 6) for v in parse_verdicts(choice, 2)] == [0.8, 0.3]
    other = TokenLogprob(" no", math.log(0.2), ((" no", math.log(0.2)), (" maybe", math.log(0.7)),
                                                (" yes", math.log(0.1))))
    text = Choice(text="1: no", logprobs=(TokenLogprob("1", 0.0), TokenLogprob(":", 0.0), other))
    assert parse_verdicts(text, 1)[0].p_yes == pytest.approx(1 / 3)
    mismatch = Choice(text="1: no", logprobs=(TokenLogprob("1: yes", 0.0),))
    assert parse_verdicts(mismatch, 1) == [Verdict(False, None)]


def test_marks_wrap_runs_of_tokens_and_leave_leading_spaces_outside() -> None:
    tokens = ["The", " big", " red", " apple", "\n", "fell"]
    assert render(tokens, [1, 2]) == "The <<big red>> apple\\nfell"
    assert render(tokens, [0, 3]) == "<<The>> big red <<apple>>\\nfell"
    assert render(tokens) == "The big red apple\\nfell"


def test_positions_to_mark() -> None:
    r = ActivationRecord(tokens=list("abcdef"), activations=[0.0, 6.0, 1.0, 9.0, 0.0, 0.0])
    assert marked_positions(r, 10.0, 0.5) == [1, 3]
    assert marked_positions(r, 10.0, 0.95) == [3]  # the strongest token when none passes
    rng = np.random.default_rng(0)
    assert top_positions(r, 2, rng) == [1, 3]
    zeros = ActivationRecord(tokens=list("abcdef"), activations=[0.0] * 6)
    assert len({tuple(top_positions(zeros, 2, rng)) for _ in range(20)}) > 1  # ties broken at random
    assert all(set(random_positions(6, 2, [1, 3], rng)).isdisjoint({1, 3}) for _ in range(20))
    assert random_positions(3, 2, [0, 1], rng) != []
