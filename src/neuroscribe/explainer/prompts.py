"""Explainer prompts in two formats, fitted to the model's context, asked and parsed.

Every explainer describes its prompt in a neutral form (`ExplainerPrompt`: instructions, worked
examples, the question, the lead-in to complete); this module renders it as a chat conversation or
as one plain-completion text, shrinks the evidence until it fits the context, and turns the answers
into explanations. So a new explainer only decides what evidence to show and how.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from neuroscribe.errors import BackendError, DataError, NeuroscribeError, ParseError
from neuroscribe.explainer.base import ExplainerInput, ExplainerOutput
from neuroscribe.explainer.parsing import parse_explanation
from neuroscribe.llm.base import (
    Backend,
    CallEstimate,
    CompletionRequest,
    Message,
    PromptFormat,
    SamplingParams,
    prompt_tokens,
    resolve_format,
)
from neuroscribe.records import Evidence

log = logging.getLogger(__name__)

@dataclass(frozen=True, kw_only=True)
class ExplainerOptions:
    """Generation settings every prompted explainer shares."""

    prompt_format: PromptFormat = "auto"
    """'chat' (system + worked examples as turns), 'completion' (one text the model continues) or
    'auto' (chat when the backend has it)."""
    n_candidates: int = 1
    """Candidate explanations asked for per unit (identical answers are merged)."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy. Use > 0 with n_candidates > 1 to get different candidates."""
    max_tokens: int = 60
    """Generated tokens per candidate."""
    seed: int = 0
    n_worked_examples: int = 2
    """Worked examples shown before the unit (0 for none)."""

    def __post_init__(self) -> None:
        self.require_at_least(1, "n_candidates", "max_tokens")
        self.require_at_least(0, "n_worked_examples")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")

    def require_at_least(self, minimum: int, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True, kw_only=True)
class WorkedAnswer:
    question: str
    explanation: str


@dataclass(frozen=True, kw_only=True)
class ExplainerPrompt:
    instructions: str
    examples: tuple[WorkedAnswer, ...]
    question: str
    lead_in: str
    """The sentence start an explanation completes (see `neuroscribe.formatting`)."""


def _answer_line(lead_in: str, explanation: str) -> str:
    return f"{lead_in[:1].upper()}{lead_in[1:]} {explanation}."


def _chat_request_line(lead_in: str) -> str:
    return f'Answer with one sentence that starts with "{lead_in[:1].upper()}{lead_in[1:]} ...".'


def render_chat(prompt: ExplainerPrompt) -> tuple[Message, ...]:
    ask = _chat_request_line(prompt.lead_in)
    messages = [Message(role="system", content=prompt.instructions)]
    for example in prompt.examples:
        messages.append(Message(role="user", content=f"{example.question}\n\n{ask}"))
        messages.append(Message(role="assistant", content=_answer_line(prompt.lead_in, example.explanation)))
    messages.append(Message(role="user", content=f"{prompt.question}\n\n{ask}"))
    return tuple(messages)


def render_completion(prompt: ExplainerPrompt) -> str:
    """One text; the model continues right after the lead-in and stops at the end of the line."""
    lead = f"Explanation: {prompt.lead_in}"
    blocks = [prompt.instructions]
    blocks += [f"{example.question}\n{lead} {example.explanation}." for example in prompt.examples]
    blocks.append(f"{prompt.question}\n{lead}")
    return "\n\n".join(blocks)


def build_request(prompt: ExplainerPrompt, fmt: Literal["chat", "completion"],
                  options: ExplainerOptions) -> CompletionRequest:
    sampling = SamplingParams(
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        n=options.n_candidates,
        seed=options.seed,
        stop=("\n",) if fmt == "completion" else (),
    )
    if fmt == "chat":
        return CompletionRequest(messages=render_chat(prompt), sampling=sampling)
    return CompletionRequest(prompt=render_completion(prompt), sampling=sampling)


Item = TypeVar("Item")


@dataclass(frozen=True)
class FittedPrompt:
    request: CompletionRequest
    lead_in: str
    notes: tuple[str, ...]


class PromptDoesNotFit(DataError):
    """Even one truncated excerpt with no worked examples exceeds the context (the caller records it)."""


