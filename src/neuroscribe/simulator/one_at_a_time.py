"""One prompt per token, reading the top log-probabilities of the single value the model generates.

For chat models and servers that return logprobs only for generated tokens (e.g. the llama.cpp
server). Every prompt of an excerpt shares everything up to the final question, so backends that
cache prefixes compute the instructions, worked examples and excerpt once.

Tokenizers that split digits (SmolLM2, Llama) write "10" as "1" then "0"; from the first generated
token alone, 10 is indistinguishable from 1, so there the value 10 is read as 1. The all-at-once
simulator scores whole candidates and has no such blind spot.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neuroscribe import formatting
from neuroscribe.errors import CapabilityError, ParseError
from neuroscribe.llm.base import (
    Backend,
    CallEstimate,
    Capability,
    Choice,
    CompletionRequest,
    Message,
    SamplingParams,
    resolve_format,
)
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator.all_at_once import CANDIDATE_VALUES
from neuroscribe.simulator.prompts import (
    INSTRUCTIONS,
    PREAMBLE_TOKENS,
    PromptedSimulator,
    TopLogprobsOptions,
    explanation_line,
    preamble,
    worked_examples_text,
)


@dataclass(frozen=True, kw_only=True)
class OneAtATimeOptions(TopLogprobsOptions):
    """The shared prompt format and top-logprobs settings; nothing of its own."""


def excerpt_context(explanation: str, tokens: Sequence[str]) -> str:
    """The part every position's prompt shares: the explanation and the whole excerpt, one token a line."""
    lines = [formatting.render_token(t) for t in tokens]
    return "\n".join([explanation_line(explanation), formatting.START, *lines, formatting.END])


def question(tokens: Sequence[str], position: int) -> str:
    return (f"What is the activation on token {position + 1} of {len(tokens)}, "
            f"{formatting.render_token(tokens[position])!r}? Answer with one number from 0 to 10.")


def value_distribution(choice: Choice) -> list[float]:
    """Probabilities of 0..10 at the first non-blank generated token, renormalized over those values."""
    if not choice.logprobs:
        raise ParseError("the backend returned no logprobs for the generated value", raw_text=choice.text)
    first = next((t for t in choice.logprobs if t.token.strip()), None)
    if first is None:
        raise ParseError("the model generated only blanks instead of a value", raw_text=choice.text)
    alternatives = first.top or ((first.token, first.logprob),)
    mass = dict.fromkeys(formatting.VALUE_CANDIDATES, 0.0)
    for token, logprob in alternatives:
        if token.strip() in mass:
            mass[token.strip()] += math.exp(logprob)
    total = sum(mass.values())
    if not total > 0:
        raise ParseError(f"no value 0-10 among the top {len(alternatives)} alternatives of the generated token",
                         raw_text=choice.text)
    return [mass[c] / total for c in formatting.VALUE_CANDIDATES]


class OneAtATimeSimulator(PromptedSimulator[OneAtATimeOptions]):
    options_type = OneAtATimeOptions

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        """One request per token, each generating one value."""
        per_token = CallEstimate(calls=1, prompt_tokens=excerpt_tokens * 3 + PREAMBLE_TOKENS, completion_tokens=1)
        return per_token * excerpt_tokens

    def __init__(self, backend: Backend, options: OneAtATimeOptions) -> None:
        if Capability.GENERATED_LOGPROBS not in backend.capabilities:
            raise CapabilityError(
                f"the one-at-a-time simulator needs logprobs of generated tokens, which backend {backend.name!r} "
                "lacks; use the 'json' simulator with it"
            )
        super().__init__(backend, options)
        self.format = resolve_format(options.prompt_format, backend)

    def request(self, explanation: str, tokens: Sequence[str], position: int) -> CompletionRequest:
        sampling = SamplingParams(temperature=0.0, max_tokens=3)
        context = excerpt_context(explanation, tokens)
        if self.format == "chat":
            system = f"{INSTRUCTIONS}\n\n{worked_examples_text(self.options.n_worked_examples)}".rstrip()
            messages = (Message(role="system", content=system),
                        Message(role="user", content=f"{context}\n{question(tokens, position)}"))
            return CompletionRequest(messages=messages, sampling=sampling, top_logprobs=self.options.top_logprobs)
        prompt = f"{preamble(self.options.n_worked_examples)}{context}\n{question(tokens, position)}\nAnswer:"
        return CompletionRequest(prompt=prompt, sampling=sampling, top_logprobs=self.options.top_logprobs)

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        completions = await asyncio.gather(
            *(self.backend.complete(self.request(explanation, tokens, i)) for i in range(len(tokens)))
        )
        probabilities = []
        for position, completion in enumerate(completions):
            if not completion.choices:
                raise ParseError(f"the backend returned no answer for token {position}", raw_text="")
            probabilities.append(value_distribution(completion.choices[0]))
        return SequenceSimulation(
            tokens=list(tokens),
            expected_activations=[sum(v * p for v, p in zip(CANDIDATE_VALUES, row, strict=True))
                                  for row in probabilities],
            activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
            distribution_values=[list(CANDIDATE_VALUES) for _ in tokens],
            distribution_probabilities=probabilities,
        )
