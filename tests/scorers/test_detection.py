"""Detection with scripted judges: truthful, inverted and coin-flip answers, bad inputs, fitting, golden prompts."""

from __future__ import annotations

import math

import pytest
from scorer_helpers import coin, excerpts_of, text_judge, unit_inputs, verdicts_choice, yes_no_judge

from golden import assert_golden
from neuroscribe.errors import ConfigError, StageError
from neuroscribe.llm.base import Capability, Completion, CompletionRequest
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.results import ExplanationScores
from neuroscribe.scorers import SCORERS, DetectionScorer, ScoringShape, create_scorer
from neuroscribe.scorers.detection import DetectionOptions


def scorer(backend: ScriptedBackend, **options: object) -> DetectionScorer:
    made = create_scorer("detection", backend, options)
    assert isinstance(made, DetectionScorer)
    return made


def oracle(inputs_scorer: DetectionScorer, inputs: object, invert: bool = False) -> None:
    truth = {s.text: s.target for s in inputs_scorer.draw(inputs)}  # type: ignore[arg-type]
    inputs_scorer.backend = yes_no_judge(lambda text: 0.9 if truth[text] != invert else 0.1)


async def test_truthful_answers_score_one_and_inverted_ones_zero() -> None:
    inputs = unit_inputs()
    for invert, expected in ((False, 1.0), (True, 0.0)):
        judge = scorer(ScriptedBackend(lambda r: Completion()), n_per_quantile=3)
        oracle(judge, inputs, invert)
        out = await judge.score(inputs)
        assert out.headline == "detection_balanced_accuracy"
        assert out.scores["detection_auc"]["all"] == expected
        assert out.scores["detection_balanced_accuracy"]["all"] == expected
        assert out.scores["detection_recall"] == {"all": expected, **{f"quantile_{q}": expected for q in (1, 2, 3)}}
        assert out.scores["detection_unparsed"]["all"] == 0.0
        assert isinstance(out.result, ExplanationScores) and len(out.result.examples) == 9 + 15
        groups = {e.group for e in out.result.examples}
        assert groups == {"quantile_1", "quantile_2", "quantile_3", "non_activating"}


async def test_answers_independent_of_the_truth_score_about_one_half() -> None:
    """400 excerpts (200 activating, 200 not). Under independence, AUC's standard error is
    sqrt((n1 + n2 + 1) / (12 n1 n2)) = 0.029 and balanced accuracy's sqrt(0.25 / 200) / sqrt(2) = 0.025; four
    standard errors each (the answers are fixed by the text, so the test is deterministic, not flaky)."""
    inputs = unit_inputs(per_quantile=50, n_random=200)
    judge = scorer(yes_no_judge(coin), n_quantiles=4, n_per_quantile=50, n_non_activating=200,
                   excerpts_per_prompt=10)
    out = await judge.score(inputs)
    auc, balanced = out.scores["detection_auc"]["all"], out.scores["detection_balanced_accuracy"]["all"]
    assert auc is not None and abs(auc - 0.5) < 4 * math.sqrt(401 / (12 * 200 * 200))
    assert balanced is not None and abs(balanced - 0.5) < 4 * math.sqrt(0.25 / 200) / math.sqrt(2)
    assert len(judge.backend.requests) == 40  # type: ignore[attr-defined]


async def test_without_logprobs_auc_is_undefined_and_the_rest_is_computed() -> None:
    inputs = unit_inputs()
    truth = {s.text: s.target for s in scorer(ScriptedBackend(lambda r: Completion())).draw(inputs)}

    def answer(request: CompletionRequest) -> str:
        return "\n".join(f"{i}: {'yes' if truth[t] else 'no'}" for i, t in enumerate(excerpts_of(request), 1))

    backend = text_judge(answer, capabilities=frozenset({Capability.CHAT, Capability.TEXT_COMPLETION}))
    out = await scorer(backend).score(inputs)
    assert out.scores["detection_auc"]["all"] is None
    assert out.scores["detection_balanced_accuracy"]["all"] == 1.0
    assert out.scores["detection_precision"]["all"] == 1.0
    assert all(r.top_logprobs == 0 for r in backend.requests)


async def test_the_draw_repeats_for_a_seed_and_changes_with_it() -> None:
    judge = scorer(ScriptedBackend(lambda r: Completion()))
    first = [s.text for s in judge.draw(unit_inputs())]
    assert first == [s.text for s in judge.draw(unit_inputs())]
    assert first != [s.text for s in judge.draw(unit_inputs(seed=1))]


async def test_an_unreadable_prompt_leaves_its_excerpts_out_and_counts_them() -> None:
    def respond(request: CompletionRequest) -> Completion:
        texts = excerpts_of(request)
        if any(t.startswith("q3x") for t in texts):
            return Completion(choices=(verdicts_choice([0.5] * (len(texts) - 1)),))  # one line short
        return Completion(choices=(verdicts_choice([0.9] * len(texts)),))

    out = await scorer(ScriptedBackend(respond), n_per_quantile=2).score(unit_inputs())
    assert isinstance(out.result, ExplanationScores)
    unread = [e for e in out.result.examples if e.prediction is None]
    assert unread and out.scores["detection_unparsed"]["all"] == len(unread)
    assert out.scores["detection_recall"]["all"] == 1.0