def fit_prompt(
    backend: Backend,
    options: ExplainerOptions,
    items: Sequence[Item],
    build: Callable[[Sequence[Item], int], ExplainerPrompt],
    truncate: Callable[[Item, int], Item] | None = None,
    item_name: str = "excerpt",
) -> FittedPrompt:
    """The largest prompt that leaves room for the answer in the backend's context.

    Shrinks in order of least harm: drop the weakest (last) items down to one, then the worked
    examples, then truncate the one item that is left (when the item kind can be truncated).
    `build(items, n_worked_examples)` renders a prompt; every change made is returned as a note.
    """
    fmt = resolve_format(options.prompt_format, backend)
    budget = backend.context_length - options.max_tokens

    def attempt(shown: Sequence[Item], n_examples: int) -> CompletionRequest | None:
        request = build_request(build(shown, n_examples), fmt, options)
        return request if prompt_tokens(backend, request) <= budget else None

    def fitted(shown: Sequence[Item], n_examples: int, request: CompletionRequest,
               notes: list[str]) -> FittedPrompt:
        return FittedPrompt(request, build(shown, n_examples).lead_in, tuple(notes))

    notes: list[str] = []
    n_examples = options.n_worked_examples
    for n_shown in range(len(items), 0, -1):
        request = attempt(items[:n_shown], n_examples)
        if request is not None:
            if n_shown < len(items):
                notes.append(f"dropped {len(items) - n_shown} of {len(items)} {item_name}s to fit "
                             f"{budget} prompt tokens")
            return fitted(items[:n_shown], n_examples, request, notes)
    if len(items) > 1:
        notes.append(f"dropped {len(items) - 1} of {len(items)} {item_name}s to fit {budget} prompt tokens")
    if n_examples:
        notes.append(f"dropped all {n_examples} worked examples to fit {budget} prompt tokens")
        n_examples = 0
        request = attempt(items[:1], 0)
        if request is not None:
            return fitted(items[:1], 0, request, notes)
    if truncate is not None:
        best = _longest_fitting_truncation(items[0], truncate, lambda it: attempt([it], 0) is not None)
        if best is not None:
            item, length = best
            notes.append(f"truncated the remaining {item_name} to {length} tokens to fit {budget} prompt tokens")
            request = attempt([item], 0)
            assert request is not None
            return fitted([item], 0, request, notes)
    raise PromptDoesNotFit(
        f"the prompt does not fit the model's context ({backend.context_length} tokens, {options.max_tokens} of "
        f"them kept for the answer) even with one {item_name} and no worked examples"
    )


def _longest_fitting_truncation(item: Item, truncate: Callable[[Item, int], Item],
                                fits: Callable[[Item], bool]) -> tuple[Item, int] | None:
    low, high, best = 1, 4096, None
    while low <= high:
        middle = (low + high) // 2
        candidate = truncate(item, middle)
        if fits(candidate):
            best, low = (candidate, middle), middle + 1
        else:
            high = middle - 1
    return best


async def ask(backend: Backend, fitted: FittedPrompt, n_candidates: int) -> ExplainerOutput:
    """Ask for the candidates and parse each; failures are recorded, never returned as explanations."""
    try:
        completion = await backend.complete(fitted.request)
    except BackendError as exc:
        log.warning("explainer request failed: %s", exc)
        return ExplainerOutput(explanations=[], failures=[exc] * n_candidates, notes=list(fitted.notes))
    explanations: list[str] = []
    failures: list[NeuroscribeError] = []
    for choice in completion.choices:
        try:
            explanation = parse_explanation(choice.text, fitted.lead_in)
        except ParseError as exc:
            failures.append(exc)
            continue
        if explanation not in explanations:
            explanations.append(explanation)
    notes = list(fitted.notes)
    n_parsed = len(completion.choices) - len(failures)
    if n_parsed > len(explanations):
        notes.append(f"merged {n_parsed - len(explanations)} identical candidate explanations")
    if len(completion.choices) < n_candidates:
        failures.append(BackendError(f"the backend returned {len(completion.choices)} of {n_candidates} requested "
                                     "candidates"))
    return ExplainerOutput(explanations=explanations, failures=failures, notes=notes, usage=completion.usage)


Options = TypeVar("Options", bound=ExplainerOptions)


class PromptedExplainer(ABC, Generic[Options]):
    """An explainer that asks one backend with one prompt; subclasses only decide the evidence shown.

    Subclasses set `options_type` (their options dataclass, which `create_explainer` validates
    config mappings against) and implement `fit`.
    """

    options_type: ClassVar[type[Any]] = ExplainerOptions
    evidence: ClassVar[frozenset[Evidence]] = frozenset({Evidence.ACTIVATION_RECORDS})

    def __init__(self, backend: Backend, options: Options) -> None:
        self.backend = backend
        self.options = options

    @classmethod
    def estimate(cls, options: Any, n_excerpts: int, excerpt_tokens: int) -> CallEstimate:
        """One request for every candidate; about 4 prompt tokens per excerpt token (values, separators),
        plus instructions and worked examples."""
        return CallEstimate(calls=1, prompt_tokens=n_excerpts * excerpt_tokens * 4 + 800,
                            completion_tokens=options.max_tokens * options.n_candidates)

    @abstractmethod
    def fit(self, inputs: ExplainerInput) -> FittedPrompt:
        """The prompt for this unit, fitted to the backend's context (see `fit_prompt`)."""

    async def explain(self, inputs: ExplainerInput) -> ExplainerOutput:
        try:
            fitted = self.fit(inputs)
        except PromptDoesNotFit as exc:
            return ExplainerOutput(explanations=[], failures=[PromptDoesNotFit(f"{inputs.unit}: {exc}")]
                                   * self.options.n_candidates)
        return await ask(self.backend, fitted, self.options.n_candidates)
