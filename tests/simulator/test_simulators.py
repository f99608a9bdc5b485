"""Prompt building and answer reading of the simulators, against a scripted backend."""

from __future__ import annotations

import json
import math

import pytest

from golden import assert_golden
from neuroscribe.errors import BackendError, CapabilityError, ConfigError, ParseError
from neuroscribe.llm.base import Capability, Choice, Completion, CompletionRequest, TokenLogprob
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.results import ActivationScale
from neuroscribe.simulator import SIMULATORS, create_simulator
from neuroscribe.simulator.json_simulator import parse_answer

ADVERSARIAL = ["\t", "\n", " \t\n", "\ufffd", "\ufffd", "\xf0\x9f", "\x98\x80", "😀", "<start>", "unknown", "",
               " Paris", "10"]
"""Tab, newline, mixed blanks, an emoji split over bytes (as decoded replacement characters and as
raw byte characters), a whole emoji, our own markers, an empty token, a word, a number."""


def one_hot_distributions(values: list[int]) -> object:
    def respond(request: CompletionRequest) -> Completion:
        assert request.distributions is not None
        n_slots = sum(s.read_distribution for s in request.distributions.segments)
        assert n_slots == len(values)
        rows = tuple(tuple(0.9 if str(v) == c else 0.01 for c in request.distributions.candidates) for v in values)
        return Completion(distributions=rows)

    return respond


async def test_all_at_once_reads_one_slot_per_token_in_order() -> None:
    values = [3, 0, 10, 7, 1, 6, 6, 8, 0, 2, 9, 5, 4]
    backend = ScriptedBackend(one_hot_distributions(values))  # type: ignore[arg-type]
    simulation = await create_simulator("all_at_once", backend, {}).simulate("cities", ADVERSARIAL)
    assert simulation.tokens == ADVERSARIAL
    assert simulation.activation_scale is ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
    for value, expected, probabilities in zip(values, simulation.expected_activations,
                                              simulation.distribution_probabilities, strict=True):
        assert math.isclose(sum(probabilities), 1.0)
        assert probabilities[value] == max(probabilities)
        assert math.isclose(expected, (0.9 * value + 0.01 * (55 - value)) / 1.0)
    assert simulation.distribution_values[0] == [float(v) for v in range(11)]

    request = backend.requests[0].distributions
    assert request is not None and request.candidates == tuple(str(v) for v in range(11))
    segments = request.segments
    reads = [i for i, s in enumerate(segments) if s.read_distribution]
    assert len(reads) == len(ADVERSARIAL)
    for i, token in zip(reads, ADVERSARIAL, strict=True):
        assert segments[i].text == "unknown"
        rendered = token.replace("\t", "\\t").replace("\n", "\\n")
        assert segments[i - 1].text.endswith(f"{rendered}\t")
    text = "".join(s.text for s in segments)
    assert_golden("simulator/all_at_once.txt", text)


async def test_all_at_once_refuses_backends_without_prompt_distributions() -> None:
    backend = ScriptedBackend(lambda r: Completion(), capabilities=frozenset({Capability.CHAT}))
    with pytest.raises(CapabilityError, match="one_at_a_time"):
        create_simulator("all_at_once", backend, {})


async def test_all_at_once_rejects_misaligned_or_empty_answers() -> None:
    backend = ScriptedBackend(lambda r: Completion(distributions=((1.0,) * 11,)))
    with pytest.raises(BackendError, match="returned 1 distributions for 2 marked tokens"):
        await create_simulator("all_at_once", backend, {}).simulate("x", ["a", "b"])
    backend = ScriptedBackend(lambda r: Completion(distributions=((0.0,) * 11,)))
    with pytest.raises(BackendError, match="no probability"):
        await create_simulator("all_at_once", backend, {}).simulate("x", ["a"])
    n_requests = len(backend.requests)
    empty = await create_simulator("all_at_once", backend, {}).simulate("x", [])
    assert empty.expected_activations == [] and len(backend.requests) == n_requests


def generated(*alternatives: tuple[str, float], blank_first: bool = False) -> Completion:
    top = tuple((token, math.log(p)) for token, p in alternatives)
    tokens = (TokenLogprob(top[0][0], top[0][1], top),)
    if blank_first:
        tokens = (TokenLogprob(" ", -0.01, ((" ", -0.01),)), *tokens)
    return Completion(choices=(Choice(text="".join(t.token for t in tokens), logprobs=tokens),))


async def test_one_at_a_time_reads_top_logprobs_with_a_shared_prefix() -> None:
    def respond(request: CompletionRequest) -> Completion:
        assert request.top_logprobs == 20 and request.sampling.max_tokens == 3
        return generated(("8", 0.5), (" 2", 0.25), ("unknown", 0.2), ("2", 0.05), blank_first=True)

    backend = ScriptedBackend(respond)
    tokens = ["The", " cat", "\n"]
    simulation = await create_simulator("one_at_a_time", backend, {}).simulate("cats", tokens)
    assert simulation.expected_activations == pytest.approx([(8 * 0.5 + 2 * 0.3) / 0.8] * 3)
    assert simulation.distribution_probabilities[0][8] == pytest.approx(0.5 / 0.8)
    prompts = [r.messages for r in backend.requests]
    assert all(p is not None for p in prompts)
    users = [p[-1].content for p in prompts if p is not None]
    shared = users[0][: users[0].index("What is the activation")]
    assert all(u.startswith(shared) for u in users) and len({*users}) == 3
    assert "'\\\\n'?" in users[2]
    assert_golden("simulator/one_at_a_time_chat.txt", "\n".join(f"=== {m.role}\n{m.content}" for m in prompts[1] or ()))


