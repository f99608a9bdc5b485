"""A simulator for models with no logprobs at all: ask for the excerpt back as JSON with values.

The answer is checked against the excerpt: a list whose tokens match is taken as is; one that
skips, merges or adds tokens is re-aligned by token text when most tokens still match, and rejected
otherwise. Values outside 0..10, non-numbers and all-zero answers raise ParseError: an all-zero
answer carries no information (its correlation is undefined) and is usually a model giving up.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neuroscribe import formatting
from neuroscribe.errors import ParseError
from neuroscribe.llm.base import (
    Backend,
    CallEstimate,
    Capability,
    CompletionRequest,
    Message,
    PromptFormat,
    SamplingParams,
    resolve_format,
)
from neuroscribe.records import MAX_NORMALIZED_ACTIVATION
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator.prompts import (
    INSTRUCTIONS,
    PREAMBLE_TOKENS,
    PromptedSimulator,
    SimulatorOptions,
    explanation_line,
)

log = logging.getLogger(__name__)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
PAIR = re.compile(r'\[\s*("(?:[^"\\]|\\.)*")\s*,\s*(-?\d+(?:\.\d+)?)\s*\]')
"""One ["token", value] pair (groups: the JSON string, the number), for reading answers cut off mid-JSON
(a model that never closes the list) and the generated_logprobs simulator's JSON replies."""


@dataclass(frozen=True, kw_only=True)
class JsonSimulatorOptions(SimulatorOptions):
    prompt_format: PromptFormat = "auto"
    """'chat', 'completion' or 'auto' (chat when the backend has it)."""
    min_token_match: float = 0.8
    """Share of the excerpt's tokens an answer must reproduce, in order, to be re-aligned instead of rejected."""
    max_tokens_per_token: int = 16
    """Generation budget per excerpt token (one [token, value] pair is about 6-10 tokens)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.min_token_match <= 1.0:
            raise ValueError(f"min_token_match must be in (0, 1], got {self.min_token_match}")
        if self.max_tokens_per_token < 4:
            raise ValueError(f"max_tokens_per_token must be >= 4, got {self.max_tokens_per_token}")


def answer_schema(n_tokens: int) -> str:
    pair = {
        "type": "array",
        "prefixItems": [{"type": "string"},
                        {"type": "integer", "minimum": 0, "maximum": MAX_NORMALIZED_ACTIVATION}],
        "minItems": 2,
        "maxItems": 2,
    }
    schema = {
        "type": "object",
        "properties": {"activations": {"type": "array", "minItems": n_tokens, "maxItems": n_tokens, "items": pair}},
        "required": ["activations"],
    }
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


ASK = ('Reply with JSON only: {"activations": [[token, activation], ...]}, one pair per token, in order, '
       "each activation an integer from 0 to 10.")


def question(explanation: str, tokens: Sequence[str]) -> str:
    return f"{explanation_line(explanation)}\nTokens: {json.dumps(list(tokens), ensure_ascii=False)}"


def answer(tokens: Sequence[str], values: Sequence[int]) -> str:
    pairs = ", ".join(json.dumps([t, v], ensure_ascii=False) for t, v in zip(tokens, values, strict=True))
    return f'{{"activations": [{pairs}]}}'


def worked_examples(n: int) -> list[tuple[str, str]]:
    """(question, answer) for the first n worked examples: the answer format shown, not just described."""
    return [(question(ex.explanation, ex.tokens), answer(ex.tokens, ex.values))
            for ex in formatting.WORKED_EXAMPLES[:n]]


def _extract_json(text: str) -> object:
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        raise ParseError("the answer contains no JSON", raw_text=text)
    try:
        value, _ = json.JSONDecoder().raw_decode(body[min(starts):])
    except json.JSONDecodeError as exc:
        raise ParseError(f"the answer is not valid JSON ({exc.msg} at character {exc.pos})", raw_text=text) from exc
    return value


def _salvaged_pairs(text: str) -> list[list[object]]:
    """The complete ["token", value] pairs of an answer that is not valid JSON as a whole."""
    pairs: list[list[object]] = []
    for token, number in PAIR.findall(text):
        pairs.append([json.loads(token), json.loads(number)])
    return pairs


def _entries(value: object, text: str) -> list[tuple[str | None, float]]:
    """(token or None, value) pairs from the shapes models actually produce."""
    if isinstance(value, dict):
        value = value.get("activations", next((v for v in value.values() if isinstance(v, list)), None))
    if not isinstance(value, list):
        raise ParseError("the JSON answer has no list of activations", raw_text=text)
    entries: list[tuple[str | None, float]] = []
    for i, item in enumerate(value):
        token: object = None
        if isinstance(item, dict):
            token, number = item.get("token"), item.get("activation", item.get("value"))
        elif isinstance(item, list) and len(item) == 2:
            token, number = item
        else:
            number = item
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ParseError(f"entry {i} of the answer has no numeric activation: {item!r}", raw_text=text)
        if not 0 <= number <= MAX_NORMALIZED_ACTIVATION:
            raise ParseError(f"entry {i} of the answer has activation {number}, outside 0..10", raw_text=text)
        entries.append((token if isinstance(token, str) else None, float(number)))
    return entries


def _comparable(token: str) -> str:
    """Models often drop or add a token's surrounding spaces when they copy it; that is not a mismatch."""
    return token.strip() or token