@pytest.mark.parametrize(("inputs", "answer", "stage", "match"), [
    (unit_inputs(explanation="  "), "1: yes", "records", "explanation is empty"),
    (unit_inputs(n_random=0), "1: yes", "records", "no non-activating excerpts"),
    (unit_inputs(n_quantiles=1, per_quantile=0), "1: yes", "records", "no activating excerpts"),
    (unit_inputs(), "These all look like ordinary English sentences to me.", "parse", "no 'N: yes'"),
])
async def test_bad_inputs_fail_the_unit_with_a_reason(inputs: object, answer: str, stage: str, match: str) -> None:
    with pytest.raises(StageError, match=match) as caught:
        await scorer(text_judge(lambda r: answer)).score(inputs)  # type: ignore[arg-type]
    assert caught.value.stage == stage


async def test_fewer_excerpts_than_asked_fail_the_unit_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(StageError, match="activating excerpts in quantile_1: 2 of the 5 asked for") as caught:
        await scorer(yes_no_judge(lambda t: 0.9), n_per_quantile=5).score(unit_inputs(per_quantile=2))
    assert caught.value.stage == "records"
    with pytest.raises(StageError, match="non-activating excerpts: 4 of the 20 asked for"):
        await scorer(yes_no_judge(lambda t: 0.9), n_non_activating=20).score(unit_inputs(n_random=4))
    with pytest.raises(StageError, match="quantiles with activating excerpts: 2 of the 3 asked for"):
        await scorer(yes_no_judge(lambda t: 0.9), n_quantiles=3).score(unit_inputs(n_quantiles=2))
    judge = scorer(yes_no_judge(lambda t: 0.9), n_per_quantile=5, allow_fewer=True)
    out = await judge.score(unit_inputs(per_quantile=2))
    assert isinstance(out.result, ExplanationScores)
    assert sum(e.target == 1.0 for e in out.result.examples) == 6
    assert "activating excerpts in quantile_1: 2 of the 5 asked for; using those" in caplog.text


async def test_without_quantile_samples_the_top_excerpts_are_used(caplog: pytest.LogCaptureFixture) -> None:
    out = await scorer(yes_no_judge(lambda t: 0.9), n_per_quantile=3).score(unit_inputs(with_quantiles=False))
    assert set(out.scores["detection_recall"]) == {"all", "top"}
    assert "no quantile samples" in caplog.text


async def test_a_short_context_drops_worked_examples_then_moves_excerpts_to_more_prompts() -> None:
    roomy = yes_no_judge(lambda t: 0.9)
    await scorer(roomy, n_per_quantile=2, excerpts_per_prompt=12).score(unit_inputs())
    tight = yes_no_judge(lambda t: 0.9)
    tight.context_length = 260
    out = await scorer(tight, n_per_quantile=2, excerpts_per_prompt=12).score(unit_inputs())
    assert len(roomy.requests) == 2 and len(tight.requests) > 2
    assert all(r.messages is not None and len(r.messages) == 2 for r in tight.requests)  # no worked examples
    assert out.scores["detection_unparsed"]["all"] == 0.0
    tight.context_length = 120
    with pytest.raises(StageError, match="does not fit") as caught:
        await scorer(tight).score(unit_inputs())
    assert caught.value.stage == "prompt"


def test_options_are_checked_and_cost_is_estimated() -> None:
    with pytest.raises(ConfigError, match="excerpts_per_prompt"):
        DetectionOptions(excerpts_per_prompt=0)
    with pytest.raises(ConfigError, match="activation_threshold"):
        DetectionOptions(activation_threshold=1.0)
    estimate = SCORERS.get("detection").estimate(DetectionOptions(), ScoringShape(n_scoring=20, n_calibration=20,
                                                                                   excerpt_tokens=64))
    assert estimate.calls == 6 and estimate.prompt_tokens > 6 * 5 * 64 and estimate.completion_tokens == 6 * 28


@pytest.mark.parametrize("fmt", ["chat", "completion"])
def test_the_prompt_text_is_pinned(fmt: str) -> None:
    judge = scorer(ScriptedBackend(lambda r: Completion()), prompt_format=fmt, n_per_quantile=1,
                   n_non_activating=2)
    texts = [s.text for s in judge.draw(unit_inputs())]
    from neuroscribe.scorers.judging import render_request

    request = render_request(judge.build_prompt(" the word apple. ", texts, 2), fmt, 20, 0)
    text = request.prompt or "\n\n".join(f"[{m.role}]\n{m.content}" for m in request.messages or ())
    assert_golden(f"scorers/detection_{fmt}.txt", text)
