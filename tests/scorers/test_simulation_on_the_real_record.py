"""The `simulation` scorer on the real GPT-2 XL record 1/1 with backends that answer the truth.

Most of this sparse unit's random excerpts are all zero on the 0-10 scale, so a simulator that knows the
truth answers all zeros there: that is a prediction, and the unit must be scored, by every simulator.
A truth mapped affinely onto 0..10 (so nothing is lost) must score an ev-correlation of 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from neuroscribe.formatting import render_token
from neuroscribe.llm.base import Choice, Completion, CompletionRequest, TokenLogprob
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.records import (
    ActivationRecord,
    NeuronRecord,
    ScoringSet,
    SliceParams,
    UnitId,
    normalize_activations,
    random_split,
    top_split,
)
from neuroscribe.results import NeuronSimulationResults, ScoredSequenceSimulation
from neuroscribe.scorers import ScorerInput, create_scorer
from neuroscribe.scorers.base import ScorerOutput
from neuroscribe.scoring import score_sequences
from neuroscribe.serialization import load_json_file

Truth = Callable[[Sequence[float]], list[float]]
"""True activations of one excerpt -> the values 0..10 a truthful simulator predicts."""


def last_excerpt(text: str) -> tuple[str, ...]:
    """The rendered tokens of the final <start>..<end> block (`token` or `token<TAB>unknown` lines)."""
    block = text[text.rindex("<start>\n") + len("<start>\n"):]
    block = block[: block.index("\n<end>")]
    return tuple(line.removesuffix("\tunknown") for line in block.split("\n"))


def distribution(value: float) -> dict[int, float]:
    """Probabilities over 0..10 whose expected value is exactly `value`."""
    low = min(math.floor(value), 9)
    return {v: p for v, p in ((low, low + 1 - value), (low + 1, value - low)) if p > 0}


class Truthful:
    """Answers every simulator's request with `truth` of the excerpt it asks about."""

    def __init__(self, records: Sequence[ActivationRecord], truth: Truth) -> None:
        self.by_raw = {tuple(r.tokens): truth(r.activations) for r in records}
        self.by_rendered = {tuple(render_token(t) for t in r.tokens): v for r, v in zip(
            records, self.by_raw.values(), strict=True)}

    def __call__(self, request: CompletionRequest) -> Completion:
        if request.distributions is not None:  # all at once: a distribution at every marked slot
            segments = request.distributions.segments
            rendered = tuple(segments[i - 1].text.rsplit("\n", 1)[-1].removesuffix("\t")
                             for i, s in enumerate(segments) if s.read_distribution)
            candidates = request.distributions.candidates
            return Completion(distributions=tuple(
                tuple(distribution(v).get(int(c), 0.0) for c in candidates) for v in self.by_rendered[rendered]))
        text = request.messages[-1].content if request.messages is not None else request.prompt or ""
        if "What is the activation on token " in text:  # one at a time: the value of token i, as top logprobs
            position = int(text.rsplit("What is the activation on token ", 1)[1].split(" of ", 1)[0])
            value = self.by_rendered[last_excerpt(text)][position - 1]
            top = tuple((str(v), math.log(p)) for v, p in sorted(distribution(value).items(), key=lambda a: -a[1]))
            return Completion(choices=(Choice(text=top[0][0], logprobs=(TokenLogprob(top[0][0], top[0][1], top),)),))
        tokens = tuple(json.loads(text.rsplit("Tokens: ", 1)[1].split("\n", 1)[0]))  # json: pairs with the values
        answer = {"activations": [[t, v] for t, v in zip(tokens, self.by_raw[tokens], strict=True)]}
        return Completion(choices=(Choice(text=json.dumps(answer)),))


@pytest.fixture(scope="module")
def scoring(real_record_path: Path) -> tuple[ScoringSet, float]:
    record = load_json_file(real_record_path, NeuronRecord)
    params = SliceParams(n_examples_per_split=5)
    scored = ScoringSet(top=top_split(record, "valid", params), random=random_split(record, "valid", params))
    return scored, max(r.max_activation for r in record.most_positive_activation_records)


def paper_scale(max_activation: float) -> Truth:
    return lambda activations: [float(v) for v in normalize_activations(activations, max_activation)]


def affine_scale(records: Sequence[ActivationRecord]) -> Truth:
    low = min(min(r.activations) for r in records)
    high = max(max(r.activations) for r in records)
    return lambda activations: [10.0 * (a - low) / (high - low) for a in activations]


def sequences(output: ScorerOutput) -> list[ScoredSequenceSimulation]:
    assert isinstance(output.result, NeuronSimulationResults)
    return output.result.scored_explanations[0].scored_simulation.scored_sequence_simulations


