"""Fuzzing with scripted judges: true marks against random ones at the same density."""

from __future__ import annotations

import math

import pytest
from scorer_helpers import MARK_CLOSE, MARK_OPEN, coin, text_judge, unit_inputs, unmarked, yes_no_judge

from golden import assert_golden
from neuroscribe.errors import ConfigError, StageError
from neuroscribe.llm.base import Completion
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.results import ExplanationScores
from neuroscribe.scorers import FuzzingScorer, create_scorer
from neuroscribe.scorers.fuzzing import FuzzingOptions
from neuroscribe.scorers.judging import render_request


def scorer(backend: ScriptedBackend, **options: object) -> FuzzingScorer:
    made = create_scorer("fuzzing", backend, options)
    assert isinstance(made, FuzzingScorer)
    return made


def test_true_marks_sit_on_the_activating_token_and_random_ones_elsewhere_at_the_same_density() -> None:
    shown = scorer(ScriptedBackend(lambda r: Completion()), n_per_quantile=4).draw(unit_inputs())
    positives = [s for s in shown if s.target]
    assert len(positives) == 6 and len(shown) == 12 + 15  # half of 12 activating mismarked, 15 non-activating
    assert all(f"{MARK_OPEN}apple{MARK_CLOSE}" in s.text for s in positives)
    assert all(f"{MARK_OPEN}apple{MARK_CLOSE}" not in s.text for s in shown if s.example.activating and not s.target)
    assert all(s.text.count(MARK_OPEN) == 1 for s in shown)


async def test_truthful_and_inverted_answers() -> None:
    inputs = unit_inputs()
    for invert, expected in ((False, 1.0), (True, 0.0)):
        judge = scorer(ScriptedBackend(lambda r: Completion()))
        truth = {s.text: s.target for s in judge.draw(inputs)}
        judge.backend = yes_no_judge(lambda text, t=truth, i=invert: 0.8 if t[text] != i else 0.2)  # type: ignore[misc]
        out = await judge.score(inputs)
        assert out.headline == "fuzzing_balanced_accuracy"
        for name in ("fuzzing_auc", "fuzzing_balanced_accuracy", "fuzzing_recall", "fuzzing_precision"):
            assert out.scores[name]["all"] == expected, name
        assert set(out.scores["fuzzing_recall"]) == {"all", "quantile_1", "quantile_2", "quantile_3"}


async def test_answers_independent_of_the_truth_score_about_one_half() -> None:
    """400 excerpts: 200 activating (100 truly marked) and 200 non-activating. With n1 = 100 positives and
    n2 = 300 negatives AUC's standard error under independence is sqrt((n1 + n2 + 1) / (12 n1 n2)) = 0.033 and
    balanced accuracy's sqrt(0.25 / 100 + 0.25 / 300) / 2 = 0.029; we allow four of each."""
    inputs = unit_inputs(per_quantile=50, n_random=200)
    judge = scorer(yes_no_judge(lambda text: coin(unmarked(text) + text, "fuzz")), n_quantiles=4,
                   n_per_quantile=50, n_non_activating=200, excerpts_per_prompt=10)
    out = await judge.score(inputs)
    auc, balanced = out.scores["fuzzing_auc"]["all"], out.scores["fuzzing_balanced_accuracy"]["all"]
    assert auc is not None and abs(auc - 0.5) < 4 * math.sqrt(401 / (12 * 100 * 300))
    assert balanced is not None and abs(balanced - 0.5) < 4 * math.sqrt(0.25 / 100 + 0.25 / 300) / 2
    assert isinstance(out.result, ExplanationScores) and len(out.result.examples) == 400


@pytest.mark.parametrize(("inputs", "answer", "match"), [
    (unit_inputs(explanation=""), "1: yes", "explanation is empty"),
    (unit_inputs(n_random=0), "1: yes", "no non-activating excerpts"),
    (unit_inputs(n_quantiles=1, per_quantile=0), "1: yes", "no activating excerpts"),
    (unit_inputs(), "The marked words are all fruit, so probably.", "no 'N: yes'"),
])
async def test_bad_inputs_fail_the_unit(inputs: object, answer: str, match: str) -> None:
    with pytest.raises(StageError, match=match):
        await scorer(text_judge(lambda r: answer)).score(inputs)  # type: ignore[arg-type]


async def test_one_activating_excerpt_is_kept_correctly_marked() -> None:
    judge = scorer(yes_no_judge(lambda t: 0.9), n_quantiles=1, mismarked_fraction=0.9, allow_fewer=True)
    out = await judge.score(unit_inputs(n_quantiles=1, per_quantile=1))
    assert out.scores["fuzzing_recall"]["all"] == 1.0


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="mark_threshold"):
        FuzzingOptions(mark_threshold=1.5)
    with pytest.raises(ConfigError, match="n_non_activating"):
        FuzzingOptions(n_non_activating=0)


def test_the_prompt_text_is_pinned() -> None:
    judge = scorer(ScriptedBackend(lambda r: Completion()), n_per_quantile=1, n_non_activating=2)
    texts = [s.text for s in judge.draw(unit_inputs())]
    request = render_request(judge.build_prompt("the word apple", texts, 2), "chat", 20, 0)
    assert_golden("scorers/fuzzing_chat.txt", "\n\n".join(f"[{m.role}]\n{m.content}" for m in request.messages or ()))
