"""The generated-logprobs simulator against a scripted backend: prompts, reading values, alignment, batching."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence

import pytest

from golden import assert_golden
from neuroscribe.errors import CapabilityError, ConfigError, DataError, ParseError
from neuroscribe.llm.base import Capability, Choice, Completion, CompletionRequest, TokenLogprob
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.scorers.base import ScoringShape
from neuroscribe.scorers.simulation import SimulationOptions, SimulationScorer
from neuroscribe.scoring import score_sequences
from neuroscribe.simulator import SIMULATORS, create_simulator
from neuroscribe.simulator.generated_logprobs import (
    GeneratedLogprobsOptions,
    GeneratedLogprobsSimulator,
    align,
    build_request,
    prompt_tokens,
)

NAME = "generated_logprobs"
ADVERSARIAL = ["\t", "\n", " \t\n", "\ufffd", "😀", "<start>", "<end>", "unknown", "", " Paris", "10", " of", " the"]
TRUTH = [0, 3, 10, 0, 7, 1, 4, 0, 10, 9, 2, 0, 5]

Alternatives = Mapping[str, float]
"""A generated token's top alternatives as probabilities; the generated token is the most likely one."""


def piece(text: str, alternatives: Alternatives | None = None) -> TokenLogprob:
    alternatives = alternatives or {text: 1.0}
    top = tuple(sorted(((t, math.log(p)) for t, p in alternatives.items()), key=lambda a: -a[1]))
    return TokenLogprob(text, math.log(alternatives.get(text, 1.0)), top)


def value_pieces(value: int, *, split_digits: bool = True) -> list[TokenLogprob]:
    """A certain value, as a digit-splitting tokenizer (SmolLM2, Llama) writes it: "10" is "1" then "0"."""
    if value == 10 and split_digits:
        return [piece("1"), piece("0")]
    return [piece(str(value))]


def line(rendered: str, values: Sequence[TokenLogprob]) -> list[TokenLogprob]:
    return [piece(rendered), piece("\t"), *values, piece("\n")]


def reply(pieces: Sequence[TokenLogprob]) -> Completion:
    return Completion(choices=(Choice(text="".join(p.token for p in pieces), logprobs=tuple(pieces)),))


def asked_excerpts(request: CompletionRequest) -> list[list[str]]:
    """The excerpts of the final question, as the rendered tokens a model would copy."""
    text = request.messages[-1].content if request.messages is not None else request.prompt or ""
    question = text[text.rindex("Explanation:"):].split("\nAnswer:")[0]
    excerpts: list[list[str]] = []
    for block in question.split("<start>\n")[1:]:
        body = re.split(r"\n<end>(?:\n|$)", block)[0]  # a token "<end>" is followed by a tab
        excerpts.append([row.rsplit("\t", 1)[0] for row in body.split("\n")])
    return excerpts


def writing(values_of: Callable[[list[str]], Sequence[int]], *, split_digits: bool = True) -> Callable[
        [CompletionRequest], Completion]:
    """A model that copies every asked excerpt and writes `values_of(rendered tokens)` with certainty."""
    def respond(request: CompletionRequest) -> Completion:
        pieces = []
        for rendered in asked_excerpts(request):
            pieces += [piece("<start>"), piece("\n")]
            for token, value in zip(rendered, values_of(rendered), strict=True):
                pieces += line(token, value_pieces(value, split_digits=split_digits))
            pieces += [piece("<end>"), piece("\n\n")]
        return reply(pieces)

    return respond


def simulator(backend: ScriptedBackend, **options: object) -> GeneratedLogprobsSimulator:
    built = create_simulator(NAME, backend, options)
    assert isinstance(built, GeneratedLogprobsSimulator)
    return built


