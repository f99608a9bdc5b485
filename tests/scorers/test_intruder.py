"""Intruder with scripted judges: one that always finds the intruder, one that always guesses the same place."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from scorer_helpers import MARK_OPEN, excerpts_of, plain, record, text_judge, unit_inputs, unmarked

from golden import assert_golden
from neuroscribe.errors import ConfigError, StageError
from neuroscribe.llm.base import CompletionRequest
from neuroscribe.records import UnitId
from neuroscribe.results import ExplanationScores
from neuroscribe.scorers import SCORERS, IntruderScorer, ScorerInput, ScoringShape, create_scorer
from neuroscribe.scorers.intruder import IntruderOptions, build_prompt
from neuroscribe.scorers.judging import render_request


def scorer(answer: object, **options: object) -> IntruderScorer:
    made = create_scorer("intruder", text_judge(answer), options)  # type: ignore[arg-type]
    assert isinstance(made, IntruderScorer)
    return made


def finder(inputs: ScorerInput) -> object:
    outsiders = {plain(r) for r in inputs.random_pool}
    outsiders |= {plain(r) for rs in inputs.other_units_records.values() for r in rs}

    def answer(request: CompletionRequest) -> str:
        texts = excerpts_of(request)
        assert all(MARK_OPEN in t for t in texts)  # every excerpt is marked, the intruder too
        return str(next(i for i, t in enumerate(texts, 1) if unmarked(t) in outsiders))
    return answer


async def test_a_judge_that_always_finds_the_intruder_scores_one() -> None:
    inputs = unit_inputs()
    out = await scorer(finder(inputs)).score(inputs)
    assert SCORERS.get("intruder").needs_explanation is False
    assert out.headline == "intruder_accuracy"
    assert out.scores["intruder_accuracy"] == {"all": 1.0, "quantile_1": 1.0, "quantile_2": 1.0, "quantile_3": 1.0,
                                               "chance": 0.2}
    assert out.scores["intruder_unparsed"]["all"] == 0.0
    assert isinstance(out.result, ExplanationScores) and len(out.result.examples) == 9
    assert all(e.target == e.prediction and max(e.true_activations) == 0.0 for e in out.result.examples)


async def test_intruders_from_other_units() -> None:
    others = {UnitId(0, i): [record(f"other{i}x{j}", 5.0, at=2) for j in range(3)] for i in range(2)}
    inputs = replace(unit_inputs(), other_units_records=others)
    out = await scorer(finder(inputs), intruder_source="other_units").score(inputs)
    assert out.scores["intruder_accuracy"]["all"] == 1.0
    with pytest.raises(StageError, match="no other units"):
        await scorer(finder(inputs), intruder_source="other_units").score(unit_inputs())


async def test_a_fixed_guess_scores_about_chance() -> None:
    """200 questions of 5: a fixed guess is right with probability 1/5 (the intruder's place is uniform), so its
    accuracy has standard error sqrt(0.2 * 0.8 / 200) = 0.028; we allow four."""
    inputs = unit_inputs(per_quantile=20)
    out = await scorer(lambda r: "2", n_quantiles=4, n_groups_per_quantile=50).score(inputs)
    value = out.scores["intruder_accuracy"]["all"]
    assert value is not None and abs(value - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 200)
    assert out.scores["intruder_accuracy"]["chance"] == 0.2


async def test_small_quantiles_make_smaller_groups_and_chance_follows() -> None:
    inputs = unit_inputs(n_quantiles=2, per_quantile=2)
    with pytest.raises(StageError, match="activating excerpts in quantile_0: 2 of the 4 asked for"):
        await scorer(finder(inputs), n_quantiles=2).score(inputs)
    out = await scorer(finder(inputs), n_quantiles=2, allow_fewer=True).score(inputs)
    assert out.scores["intruder_accuracy"]["chance"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(("inputs", "answer", "stage", "match"), [
    (unit_inputs(n_random=0), "1", "records", "no non-activating excerpts"),
    (unit_inputs(n_quantiles=1, per_quantile=0), "1", "records", "no activating excerpts"),
    (unit_inputs(), "They all look alike to me.", "parse", "names no excerpt number"),
    (unit_inputs(), "Excerpt 9.", "parse", "names excerpt 9, but there are 5"),
])
async def test_bad_inputs_fail_the_unit(inputs: ScorerInput, answer: str, stage: str, match: str) -> None:
    with pytest.raises(StageError, match=match) as caught:
        await scorer(lambda r: answer).score(inputs)
    assert caught.value.stage == stage


async def test_some_unreadable_answers_are_counted_not_guessed() -> None:
    inputs = unit_inputs()
    found = finder(inputs)
    calls: list[int] = []

    def answer(request: CompletionRequest) -> str:
        calls.append(1)
        return "not sure" if len(calls) % 3 == 0 else found(request)  # type: ignore[operator]

    out = await scorer(answer).score(inputs)
    assert out.scores["intruder_unparsed"]["all"] == 3.0 and out.scores["intruder_accuracy"]["all"] == 1.0


def test_options_and_estimate() -> None:
    with pytest.raises(ConfigError, match="group_size"):
        IntruderOptions(group_size=2)
    with pytest.raises(ConfigError, match="intruder_source"):
        IntruderOptions(intruder_source="elsewhere")  # type: ignore[arg-type]
    estimate = SCORERS.get("intruder").estimate(IntruderOptions(), ScoringShape(n_scoring=1, n_calibration=0,
                                                                                 excerpt_tokens=32))
    assert estimate.calls == 9 and estimate.completion_tokens == 36


@pytest.mark.parametrize("fmt", ["chat", "completion"])
def test_the_prompt_text_is_pinned(fmt: str) -> None:
    texts = ["we ate an <<apple>> pie", "<<apple>> trees in bloom", "the <<train>> left <<late>>"]
    request = render_request(build_prompt(texts, 2), fmt, 8, 0)
    text = request.prompt or "\n\n".join(f"[{m.role}]\n{m.content}" for m in request.messages or ())
    assert_golden(f"scorers/intruder_{fmt}.txt", text)
