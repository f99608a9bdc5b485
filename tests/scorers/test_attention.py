"""The attention-head scorer against scripted simulators that answer from the truth, against it, or not at all:
which pairs it asks about, the ROC AUC it computes, the published result line it writes, and how it fails."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest

from neuroscribe import serialization
from neuroscribe.errors import BackendError, StageError
from neuroscribe.formatting import sparse_pair_record
from neuroscribe.llm.base import Choice, Completion, CompletionRequest, TokenLogprob
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.records import ScoringSet, TokenPairRecord, UnitId, UnitKind
from neuroscribe.results import AttentionSimulationResults
from neuroscribe.scorers import SCORERS, ScorerInput, ScorerOutput, create_scorer
from neuroscribe.scoring import roc_auc

UNIT = UnitId(4, 2, UnitKind.ATTENTION_HEAD)
EXPLANATION = "a repeated word back to its first occurrence"
_ASKED = re.compile(r"Excerpt: (.*)\nDoes the head link query (\d+) .* to key (\d+) ")


def excerpt(name: str, links: dict[tuple[int, int], float]) -> TokenPairRecord:
    """Six tokens with a unique first one, 0.5 on every pair but the given links (all below 0.1 x max 10)."""
    tokens = (f"{name}", " the", " cat", " saw", " the", " cat")
    record = sparse_pair_record(tokens, links)
    return TokenPairRecord(tokens=record.tokens, activations=[a or 0.5 for a in record.activations])


TOP = [excerpt("Top0", {(5, 2): 10.0, (4, 1): 6.0}), excerpt("Top1", {(5, 2): 9.0, (3, 3): 4.0}),
       excerpt("Top2", {(4, 1): 8.0})]
RANDOM = [excerpt("Rand0", {(2, 2): 3.0}), excerpt("Rand1", {})]


def inputs(seed: int = 0, unit: UnitId = UNIT, explanation: str = EXPLANATION) -> ScorerInput:
    return ScorerInput(unit=unit, explanation=explanation, max_activation=10.0, seed=seed,
                       token_pair_scoring=ScoringSet(top=list(TOP), random=list(RANDOM)))


def asked_pair(request: CompletionRequest) -> tuple[TokenPairRecord, int, int]:
    """The excerpt and the (query, key) the last question asks about."""
    question = (request.messages or ())[-1].content if request.messages else (request.prompt or "")
    match = list(_ASKED.finditer(question))[-1]
    first = match.group(1).split(" ")[0].strip("[]<>")
    (record,) = [r for r in [*TOP, *RANDOM] if r.tokens[0] == first]
    return record, int(match.group(2)) - 1, int(match.group(3)) - 1


def digits(p_one: float) -> Completion:
    top = (("1", math.log(p_one)), ("0", math.log(1 - p_one)))
    token = TokenLogprob(top[0][0], top[0][1], top)
    return Completion(choices=(Choice(text="1", logprobs=(token,)),))


def simulator(p_one: Callable[[float], float]) -> ScriptedBackend:
    """Answers each pair with P("1") = p_one(the pair's true activation)."""
    def respond(request: CompletionRequest) -> Completion:
        record, query, key = asked_pair(request)
        return digits(p_one(record.activation(query, key)))

    return ScriptedBackend(respond)


async def score(backend: ScriptedBackend, options: dict[str, object] | None = None, **kwargs: Any) -> ScorerOutput:
    return await create_scorer("attention_simulation", backend, options or {}).score(inputs(**kwargs))


async def test_a_truthful_simulator_scores_1_an_inverted_one_0_a_constant_one_half() -> None:
    assert SCORERS.get("attention_simulation").needs_explanation
    truthful = await score(simulator(lambda a: 0.9 if a >= 1 else 0.2))
    assert truthful.headline == "roc_auc" and truthful.scores["roc_auc"] == {"all": 1.0}
    assert truthful.scores["p_strong"] == {"strong_pairs": pytest.approx(0.9), "weak_pairs": pytest.approx(0.2)}
    assert truthful.scores["unparsed_pairs"] == {"all": 0.0}
    inverted = await score(simulator(lambda a: 0.1 if a >= 1 else 0.8))
    assert inverted.scores["roc_auc"] == {"all": 0.0}
    constant = await score(simulator(lambda a: 0.6))
    assert constant.scores["roc_auc"] == {"all": 0.5}


async def test_asks_each_top_excerpts_strongest_pairs_and_seeded_weak_pairs() -> None:
    backend = simulator(lambda a: 0.5)
    output = await score(backend, {"strong_per_excerpt": 2, "n_weak": 6})
    assert isinstance(output.result, AttentionSimulationResults)
    (scored,) = output.result.scored_explanations
    asked = scored.scored_attention_simulation.attention_simulations
    strong = [(s.tokens[0], s.token_pair_coords) for s in asked if s.token_pair_label == 1]
    # each top excerpt's two strongest pairs, as long as they reach 0.1 x max (Top2 has only one)
    assert strong == [("Top0", (5, 2)), ("Top0", (4, 1)), ("Top1", (5, 2)), ("Top1", (3, 3)), ("Top2", (4, 1))]
    weak = [s for s in asked if s.token_pair_label == 0]
    assert len(weak) == 6 and len(backend.requests) == 11
    by_name = {r.tokens[0]: r for r in [*TOP, *RANDOM]}
    assert all(by_name[s.tokens[0]].activation(*s.token_pair_coords) < 1.0 for s in weak)
    again = await score(simulator(lambda a: 0.5), {"strong_per_excerpt": 2, "n_weak": 6})
    other_unit = await score(simulator(lambda a: 0.5), {"strong_per_excerpt": 2, "n_weak": 6},
                             unit=UnitId(4, 3, UnitKind.ATTENTION_HEAD))

    def weak_of(result: object) -> list[object]:
        assert isinstance(result, AttentionSimulationResults)
        asked = result.scored_explanations[0].scored_attention_simulation.attention_simulations
        return [(s.tokens[0], s.token_pair_coords) for s in asked if not s.token_pair_label]

    assert weak_of(again.result) == weak_of(output.result) != weak_of(other_unit.result)


async def test_the_published_result_line_round_trips_and_recomputes_the_score() -> None:
    output = await score(simulator(lambda a: min(0.95, 0.05 + a / 10) if a != 0.5 else 0.3))
    line = serialization.dumps(output.result)
    assert '"dataclass_name": "AttentionSimulationResults"' in line and '"attention_head_id"' in line
    read = serialization.result_from_json_obj(serialization.parse(line, "line"), "line")
    assert read == output.result and isinstance(read, AttentionSimulationResults)
    assert read.neuron_id.layer_index == 4 and read.neuron_id.neuron_index == 2
    simulation = read.scored_explanations[0].scored_attention_simulation
    assert isinstance(simulation.attention_simulations[0].token_pair_coords, tuple)
    labels = [s.token_pair_label for s in simulation.attention_simulations]
    recomputed = roc_auc(labels, [s.simulation_prediction for s in simulation.attention_simulations]).value
    assert simulation.roc_auc_score == recomputed == output.scores["roc_auc"]["all"]
    older = line.replace('"attention_head_id"', '"attention_id"')  # the reference's earlier field name
    assert serialization.result_from_json_obj(serialization.parse(older, "old"), "old") == read


async def test_unreadable_answers_are_left_out_and_counted_never_guessed() -> None:
    def respond(request: CompletionRequest) -> Completion:
        record, query, key = asked_pair(request)
        if record.tokens[0] == "Top1":
            token = TokenLogprob("The", -0.1, (("The", -0.1), ("It", -2.5)))
            return Completion(choices=(Choice(text="The", logprobs=(token,)),))
        return digits(0.9 if record.activation(query, key) >= 1 else 0.1)

    output = await score(ScriptedBackend(respond), {"n_weak": 8})
    assert isinstance(output.result, AttentionSimulationResults)
    kept = output.result.scored_explanations[0].scored_attention_simulation.attention_simulations
    unparsed = output.scores["unparsed_pairs"]["all"]
    assert unparsed is not None and unparsed >= 1 and len(kept) == 3 + 8 - unparsed
    assert all(s.tokens[0] != "Top1" for s in kept) and output.scores["roc_auc"] == {"all": 1.0}
    with pytest.raises(StageError) as nothing_read:
        await score(ScriptedBackend(lambda r: Completion(choices=(Choice(text="?"),))))
    assert nothing_read.value.stage == "parse" and "no logprobs" in str(nothing_read.value)


async def test_failures_fail_the_unit_at_their_stage() -> None:
    def down(request: CompletionRequest) -> Completion:
        raise BackendError("connection refused")

    with pytest.raises(StageError) as backend_down:
        await score(ScriptedBackend(down))
    assert backend_down.value.stage == "simulate" and "connection refused" in str(backend_down.value)
    with pytest.raises(StageError, match="99 pairs below 1, 100 weak pairs") as short:
        await score(simulator(lambda a: 0.5), {"n_weak": 100})
    assert short.value.stage == "records"
    with pytest.raises(StageError, match="explanation is empty"):
        await score(simulator(lambda a: 0.5), explanation=" ")
    quiet = ScorerInput(unit=UNIT, explanation=EXPLANATION, max_activation=0.0,
                        token_pair_scoring=ScoringSet(top=[excerpt("Top0", {})], random=[]))
    with pytest.raises(StageError, match="no pair of the top excerpts activates above 0"):
        await create_scorer("attention_simulation", simulator(lambda a: 0.5), {}).score(quiet)
    with pytest.raises(Exception, match="weak_threshold must be in"):
        create_scorer("attention_simulation", simulator(lambda a: 0.5), {"weak_threshold": 0.0})