SIMULATORS = {"all_at_once": {}, "one_at_a_time": {"n_worked_examples": 0}, "json": {}}


@pytest.mark.parametrize("simulator", list(SIMULATORS))
async def test_the_truth_on_the_paper_scale_scores_the_unit_even_with_all_zero_excerpts(
        simulator: str, scoring: tuple[ScoringSet, float]) -> None:
    scored, max_activation = scoring
    truth = paper_scale(max_activation)
    all_zero = [r for r in scored.random if not any(truth(r.activations))]
    assert len(all_zero) >= 3  # the situation this test is about (4 of 5 on record 1/1)
    backend = ScriptedBackend(Truthful(scored.all, truth))
    scorer = create_scorer("simulation", backend, {"simulator": simulator, "simulator_options": SIMULATORS[simulator]})
    output = await scorer.score(ScorerInput(unit=UnitId(1, 1), explanation="x", scoring=scored,
                                            max_activation=max_activation))
    simulated = sequences(output)
    for sequence, record in zip(simulated, scored.all, strict=True):
        assert sequence.simulation.expected_activations == pytest.approx(truth(record.activations))
        assert sequence.true_activations == record.activations
    expected = score_sequences([(s.simulation, s.true_activations) for s in simulated])
    assert output.scores["ev_correlation"]["top_and_random"] == pytest.approx(expected.ev_correlation_score)
    assert output.scores["ev_correlation"]["top_and_random"] > 0.9


@pytest.mark.parametrize("simulator", list(SIMULATORS))
async def test_the_truth_without_loss_scores_an_ev_correlation_of_one(
        simulator: str, scoring: tuple[ScoringSet, float]) -> None:
    scored, max_activation = scoring
    backend = ScriptedBackend(Truthful(scored.all, affine_scale(scored.all)))
    scorer = create_scorer("simulation", backend, {"simulator": simulator, "simulator_options": SIMULATORS[simulator]})
    output = await scorer.score(ScorerInput(unit=UnitId(1, 1), explanation="x", scoring=scored,
                                            max_activation=max_activation))
    for variant in ("top_and_random", "top_only", "random_only"):
        assert output.scores["ev_correlation"][variant] == pytest.approx(1.0, abs=1e-9), variant


async def test_calibration_flipping_an_anticorrelated_explanation_is_shown(
        scoring: tuple[ScoringSet, float], real_record_path: Path) -> None:
    """A simulator exactly wrong (10 minus the truth) scores -1; linear calibration fits a negative slope and
    turns it into +1, so the uncalibrated scores and the slope are kept beside the calibrated ones."""
    scored, max_activation = scoring
    record = load_json_file(real_record_path, NeuronRecord)
    params = SliceParams(n_examples_per_split=5)
    calibration = ScoringSet(top=top_split(record, "calibration", params),
                             random=random_split(record, "calibration", params))
    lossless = affine_scale([*scored.all, *calibration.all])
    backend = ScriptedBackend(Truthful([*scored.all, *calibration.all],
                                       lambda activations: [10.0 - v for v in lossless(activations)]))
    scorer = create_scorer("simulation", backend, {"simulator": "all_at_once", "calibration": "linear"})
    output = await scorer.score(ScorerInput(unit=UnitId(1, 1), explanation="x", scoring=scored,
                                            calibration=calibration, max_activation=max_activation))
    assert output.calibrated
    assert output.scores["ev_correlation"]["top_and_random"] == pytest.approx(1.0, abs=1e-9)
    assert output.scores["uncalibrated_ev_correlation"]["top_and_random"] == pytest.approx(-1.0, abs=1e-9)
    assert output.scores["calibration_slope"]["all"] is not None and output.scores["calibration_slope"]["all"] < 0
    assert set(output.scores["uncalibrated_rsquared"]) == {"top_and_random", "top_only", "random_only"}
    assert isinstance(output.result, NeuronSimulationResults)
    for sequence, record in zip(output.result.scored_explanations[0].scored_simulation.scored_sequence_simulations,
                                scored.all, strict=True):  # the uncalibrated simulation is stored with each
        raw = sequence.simulation.uncalibrated_simulation
        assert raw is not None and raw.expected_activations == pytest.approx([10.0 - v for v in lossless(
            record.activations)])
    plain = await create_scorer("simulation", backend, {"simulator": "all_at_once"}).score(
        ScorerInput(unit=UnitId(1, 1), explanation="x", scoring=scored, max_activation=max_activation))
    assert not any(name.startswith("uncalibrated_") or name == "calibration_slope" for name in plain.scores)