@pytest.mark.parametrize("split_digits", [True, False])
async def test_certain_true_values_read_back_exactly_and_score_perfectly(split_digits: bool) -> None:
    backend = ScriptedBackend(writing(lambda rendered: TRUTH, split_digits=split_digits))
    simulation = await simulator(backend).simulate("cities", ADVERSARIAL)
    assert simulation.tokens == ADVERSARIAL
    assert simulation.activation_scale is ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
    assert simulation.expected_activations == pytest.approx([float(v) for v in TRUTH])
    assert simulation.distribution_values[0] == [float(v) for v in range(11)]
    assert all(row[v] == pytest.approx(1.0) for row, v in zip(simulation.distribution_probabilities, TRUTH,
                                                              strict=True))
    scored = score_sequences([(simulation, [float(v) for v in TRUTH])])
    assert scored.ev_correlation_score == pytest.approx(1.0)

    request = backend.requests[0]
    assert len(backend.requests) == 1 and request.top_logprobs == 20
    assert request.sampling.temperature == 0.0 and request.sampling.stop == ("\n<end>\n",)
    assert request.sampling.max_tokens == 16 + 10 * len(ADVERSARIAL)
    assert request.messages is not None and [m.role for m in request.messages] == [
        "system", "user", "assistant", "user", "assistant", "user"]
    assert_golden("simulator/generated_logprobs_chat.txt",
                  "\n".join(f"=== {m.role}\n{m.content}" for m in request.messages))


async def one_line(values: Sequence[TokenLogprob], **options: object) -> SequenceSimulation:
    backend = ScriptedBackend(lambda r: reply(line("a", values)))
    return await simulator(backend, **options).simulate("x", ["a"])


async def test_split_ten_reads_the_next_positions_distribution() -> None:
    # "1" (0.8) or "2" (0.2); after "1": "0" (0.75) or end of line (0.25): P(10)=0.6, P(1)=0.2, P(2)=0.2
    simulation = await one_line([piece("1", {"1": 0.8, "2": 0.2}), piece("0", {"0": 0.75, "\n": 0.25})])
    row = simulation.distribution_probabilities[0]
    assert row[10] == pytest.approx(0.6) and row[1] == pytest.approx(0.2) and row[2] == pytest.approx(0.2)
    assert simulation.expected_activations == pytest.approx([6.0 + 0.2 + 0.4])
    # a written 1 whose next position still considered "0" (10) and another digit (1x, not a value: dropped)
    simulation = await one_line([piece("1", {"1": 1.0}), piece("\n", {"\n": 0.7, "0": 0.2, "5": 0.1})])
    row = simulation.distribution_probabilities[0]
    assert row[1] == pytest.approx(0.7 / 0.9) and row[10] == pytest.approx(0.2 / 0.9)


async def test_spread_distributions_renormalize_over_the_values() -> None:
    simulation = await one_line([piece("3", {"3": 0.5, "7": 0.3, "unknown": 0.15, "high": 0.05})])
    assert simulation.expected_activations == pytest.approx([(3 * 0.5 + 7 * 0.3) / 0.8])
    assert sum(simulation.distribution_probabilities[0]) == pytest.approx(1.0)
    # a tokenizer with a "10" token: read directly; an unchosen "1" (its continuation unknown) counts as 1
    simulation = await one_line([piece("10", {"10": 0.6, "1": 0.3, "9": 0.1})])
    assert simulation.expected_activations == pytest.approx([6.0 + 0.3 + 0.9])
    # a value merged with its tab or a space ("\t5", " 5"): alternatives are read after the same prefix
    backend = ScriptedBackend(lambda r: reply([piece("a"), piece("\t5", {"\t5": 0.5, "\t4": 0.5, "\t": 0.2}),
                                               piece("\n")]))
    merged = await simulator(backend).simulate("x", ["a"])
    assert merged.expected_activations == pytest.approx([4.5])


