"""Detection, fuzzing and intruder on the embedded model, in process (no key, no network).

SmolLM2-135M is not expected to judge well: these tests prove that the prompts go through a real model and its
tokenizer, that P(yes) is read from real log-probabilities, and that whatever it answers is either scored or
counted as unreadable, never guessed. Excerpts are 8-12 tokens and few, to stay quick on two CPU cores.
"""

from __future__ import annotations

import pytest

from neuroscribe.errors import StageError
from neuroscribe.llm.base import Backend
from neuroscribe.records import ActivationRecord, ScoringSet, UnitId
from neuroscribe.results import ExplanationScores
from neuroscribe.scorers import ScorerInput, ScorerOutput, create_scorer

pytestmark = pytest.mark.slow

FRUIT = ["We bought a ripe mango at the market", "She peeled an orange for the kids", "A basket of fresh plums",
         "He ate a banana before the race", "The pear tree was full this year", "Slice the apple thinly"]
OTHER = ["The train leaves at nine tonight", "Please close the door behind you", "Taxes are due in April",
         "He fixed the broken chair again", "Our meeting moved to Tuesday"]


def excerpt(text: str, peak_word: int | None) -> ActivationRecord:
    words = text.split(" ")
    tokens = [words[0], *(f" {w}" for w in words[1:])]
    activations = [0.0] * len(tokens)
    if peak_word is not None:
        activations[peak_word] = 4.0
    return ActivationRecord(tokens=tokens, activations=activations)


def fruit_unit() -> ScorerInput:
    peaks = [4, 3, 4, 3, 1, 2]
    records = [excerpt(t, p) for t, p in zip(FRUIT, peaks, strict=True)]
    for r in records[3:]:
        r.activations = [a * 2 for a in r.activations]
    return ScorerInput(unit=UnitId(0, 1), explanation="names of fruit", max_activation=8.0,
                       quantiles=[records[:3], records[3:]], quantile_boundaries=[5.0],
                       random_pool=[excerpt(t, None) for t in OTHER], scoring=ScoringSet(top=records[3:], random=[]))


def assert_honest(out: ScorerOutput, prefix: str, n_examples: int) -> None:
    assert isinstance(out.result, ExplanationScores) and len(out.result.examples) == n_examples
    unread = sum(e.prediction is None for e in out.result.examples)
    assert out.scores[f"{prefix}_unparsed"]["all"] == unread < n_examples
    for variants in out.scores.values():
        for value in variants.values():
            assert value is None or (0.0 <= value <= n_examples)


@pytest.mark.parametrize("name", ["detection", "fuzzing"])
async def test_yes_no_scorers_on_the_embedded_model(embedded_backend: Backend, name: str) -> None:
    judge = create_scorer(name, embedded_backend, {"n_quantiles": 2, "n_per_quantile": 2, "n_non_activating": 3,
                                                   "excerpts_per_prompt": 4, "n_worked_examples": 1})
    try:
        out = await judge.score(fruit_unit())
    except StageError as error:  # the tiny model wrote no readable answer at all: a counted failure
        assert error.stage == "parse", error
        return
    assert_honest(out, name, 7)
    judged = [e for e in out.result.examples if e.prediction is not None]  # type: ignore[union-attr]
    assert all(0.0 <= (e.prediction or 0.0) <= 1.0 for e in judged)


async def test_intruder_on_the_embedded_model(embedded_backend: Backend) -> None:
    judge = create_scorer("intruder", embedded_backend, {"n_quantiles": 2, "group_size": 3,
                                                         "n_groups_per_quantile": 2, "n_worked_examples": 1})
    try:
        out = await judge.score(fruit_unit())
    except StageError as error:
        assert error.stage == "parse", error
        return
    assert_honest(out, "intruder", 4)
    assert out.scores["intruder_accuracy"]["chance"] == pytest.approx(1 / 3)