async def test_one_at_a_time_completion_format_and_failures() -> None:
    backend = ScriptedBackend(lambda r: generated(("The", 0.9), ("It", 0.1)))
    simulator = create_simulator("one_at_a_time", backend, {"prompt_format": "completion"})
    with pytest.raises(ParseError, match="no value 0-10 among the top 2"):
        await simulator.simulate("x", ["a"])
    assert backend.requests[0].prompt is not None and backend.requests[0].prompt.endswith("\nAnswer:")
    no_logprobs = ScriptedBackend(lambda r: generated(("1", 1.0)), capabilities=frozenset({Capability.CHAT}))
    with pytest.raises(CapabilityError, match="json"):
        create_simulator("one_at_a_time", no_logprobs, {})


def answering(text: str) -> ScriptedBackend:
    return ScriptedBackend(lambda r: Completion(choices=(Choice(text=text),)))


async def test_json_simulator_uses_a_schema_when_supported() -> None:
    answer = json.dumps({"activations": [["I", 0], [" ran", 6]]})
    backend = answering(f"Sure!\n```json\n{answer}\n```")
    simulation = await create_simulator("json", backend, {}).simulate("running", ["I", " ran"])
    assert simulation.expected_activations == [0.0, 6.0]
    request = backend.requests[0]
    assert request.json_schema is not None
    assert json.loads(request.json_schema)["properties"]["activations"]["maxItems"] == 2
    assert request.messages is not None
    assert_golden("simulator/json_chat.txt", "\n".join(f"=== {m.role}\n{m.content}" for m in request.messages))
    no_schema = answering(answer)
    no_schema.capabilities = frozenset({Capability.TEXT_COMPLETION})
    await create_simulator("json", no_schema, {}).simulate("running", ["I", " ran"])
    assert no_schema.requests[0].json_schema is None and no_schema.requests[0].prompt is not None


@pytest.mark.parametrize(
    ("answer", "expected", "repaired"),
    [
        ('[["a", 1], ["b", 2], ["c", 3]]', [1, 2, 3], False),
        ("[1, 2, 3]", [1, 2, 3], False),
        ('[[" a", 1], ["b ", 2], ["c", 3]]', [1, 2, 3], False),  # spaces around a copied token do not matter
        ('{"values": [{"token": "a", "value": 4}, {"token": "b", "value": 0}, {"token": "c", "value": 5}]}',
         [4, 0, 5], False),
        # one token skipped: re-aligned by text, the missing one set to 0
        ('[["a", 1], ["c", 3], ["d", 4], ["e", 5], ["f", 6]]', [1, 0, 3, 4, 5, 6], True),
        # a model that never closes the list (what small models do): complete pairs read, the excess dropped
        ('{"activations": [["a", 1], ["b", 2], ["c", 3], ["a", 0], ["b", 0], ["c', [1, 2, 3], True),
    ],
)
def test_json_answers_in_common_shapes_are_read_and_repaired(answer: str, expected: list[int], repaired: bool) -> None:
    tokens = ["a", "b", "c"] if len(expected) == 3 else ["a", "b", "c", "d", "e", "f"]
    values, notes = parse_answer(answer, tokens, min_token_match=0.8)
    assert values == [float(v) for v in expected]
    assert bool(notes) == repaired


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("I cannot do that.", "no JSON"),
        ('{"activations": [1, 2', "not valid JSON"),
        ('[["a", 11], ["b", 0], ["c", 0]]', "outside 0..10"),
        ('[["a", "high"], ["b", 0], ["c", 0]]', "no numeric activation"),
        ('[["x", 1], ["y", 2], ["z", 3]]', "only 0 match"),
        ('{"note": "none"}', "no list of activations"),
    ],
)
def test_bad_json_answers_are_rejected(answer: str, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_answer(answer, ["a", "b", "c"], min_token_match=0.8)
    assert info.value.raw_text == answer


async def test_all_zero_json_answer_is_a_prediction_and_no_values_is_not() -> None:
    zeros = await create_simulator("json", answering("[0, 0]"), {}).simulate("x", ["a", "b"])
    assert zeros.expected_activations == [0.0, 0.0]
    with pytest.raises(ParseError):
        await create_simulator("json", answering("[]"), {}).simulate("x", ["a", "b"])
    with pytest.raises(ConfigError, match="reject_all_zero"):  # the option is gone, not silently ignored
        create_simulator("json", answering("[0, 0]"), {"reject_all_zero": True})


def test_simulator_options_are_validated() -> None:
    backend = answering("[1]")
    with pytest.raises(ConfigError, match=r"unknown option 'top_logprob'.*Did you mean 'top_logprobs'"):
        create_simulator("one_at_a_time", backend, {"top_logprob": 5})
    with pytest.raises(ConfigError, match=r"n_worked_examples must be in 0\.\.3"):
        create_simulator("all_at_once", backend, {"n_worked_examples": 9})
    with pytest.raises(ConfigError, match="Did you mean 'json'"):
        create_simulator("jsn", backend, {})
    assert SIMULATORS.names() == [
        "all_at_once", "embedding", "generated_logprobs", "json", "lexical", "one_at_a_time", "trained"]
