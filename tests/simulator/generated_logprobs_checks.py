"""What a real model's run of the generated-logprobs simulator must satisfy, however poor its predictions.

Shared by the in-process (embedded HF) and llama.cpp server tests. A tiny model may not copy the excerpt
well; then the failure must be an honest ParseError carrying the reply, never a simulation of zeros. With
`constrained`, the schema copies the tokens, so every excerpt must be simulated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence

import pytest

from neuroscribe.errors import ParseError
from neuroscribe.llm.base import Backend, Capability, Completion, CompletionRequest
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator import create_simulator
from neuroscribe.simulator.generated_logprobs import read_lines


class Recording:
    """A backend that passes every request to another and keeps the completions."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.completions: list[Completion] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.inner.capabilities

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    @property
    def in_process(self) -> bool:
        return self.inner.in_process

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def complete(self, request: CompletionRequest) -> Completion:
        completion = await self.inner.complete(request)
        self.completions.append(completion)
        return completion

    async def aclose(self) -> None:
        return None


def written_values(text: str, constrained: bool = False) -> list[int]:
    """The values a reply writes, read from its text alone (independently of the simulator's reader)."""
    if constrained:
        answer = json.loads(text)
        pairs = answer if isinstance(answer[0][0], str) else [pair for excerpt in answer for pair in excerpt]
        return [value for _, value in pairs]
    values = []
    for row in text.split("\n"):
        value = row.rpartition("\t")[2].strip() if "\t" in row else ""
        if value.isdigit() and value.isascii() and 0 <= int(value) <= 10:
            values.append(int(value))
    return values


async def check_real_model(backend: Backend, options: Mapping[str, object], explanation: str,
                           excerpts: Sequence[Sequence[str]]) -> list[SequenceSimulation | BaseException]:
    recording = Recording(backend)
    simulator = create_simulator("generated_logprobs", recording, options)
    results = await asyncio.gather(*(simulator.simulate(explanation, tokens) for tokens in excerpts),
                                   return_exceptions=True)
    replies = [c.text for c in recording.completions]
    assert recording.completions, "no request reached the model"
    constrained = bool(options.get("constrained"))
    for tokens, result in zip(excerpts, results, strict=True):
        # an honest failure carries one of the model's replies; constrained replies always line up
        if isinstance(result, ParseError) and not constrained:
            assert result.raw_text in replies, result
            continue
        assert isinstance(result, SequenceSimulation), result
        assert result.tokens == list(tokens)
        assert result.activation_scale is ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
        assert len(result.expected_activations) == len(tokens) == len(result.distribution_probabilities)
        for ev, row, values in zip(result.expected_activations, result.distribution_probabilities,
                                   result.distribution_values, strict=True):
            assert values == [float(v) for v in range(11)]
            assert sum(row) == pytest.approx(1.0) and all(p >= 0 for p in row)
            assert 0.0 <= ev <= 10.0 and ev == pytest.approx(sum(v * p for v, p in zip(values, row, strict=True)))
    for completion in recording.completions:
        choice = completion.choices[0]
        try:
            lines, _ = read_lines(choice, constrained)
        except ParseError:
            assert not constrained, choice.text
            continue
        spelled = "".join(t.token for t in choice.logprobs or ())
        written = written_values(spelled, constrained)
        assert len(written) == len(lines), spelled
        for value, line in zip(written, lines, strict=True):
            # greedy decoding wrote the most likely token, so the value written is (about) the most likely
            # value read there; a distribution read at the wrong token would put next to nothing on it.
            # 1 and 10 share the token "1" on digit-splitting tokenizers and are checked together.
            row = line.probabilities
            mass = row[1] + row[10] if value in (1, 10) else row[value]
            assert mass * 2 >= max(row[v] for v in range(11) if value not in (1, 10) or v not in (1, 10)), (
                value, row, spelled)
    return list(results)


PATTERN = "".join("alpha\t1\nbeta\t10\ngamma\t3\ndelta\t0\n" for _ in range(3))
"""A prompt even a tiny model continues faithfully: the reply's values are known (1, 10, 3, ...)."""


async def check_reading_on_a_pattern(backend: Backend) -> None:
    """The reader on a real model's generated tokens and top logprobs (the simulator's prompts are too hard for
    the tiny model to answer): each value written is read as the most likely one, and the "10" a
    digit-splitting tokenizer writes as "1", "0" is read as mostly 10, not 1."""
    from neuroscribe.llm.base import SamplingParams

    request = CompletionRequest(prompt=PATTERN, sampling=SamplingParams(max_tokens=24), top_logprobs=20)
    choice = (await backend.complete(request)).choices[0]
    lines, _ = read_lines(choice)
    spelled = "".join(t.token for t in choice.logprobs or ())
    assert [line.token for line in lines][:3] == ["alpha", "beta", "gamma"], spelled
    assert written_values(spelled)[:3] == [1, 10, 3], spelled
    for line, value in zip(lines[:3], (1, 10, 3), strict=True):
        assert sum(line.probabilities) == pytest.approx(1.0)
        assert max(range(11), key=lambda v: line.probabilities[v]) == value, (line, spelled)
