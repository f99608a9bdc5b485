"""The token-pair simulator against scripted backends: its prompt, how it reads P(strong), how it fails."""

from __future__ import annotations

import math

import pytest

from golden import assert_golden
from neuroscribe import formatting
from neuroscribe.errors import CapabilityError, DataError, ParseError
from neuroscribe.llm.base import Capability, Choice, Completion, CompletionRequest, TokenLogprob
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.simulator.token_pair import (
    TokenPairSimulator,
    TokenPairSimulatorOptions,
    marked_excerpt,
    p_strong,
    worked_pairs,
)

TOKENS = ["When", " Mary", " met", " John", ",", " John", " smiled"]


def answer(*alternatives: tuple[str, float], blank_first: bool = False) -> Completion:
    top = tuple((token, math.log(p)) for token, p in alternatives)
    tokens = (TokenLogprob(top[0][0], top[0][1], top),)
    if blank_first:
        tokens = (TokenLogprob(" ", -0.01, ((" ", -0.01),)), *tokens)
    return Completion(choices=(Choice(text="".join(t.token for t in tokens), logprobs=tokens),))


def test_the_pair_is_marked_query_and_key() -> None:
    assert marked_excerpt(TOKENS, (5, 3)) == "When Mary met [[John]], >>John<< smiled"
    assert marked_excerpt(TOKENS, (2, 2)) == "When Mary >>[[met]]<< John, John smiled"
    assert marked_excerpt(["a\nb", " ", "c"], (1, 0)) == "[[a\\nb]]>> <<c"
    with pytest.raises(DataError, match=r"\(2, 3\) is not a \(query, key\) pair"):
        marked_excerpt(TOKENS, (2, 3))


def test_worked_pairs_answer_a_strong_and_a_weak_pair_of_each_head() -> None:
    pairs = worked_pairs(2)
    assert [a for _, a in pairs] == ["1", "0", "1", "0"]
    for (strong, _), (weak, _), example in zip(pairs[::2], pairs[1::2], formatting.HEAD_EXAMPLES, strict=True):
        query, key, value = example.record.top_pairs(1)[0]
        assert value > 0 and f"query {query + 1} " in strong and f"key {key + 1} " in strong
        weak_key = int(weak.split(" to key ")[1].split()[0]) - 1
        assert example.record.activation(query, weak_key) == 0 and f"query {query + 1} " in weak
    assert worked_pairs(0) == []


def test_reads_p_strong_among_one_and_zero() -> None:
    assert p_strong(answer(("1", 0.6), ("0", 0.2), ("The", 0.2)).choices[0]) == pytest.approx(0.75)
    assert p_strong(answer((" 0", 0.5), (" 1", 0.1), blank_first=True).choices[0]) == pytest.approx(1 / 6)
    with pytest.raises(ParseError, match="neither 1 nor 0 among the top 2"):
        p_strong(answer(("The", 0.9), ("It", 0.1)).choices[0])
    with pytest.raises(ParseError, match="no logprobs"):
        p_strong(Choice(text="1"))


async def test_chat_prompt_and_answer() -> None:
    backend = ScriptedBackend(lambda r: answer(("1", 0.3), ("0", 0.6)))
    simulator = TokenPairSimulator(backend, TokenPairSimulatorOptions())
    p = await simulator.simulate("a repeated name back to its first mention", TOKENS, (5, 3))
    assert p == pytest.approx(1 / 3)
    (request,) = backend.requests
    assert request.top_logprobs == 20 and request.sampling.max_tokens == 2 and request.sampling.temperature == 0
    messages = request.messages or ()
    assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant",
                                          "user", "assistant", "user"]
    assert_golden("simulator/token_pair_chat.txt", "\n".join(f"=== {m.role}\n{m.content}" for m in messages))


async def test_completion_prompt_ends_where_the_digit_goes() -> None:
    backend = ScriptedBackend(lambda r: answer((" 1", 0.9), (" 0", 0.1)))
    simulator = TokenPairSimulator(backend, TokenPairSimulatorOptions(prompt_format="completion",
                                                                      n_worked_examples=1))
    assert await simulator.simulate("x", TOKENS, (1, 0)) == pytest.approx(0.9)
    prompt = backend.requests[0].prompt or ""
    assert prompt.endswith("strongly?\nAnswer:") and prompt.count("\nAnswer: ") == 2


async def test_refuses_backends_and_prompts_it_cannot_use() -> None:
    no_logprobs = ScriptedBackend(lambda r: answer(("1", 1.0)), capabilities=frozenset({Capability.CHAT}))
    with pytest.raises(CapabilityError, match="log-probabilities"):
        TokenPairSimulator(no_logprobs, TokenPairSimulatorOptions())
    tiny = ScriptedBackend(lambda r: answer(("1", 1.0)), context_length=64)
    with pytest.raises(DataError, match="does not fit the model's context"):
        await TokenPairSimulator(tiny, TokenPairSimulatorOptions()).simulate("x", TOKENS, (1, 0))
    assert tiny.requests == []
    with pytest.raises(ValueError, match=r"n_worked_examples must be in 0\.\.2"):
        TokenPairSimulatorOptions(n_worked_examples=3)


def test_every_request_differs_only_in_the_last_question() -> None:
    backend = ScriptedBackend(lambda r: answer(("1", 1.0)))
    simulator = TokenPairSimulator(backend, TokenPairSimulatorOptions())
    first, second = (simulator.request("x", TOKENS, pair) for pair in ((5, 3), (6, 0)))

    def body(request: CompletionRequest) -> tuple[object, ...]:
        return tuple(request.messages or ())[:-1]

    assert body(first) == body(second) and first.messages != second.messages
