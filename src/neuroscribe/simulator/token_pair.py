"""The token-pair simulator: from an explanation alone, how likely is it that an attention head links this
query token to this key token strongly?

One prompt per (query, key) pair: the excerpt with the two tokens marked, and a question answered with
the digit 1 (strong) or 0 (weak). The belief is read, as the reference's attention scorer reads it, from
the log-probabilities of the first generated token: P("1") / (P("1") + P("0")). So it needs a backend
that returns generated-token log-probabilities; an answer with neither digit among the top alternatives
is a `ParseError`, never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neuroscribe import formatting
from neuroscribe.errors import CapabilityError, DataError, ParseError
from neuroscribe.llm.base import (
    Backend,
    CallEstimate,
    Capability,
    Choice,
    CompletionRequest,
    Message,
    PromptFormat,
    SamplingParams,
    prompt_tokens,
    resolve_format,
)
from neuroscribe.simulator.prompts import explanation_line

INSTRUCTIONS = (
    "We are predicting what one attention head of a language model does. At each token (the query) the head "
    "can draw on that token or on any earlier one (the key), and it draws strongly on only a few. You get an "
    "explanation of what the head links, then an excerpt with one query marked >>like this<< and one key "
    "marked [[like this]] (a token that is both is marked >>[[like this]]<<). Going by the explanation alone, "
    "answer 1 if the head links that query to that key strongly, or 0 if it does not. Answer with the digit only."
)
STRONG, WEAK = "1", "0"
PREAMBLE_TOKENS = 450
"""About how many tokens the instructions and worked examples take (for cost estimates)."""
TOKENS_PER_EXCERPT_TOKEN = 2
"""Marked excerpt text plus the question, per excerpt token (estimates)."""

Pair = tuple[int, int]
"""(query, key) positions in an excerpt, key <= query."""


@dataclass(frozen=True, kw_only=True)
class TokenPairSimulatorOptions:
    prompt_format: PromptFormat = "auto"
    """'chat', 'completion' or 'auto' (chat when the backend has it)."""
    n_worked_examples: int = 2
    """Worked heads shown first (`formatting.HEAD_EXAMPLES`), each with one strong and one weak pair answered."""
    top_logprobs: int = 20
    """Alternatives read at the generated token (OpenAI and many servers allow at most 20)."""

    def __post_init__(self) -> None:
        if not 0 <= self.n_worked_examples <= len(formatting.HEAD_EXAMPLES):
            raise ValueError(f"n_worked_examples must be in 0..{len(formatting.HEAD_EXAMPLES)}, "
                             f"got {self.n_worked_examples}")
        if not 1 <= self.top_logprobs <= 100:
            raise ValueError(f"top_logprobs must be in 1..100, got {self.top_logprobs}")


def marked_excerpt(tokens: Sequence[str], pair: Pair) -> str:
    """The excerpt's text with the query marked >>...<< and the key [[...]] (a token's leading space stays
    outside the marks, so the marked word reads as a word)."""
    query, key = pair
    if not 0 <= key <= query < len(tokens):
        raise DataError(f"token pair {pair} is not a (query, key) pair of an excerpt of {len(tokens)} tokens")
    parts = []
    for i, token in enumerate(tokens):
        text = formatting.render_token(token)
        word = text.lstrip(" ") or text
        space = text[: len(text) - len(word)]
        if i == key:
            word = f"[[{word}]]"
        if i == query:
            word = f">>{word}<<"
        parts.append(space + word)
    return "".join(parts)


def question(explanation: str, tokens: Sequence[str], pair: Pair) -> str:
    query, key = pair
    return (f"{explanation_line(explanation, formatting.HEAD_LEAD_IN)}\nExcerpt: {marked_excerpt(tokens, pair)}\n"
            f"Does the head link query {query + 1} {formatting.render_token(tokens[query])!r} to key {key + 1} "
            f"{formatting.render_token(tokens[key])!r} strongly?")


def worked_pairs(n_examples: int) -> list[tuple[str, str]]:
    """(question, answer) for the first `n_examples` worked heads: each one's strongest pair (1), then a pair
    with the same query and a key it does not draw on (0)."""
    answered = []
    for example in formatting.HEAD_EXAMPLES[:n_examples]:
        record = example.record
        query, key, _ = record.top_pairs(1)[0]
        weak = next(k for k in range(query + 1) if record.activation(query, k) == 0)
        answered += [(question(example.explanation, record.tokens, (query, key)), STRONG),
                     (question(example.explanation, record.tokens, (query, weak)), WEAK)]
    return answered


def p_strong(choice: Choice) -> float:
    """P("1") / (P("1") + P("0")) at the first non-blank generated token."""
    if not choice.logprobs:
        raise ParseError("the backend returned no logprobs for the generated answer", raw_text=choice.text)
    first = next((t for t in choice.logprobs if t.token.strip()), None)
    if first is None:
        raise ParseError("the model generated only blanks instead of 1 or 0", raw_text=choice.text)
    alternatives = first.top or ((first.token, first.logprob),)
    mass = {STRONG: 0.0, WEAK: 0.0}
    for token, logprob in alternatives:
        if token.strip() in mass:
            mass[token.strip()] += math.exp(logprob)
    total = mass[STRONG] + mass[WEAK]
    if not total > 0:
        raise ParseError(f"neither 1 nor 0 among the top {len(alternatives)} alternatives of the answer",
                         raw_text=choice.text)
    return mass[STRONG] / total


class TokenPairSimulator:
    """Predicts, per (query, key) pair, the probability that the explained head links them strongly."""

    options_type = TokenPairSimulatorOptions

    def __init__(self, backend: Backend, options: TokenPairSimulatorOptions) -> None:
        if Capability.GENERATED_LOGPROBS not in backend.capabilities:
            raise CapabilityError(f"the token-pair simulator reads the log-probabilities of its answer, which "
                                  f"backend {backend.name!r} does not return; use a backend that does (hf, "
                                  "llamacpp, or a server returning logprobs)")
        self.backend = backend
        self.options = options
        self.format = resolve_format(options.prompt_format, backend)
        self.examples = worked_pairs(options.n_worked_examples)

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        """One request per pair, generating the digit (and at most one blank before it)."""
        return CallEstimate(calls=1, prompt_tokens=PREAMBLE_TOKENS + excerpt_tokens * TOKENS_PER_EXCERPT_TOKEN,
                            completion_tokens=2)

    def request(self, explanation: str, tokens: Sequence[str], pair: Pair) -> CompletionRequest:
        asked = question(explanation, tokens, pair)
        sampling = SamplingParams(temperature=0.0, max_tokens=2)
        top = self.options.top_logprobs
        if self.format == "chat":
            messages = [Message(role="system", content=INSTRUCTIONS)]
            for shown, answer in self.examples:
                messages += [Message(role="user", content=shown), Message(role="assistant", content=answer)]
            messages.append(Message(role="user", content=asked))
            return CompletionRequest(messages=tuple(messages), sampling=sampling, top_logprobs=top)
        blocks = [INSTRUCTIONS, *(f"{shown}\nAnswer: {answer}" for shown, answer in self.examples), f"{asked}\nAnswer:"]
        return CompletionRequest(prompt="\n\n".join(blocks), sampling=sampling, top_logprobs=top)

    async def simulate(self, explanation: str, tokens: Sequence[str], pair: Pair) -> float:
        """P(strong link) for `pair` of the excerpt `tokens`. Raises `ParseError` for an unreadable answer,
        `BackendError` when the backend fails, `DataError` when the prompt cannot fit the context."""
        request = self.request(explanation, tokens, pair)
        if prompt_tokens(self.backend, request) + request.sampling.max_tokens > self.backend.context_length:
            raise DataError(f"the token-pair prompt does not fit the model's context ({self.backend.context_length} "
                            "tokens); lower n_worked_examples or collect shorter excerpts")
        completion = await self.backend.complete(request)
        if not completion.choices:
            raise ParseError("the backend returned no answer", raw_text="")
        return p_strong(completion.choices[0])