async def test_value_position_without_any_value_alternative_falls_back_to_the_written_value(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    simulation = await one_line([TokenLogprob("4", float("-inf"), (("4", float("-inf")), ("four", -0.1)))])
    assert simulation.expected_activations == [4.0]
    assert "used the generated value 4" in caplog.text


def tokens_and_reply(n: int, dropped: set[int], values: Sequence[int] | None = None) -> tuple[list[str], Completion]:
    tokens = [f" w{i}" for i in range(n)]
    values = values or [i % 11 for i in range(n)]
    pieces = [piece("<start>"), piece("\n")]
    for i, token in enumerate(tokens):
        if i not in dropped:
            pieces += line(token.strip(), value_pieces(values[i]))  # models often drop the leading space
    return tokens, reply(pieces)


async def test_missing_tokens_within_the_tolerance_align_beyond_it_fail() -> None:
    tokens, within = tokens_and_reply(10, {3, 7})
    simulation = await simulator(ScriptedBackend(lambda r: within)).simulate("x", tokens)
    assert simulation.expected_activations == pytest.approx([0, 1, 2, 0, 4, 5, 6, 0, 8, 9])
    tokens, beyond = tokens_and_reply(10, {2, 3, 7})
    with pytest.raises(ParseError, match=r"3 missing, rewritten or extra \(at most 2") as info:
        await simulator(ScriptedBackend(lambda r: beyond)).simulate("x", tokens)
    assert info.value.raw_text == beyond.text
    relaxed = await simulator(ScriptedBackend(lambda r: beyond), alignment_tolerance=0.3).simulate("x", tokens)
    assert relaxed.expected_activations[2] == 0.0 and relaxed.expected_activations[4] == 4.0


def test_alignment_handles_merged_rewritten_and_extra_tokens() -> None:
    # merged: " New" + " York" answered as one line, both take it; nothing counts against the tolerance
    merged = align([[" in", " New", " York", "."]], ["in", "New York", "."])
    assert merged.lines == [[0], [1], [1], [2]] and merged.misfits == [0]
    # split: one excerpt token answered as two lines takes both
    split = align([["a", "bcd", "e"]], ["a", "bc", "d", "e"])
    assert split.lines == [[0], [1, 2], [3]] and split.misfits == [0]
    # rewritten in place: paired in order, but counted; extra lines inside count, lines around do not
    rewritten = align([["a", "b", "c", "d"]], ["x", "a", "B?", "c", "junk", "d", "y"])
    assert rewritten.lines == [[1], [2], [3], [5]] and rewritten.misfits == [2]
    # the escaped rendering of a newline and a tab is what the model copies
    assert align([["\n", "\t", " "]], ["\\n", "\\t", ""]).misfits == [0]


async def test_prose_or_missing_logprobs_is_a_parse_error() -> None:
    prose = "This neuron would fire on cities, so Paris gets a high value."
    backend = ScriptedBackend(lambda r: reply([piece(prose)]))
    with pytest.raises(ParseError, match="no token<TAB>value lines") as info:
        await simulator(backend).simulate("x", ["Paris"])
    assert info.value.raw_text == prose
    no_logprobs = ScriptedBackend(lambda r: Completion(choices=(Choice(text="Paris\t9"),)))
    with pytest.raises(ParseError, match="no logprobs"):
        await simulator(no_logprobs).simulate("x", ["Paris"])
    unknown = ScriptedBackend(lambda r: reply(line("Paris", [piece("unknown")])))
    with pytest.raises(ParseError, match="no token<TAB>value lines"):
        await simulator(unknown).simulate("x", ["Paris"])
    nothing = ScriptedBackend(lambda r: Completion())
    with pytest.raises(ParseError, match="no answer"):
        await simulator(nothing).simulate("x", ["Paris"])


def by_first_token(rendered: list[str]) -> list[int]:
    offset = int(rendered[0].strip()[1:])
    return [(offset + i) % 11 for i in range(len(rendered))]


async def test_several_excerpts_per_request_split_back_to_their_callers() -> None:
    backend = ScriptedBackend(writing(by_first_token))
    excerpts = [[f" e{k}", f" t{k}a", f" t{k}b", "\n"] for k in range(5)]
    sim = simulator(backend, excerpts_per_request=2, prompt_format="completion")
    simulations = await asyncio.gather(*(sim.simulate("x", tokens) for tokens in excerpts))
    assert len(backend.requests) == 3
    assert [len(asked_excerpts(r)) for r in backend.requests] == [2, 2, 1]
    for k, (tokens, simulation) in enumerate(zip(excerpts, simulations, strict=True)):
        assert simulation.tokens == tokens
        assert simulation.expected_activations == pytest.approx([float((k + i) % 11) for i in range(4)])
    two = backend.requests[0]
    assert two.sampling.stop == ("Explanation:",) and two.sampling.max_tokens == 2 * (16 + 10 * 4)
    assert two.prompt is not None and two.prompt.endswith("Answer:\n<start>\n")
    assert_golden("simulator/generated_logprobs_completion_two_excerpts.txt", two.prompt)
    # sequential calls are not held back waiting for company
    await sim.simulate("x", excerpts[0])
    assert len(backend.requests) == 4


def schema_excerpts(request: CompletionRequest) -> list[list[str]]:
    """The tokens a constrained reply must copy, read from the request's schema (one excerpt or a list)."""
    assert request.json_schema is not None
    schema = json.loads(request.json_schema)
    lists = schema["prefixItems"]
    if "const" in lists[0]["prefixItems"][0]:
        lists = [schema]
    for excerpt in lists:
        assert excerpt["minItems"] == excerpt["maxItems"] == len(excerpt["prefixItems"])
        for pair in excerpt["prefixItems"]:
            assert pair["prefixItems"][1] == {"enum": list(range(11))} and pair["minItems"] == pair["maxItems"] == 2
    return [[pair["prefixItems"][0]["const"] for pair in excerpt["prefixItems"]] for excerpt in lists]


def writing_json(values_of: Callable[[list[str]], Sequence[int]]) -> Callable[[CompletionRequest], Completion]:
    """A backend's grammar holding a model to the schema: tokens copied as JSON strings, values certain,
    "10" split into "1", "0"."""
    def respond(request: CompletionRequest) -> Completion:
        excerpts = schema_excerpts(request)
        pieces = [piece("[")] if len(excerpts) > 1 else []
        for e, tokens in enumerate(excerpts):
            pieces += [piece(", ")] if e else []
            pieces.append(piece("["))
            for i, (token, value) in enumerate(zip(tokens, values_of(tokens), strict=True)):
                pieces += [piece(", " if i else ""), piece('["'), piece(json.dumps(token)[1:-1]), piece('", '),
                           *value_pieces(value), piece("]")]
            pieces.append(piece("]"))
        pieces += [piece("]")] if len(excerpts) > 1 else []
        return reply(pieces)

    return respond


async def test_constrained_replies_copy_every_token_by_schema_and_read_back_exactly() -> None:
    hostile = [*ADVERSARIAL, '"', "\\", '", 3]', "[["]
    truth = [*TRUTH, 6, 10, 8, 0]
    backend = ScriptedBackend(writing_json(lambda tokens: truth[:len(tokens)]))
    simulation = await simulator(backend, constrained=True).simulate("cities", hostile)
    assert simulation.tokens == hostile
    assert simulation.expected_activations == pytest.approx([float(v) for v in truth])
    request = backend.requests[0]
    assert schema_excerpts(request) == [hostile]
    assert request.sampling.stop == ("\n\n\n",) and request.top_logprobs == 20
    assert request.messages is not None and "JSON list" in request.messages[0].content
    # the worked examples show the format the schema holds the reply to
    json.loads(request.messages[2].content)

    grouped = ScriptedBackend(writing_json(by_first_token))
    excerpts = [[f" e{k}", f" t{k}a", "\n"] for k in range(3)]
    sim = simulator(grouped, constrained=True, excerpts_per_request=3, prompt_format="completion")
    simulations = await asyncio.gather(*(sim.simulate("x", tokens) for tokens in excerpts))
    assert len(grouped.requests) == 1 and schema_excerpts(grouped.requests[0]) == excerpts
    for k, simulation in enumerate(simulations):
        assert simulation.expected_activations == pytest.approx([float((k + i) % 11) for i in range(3)])
    prompt = grouped.requests[0].prompt
    assert prompt is not None and prompt.endswith("Answer:\n")
    assert_golden("simulator/generated_logprobs_constrained_completion.txt", prompt)

    unconstrained = ScriptedBackend(writing_json(by_first_token),
                                    capabilities=frozenset(Capability) - {Capability.JSON_SCHEMA})
    with pytest.raises(CapabilityError, match="JSON schema"):
        create_simulator(NAME, unconstrained, {"constrained": True})


async def test_one_bad_excerpt_in_a_shared_request_fails_alone() -> None:
    def respond(request: CompletionRequest) -> Completion:
        pieces = []
        for rendered in asked_excerpts(request):
            answered = ["wrong"] * len(rendered) if rendered[0] == "bad" else rendered
            pieces += [piece("<start>"), piece("\n")]
            for token in answered:
                pieces += line(token, value_pieces(4))
            pieces += [piece("<end>"), piece("\n\n")]
        return reply(pieces)

    backend = ScriptedBackend(respond)
    sim = simulator(backend, excerpts_per_request=3)
    excerpts = [["good", " one", " here"], ["bad", " two", " here"], ["fine", " three", " too"]]
    results = await asyncio.gather(*(sim.simulate("x", t) for t in excerpts), return_exceptions=True)
    assert len(backend.requests) == 1
    assert isinstance(results[1], ParseError) and "excerpt 2 of 3" in str(results[1])
    for result in (results[0], results[2]):
        assert isinstance(result, SequenceSimulation) and result.expected_activations == [4.0, 4.0, 4.0]


async def test_prompts_fit_the_context_by_splitting_then_dropping_worked_examples(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    tokens = [f" w{i}" for i in range(6)]
    options = GeneratedLogprobsOptions(excerpts_per_request=2)
    probe = ScriptedBackend(writing(lambda r: [1] * len(r)))

    def needed(n_excerpts: int, n_examples: int) -> int:
        request = build_request("x", [tokens] * n_excerpts, n_examples, "chat", options)
        return prompt_tokens(probe, request) + request.sampling.max_tokens

    backend = ScriptedBackend(writing(lambda r: [1] * len(r)), context_length=needed(1, 2))
    sim = simulator(backend, excerpts_per_request=2)
    await asyncio.gather(sim.simulate("x", tokens), sim.simulate("x", list(reversed(tokens))))
    assert [len(asked_excerpts(r)) for r in backend.requests] == [1, 1]
    assert "split a request of 2 excerpts" in caplog.text

    small = ScriptedBackend(writing(lambda r: [1] * len(r)), context_length=needed(1, 1))
    await simulator(small).simulate("x", tokens)
    assert small.requests[0].messages is not None
    assert [m.role for m in small.requests[0].messages].count("assistant") == 1
    assert "dropped 1 of 2 worked examples" in caplog.text

    tiny = ScriptedBackend(writing(lambda r: [1] * len(r)), context_length=needed(1, 0) - 1)
    with pytest.raises(DataError, match="does not fit the model's context"):
        await simulator(tiny).simulate("x", tokens)


async def test_capabilities_options_estimate_and_the_simulation_scorer() -> None:
    no_logprobs = ScriptedBackend(lambda r: Completion(), capabilities=frozenset({Capability.CHAT}))
    with pytest.raises(CapabilityError, match="json"):
        create_simulator(NAME, no_logprobs, {})
    backend = ScriptedBackend(writing(lambda r: [2] * len(r)))
    with pytest.raises(ConfigError, match="Did you mean 'excerpts_per_request'"):
        create_simulator(NAME, backend, {"excerpt_per_request": 2})
    for bad in ({"alignment_tolerance": 1.0}, {"top_logprobs": 0}, {"max_tokens_per_token": 2},
                {"excerpts_per_request": 0}):
        with pytest.raises(ConfigError):
            create_simulator(NAME, backend, bad)
    assert await simulator(backend).simulate("x", []) == SequenceSimulation(
        tokens=[], expected_activations=[], activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS)
    assert not backend.requests

    estimate = GeneratedLogprobsSimulator.estimate(GeneratedLogprobsOptions(), 64)
    assert estimate.calls == 1 and estimate.completion_tokens >= 3 * 64
    options = SimulationOptions(simulator=NAME, simulator_options={"excerpts_per_request": 4})
    shape = ScoringShape(n_scoring=10, n_calibration=0, excerpt_tokens=64)
    assert SimulationScorer.estimate(options, shape).calls == 10
    scorer = SimulationScorer(backend, options)
    assert isinstance(scorer.simulator, GeneratedLogprobsSimulator)
    assert NAME in SIMULATORS