def parse_answer(text: str, tokens: Sequence[str], min_token_match: float) -> tuple[list[float], list[str]]:
    """Values per excerpt token and notes on any repair made."""
    notes = []
    try:
        value = _extract_json(text)
    except ParseError:
        value = _salvaged_pairs(text)
        if not value:
            raise
        notes.append(f"read {len(value)} complete [token, value] pairs from an answer that is not valid JSON")
    entries = _entries(value, text)
    answered = [None if token is None else _comparable(token) for token, _ in entries]
    wanted = [_comparable(token) for token in tokens]
    if len(entries) == len(tokens) and all(t is None or t == tok for t, tok in zip(answered, wanted, strict=True)):
        return [value for _, value in entries], notes
    matcher = difflib.SequenceMatcher(a=wanted, b=answered, autojunk=False)
    values = [0.0] * len(tokens)
    matched = 0
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            values[block.a + offset] = entries[block.b + offset][1]
        matched += block.size
    if matched < min_token_match * len(tokens):
        raise ParseError(
            f"the answer lists {len(entries)} tokens of which only {matched} match the excerpt's {len(tokens)} "
            f"in order (need {min_token_match:.0%})",
            raw_text=text,
        )
    notes.append(f"re-aligned by token text: {len(tokens) - matched} of {len(tokens)} tokens unanswered, set to 0")
    return values, notes


class JsonSimulator(PromptedSimulator[JsonSimulatorOptions]):
    """Works with any backend that generates text; uses a JSON schema where the backend supports one."""

    options_type = JsonSimulatorOptions

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        """One request per excerpt; the answer repeats every token with its value."""
        return CallEstimate(calls=1, prompt_tokens=excerpt_tokens * 3 + PREAMBLE_TOKENS,
                            completion_tokens=excerpt_tokens * 4)

    def __init__(self, backend: Backend, options: JsonSimulatorOptions) -> None:
        super().__init__(backend, options)
        self.format = resolve_format(options.prompt_format, backend)

    def request(self, explanation: str, tokens: Sequence[str]) -> CompletionRequest:
        sampling = SamplingParams(temperature=0.0, max_tokens=16 + self.options.max_tokens_per_token * len(tokens))
        schema = answer_schema(len(tokens)) if Capability.JSON_SCHEMA in self.backend.capabilities else None
        examples = worked_examples(self.options.n_worked_examples)
        if self.format == "chat":
            messages = [Message(role="system", content=f"{INSTRUCTIONS} {ASK}")]
            for example_question, example_answer in examples:
                messages += [Message(role="user", content=example_question),
                             Message(role="assistant", content=example_answer)]
            messages.append(Message(role="user", content=question(explanation, tokens)))
            return CompletionRequest(messages=tuple(messages), sampling=sampling, json_schema=schema)
        shown = "".join(f"{q}\nJSON: {a}\n\n" for q, a in examples)
        prompt = f"{INSTRUCTIONS} {ASK}\n\n{shown}{question(explanation, tokens)}\nJSON:"
        return CompletionRequest(prompt=prompt, sampling=sampling, json_schema=schema)

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        scale = ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
        if not tokens:
            return SequenceSimulation(tokens=[], expected_activations=[], activation_scale=scale)
        completion = await self.backend.complete(self.request(explanation, tokens))
        values, repairs = parse_answer(completion.text, tokens, self.options.min_token_match)
        for repair in repairs:
            log.info("json simulator: %s", repair)
        return SequenceSimulation(tokens=list(tokens), expected_activations=values, activation_scale=scale)
