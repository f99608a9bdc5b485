"""What detection, fuzzing and intruder share: one prompt shape in two formats, fitted to the context, asked,
and the answers read (yes/no per numbered excerpt, or one number), then scored with `neuroscribe.scoring`.

A prompt is instructions, worked examples (question + answer) and the question. Answers are plain text
lines `N: yes` / `N: no`, which every backend can produce; where the backend returns generated-token
log-probabilities, P(yes) per excerpt is read at the token that starts each answer word. An answer that
cannot be read is a `ParseError` for its whole prompt: its excerpts are left out and counted, never guessed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from neuroscribe.errors import DataError, NeuroscribeError, ParseError, StageError
from neuroscribe.explainer.prompts import PromptDoesNotFit
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
from neuroscribe.records import Evidence, NeuronId
from neuroscribe.results import ExplanationScores, JudgedExample
from neuroscribe.scorers.base import MetricTable, ScorerInput, ScorerOutput, ScoringShape, split_scores
from neuroscribe.scorers.examples import (
    Example,
    QuantileOptions,
    draw_activating,
    draw_non_activating,
    require_positive,
)
from neuroscribe.scoring import Score, balanced_accuracy, precision, recall, roc_auc
from neuroscribe.simulator.prompts import explanation_line

log = logging.getLogger(__name__)

ALL = "all"
"""The variant that pools every judged example."""
INSTRUCTION_TOKENS = 250
"""Instructions and the question's framing, for estimates (an upper figure for our prompts)."""
WORKED_EXAMPLE_TOKENS = 120
TOKENS_PER_EXCERPT_TOKEN = 2
"""Excerpt text plus numbering and marks, per excerpt token (estimates)."""
TOKENS_PER_VERDICT = 4
"""`N: yes` and a line break."""
TOP_LOGPROBS = 10


@dataclass(frozen=True, kw_only=True)
class JudgeOptions(QuantileOptions):
    """Prompt settings shared by the scorers that ask a model to judge excerpts."""

    prompt_format: PromptFormat = "auto"
    """'chat', 'completion' or 'auto' (chat when the backend has it)."""
    n_worked_examples: int = 2
    """Worked examples shown before the question (dropped first, with a note, when the prompt is too long)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_worked_examples < 0:
            raise ValueError(f"n_worked_examples must be >= 0, got {self.n_worked_examples}")


@dataclass(frozen=True, kw_only=True)
class JudgePrompt:
    instructions: str
    examples: tuple[tuple[str, str], ...]
    """(question, answer) pairs, our own, shown before the question."""
    question: str


def render_request(prompt: JudgePrompt, fmt: str, max_tokens: int, top_logprobs: int) -> CompletionRequest:
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    if fmt == "chat":
        messages = [Message(role="system", content=prompt.instructions)]
        for question, answer in prompt.examples:
            messages += [Message(role="user", content=question), Message(role="assistant", content=answer)]
        messages.append(Message(role="user", content=prompt.question))
        return CompletionRequest(messages=tuple(messages), sampling=sampling, top_logprobs=top_logprobs)
    blocks = [prompt.instructions, *(f"{q}\nAnswer:\n{a}" for q, a in prompt.examples), f"{prompt.question}\nAnswer:\n"]
    return CompletionRequest(prompt="\n\n".join(blocks), sampling=sampling, top_logprobs=top_logprobs)


Item = TypeVar("Item")


@dataclass(frozen=True)
class Fitted:
    request: CompletionRequest
    n_items: int
    """How many of the offered items the prompt holds (the rest go to the next prompt)."""


def fit(backend: Backend, options: JudgeOptions, items: Sequence[Item],
        build: Callable[[Sequence[Item], int], JudgePrompt], max_tokens: Callable[[int], int],
        min_items: int = 1) -> Fitted:
    """The fullest prompt that leaves room for the answer: drops worked examples first, then items from the end
    down to `min_items` (logged). Raises StageError('prompt', PromptDoesNotFit) when even that is too long."""
    fmt = resolve_format(options.prompt_format, backend)
    top = TOP_LOGPROBS if Capability.GENERATED_LOGPROBS in backend.capabilities else 0
    for n_items in range(len(items), min_items - 1, -1):
        for n_examples in range(options.n_worked_examples, -1, -1):
            request = render_request(build(items[:n_items], n_examples), fmt, max_tokens(n_items), top)
            if prompt_tokens(backend, request) + max_tokens(n_items) <= backend.context_length:
                if n_examples < options.n_worked_examples or n_items < len(items):
                    log.info("fitted a prompt to %d tokens: %d of %d worked examples, %d of %d excerpts",
                             backend.context_length, n_examples, options.n_worked_examples, n_items, len(items))
                return Fitted(request, n_items)
    raise StageError("prompt", PromptDoesNotFit(f"the prompt does not fit the model's context "
                                                f"({backend.context_length} tokens) even with {min_items} "
                                                "excerpt(s) and no worked examples"))


def estimate(options: JudgeOptions, n_prompts: int, excerpts_per_prompt: int, excerpt_tokens: int,
             answer_tokens: int) -> CallEstimate:
    prompt = (INSTRUCTION_TOKENS + options.n_worked_examples * WORKED_EXAMPLE_TOKENS
              + excerpts_per_prompt * excerpt_tokens * TOKENS_PER_EXCERPT_TOKEN)
    return CallEstimate(calls=1, prompt_tokens=prompt, completion_tokens=answer_tokens) * n_prompts


async def ask(backend: Backend, request: CompletionRequest) -> Choice:
    """The first choice; a backend failure fails the unit (the client has retried already)."""
    try:
        completion = await backend.complete(request)
    except NeuroscribeError as error:
        raise StageError("judge", error) from error
    if not completion.choices:
        raise ParseError("the backend returned no answer", raw_text="")
    return completion.choices[0]


R = TypeVar("R")


async def ask_all(backend: Backend, requests: Sequence[CompletionRequest],
                  parse: Callable[[int, Choice], R]) -> list[R | None]:
    """`parse(i, answer)` for each request, None where the answer cannot be read (logged, counted by the caller);
    raises StageError('parse', ...) when no answer can be read."""
    choices = await asyncio.gather(*(ask(backend, request) for request in requests))
    results: list[R | None] = []
    errors: list[ParseError] = []
    for i, choice in enumerate(choices):
        try:
            results.append(parse(i, choice))
        except ParseError as error:
            log.warning("unreadable answer to prompt %d of %d, left out: %s", i + 1, len(requests), error)
            errors.append(error)
            results.append(None)
    if requests and len(errors) == len(requests):
        raise StageError("parse", errors[0])
    return results


def numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"{i}. {text}" for i, text in enumerate(texts, start=1))


# --- yes / no per excerpt -----------------------------------------------------------------------

_VERDICT = re.compile(r"^\s*(?:excerpt\s*)?(\d+)\s*[:.)\-]\s*\**\s*(yes|no)\b", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    says_yes: bool
    p_yes: float | None = None
    """P(yes) / (P(yes) + P(no)) at the answer's first token, where the backend gave log-probabilities."""


def verdict_answer(labels: Sequence[bool]) -> str:
    """How an answer is written (worked examples show it)."""
    return "\n".join(f"{i}: {'yes' if label else 'no'}" for i, label in enumerate(labels, start=1))


def parse_verdicts(choice: Choice, n: int) -> list[Verdict]:
    """One verdict per numbered excerpt 1..n; one missing or judged both ways is a ParseError. Lines numbered
    past n are ignored."""
    found: dict[int, tuple[bool, int]] = {}
    for match in _VERDICT.finditer(choice.text):
        number, says_yes = int(match.group(1)), match.group(2).lower() == "yes"
        if not 1 <= number <= n:
            continue  # a model that goes on past the last excerpt (small ones do) invents more; they are ignored
        if number in found and found[number][0] != says_yes:
            raise ParseError(f"the answer judges excerpt {number} both yes and no", raw_text=choice.text)
        found.setdefault(number, (says_yes, match.start(2)))
    missing = [i for i in range(1, n + 1) if i not in found]
    if missing:
        raise ParseError(f"the answer has no 'N: yes' or 'N: no' line for excerpt(s) {missing} of {n}",
                         raw_text=choice.text)
    return [Verdict(found[i][0], _p_yes(choice, found[i][1])) for i in range(1, n + 1)]


def _p_yes(choice: Choice, offset: int) -> float | None:
    """P(yes) among yes/no at the generated token covering character `offset` of the answer."""
    if not choice.logprobs or "".join(t.token for t in choice.logprobs) != choice.text:
        return None
    position = 0
    for token in choice.logprobs:
        if position + len(token.token) > offset:
            mass = {"yes": 0.0, "no": 0.0}
            for text, logprob in token.top or ((token.token, token.logprob),):
                word = text.strip().lower()
                if word in mass:
                    mass[word] += math.exp(logprob)
            total = mass["yes"] + mass["no"]
            return mass["yes"] / total if total > 0 else None
        position += len(token.token)
    return None


@dataclass(frozen=True)
class Shown:
    """An example as one yes/no question: what the model sees, and the right answer."""

    example: Example
    text: str
    target: bool


async def judge_yes_no(backend: Backend, options: JudgeOptions, shown: Sequence[Shown], per_prompt: int,
                       build: Callable[[Sequence[str], int], JudgePrompt]) -> list[Verdict | None]:
    """A verdict per shown example, in order (None: its prompt's answer could not be read). Prompts hold up to
    `per_prompt` examples; what does not fit moves to the next prompt. Raises StageError when no prompt's answer
    can be read."""
    batches: list[tuple[int, Fitted]] = []
    start = 0
    while start < len(shown):
        texts = [s.text for s in shown[start:start + per_prompt]]
        fitted = fit(backend, options, texts, build, lambda n: n * TOKENS_PER_VERDICT + 8)
        batches.append((start, fitted))
        start += fitted.n_items
    answers = await ask_all(backend, [fitted.request for _, fitted in batches],
                            lambda i, choice: parse_verdicts(choice, batches[i][1].n_items))
    verdicts: list[Verdict | None] = [None] * len(shown)
    for (first, fitted), answer in zip(batches, answers, strict=True):
        if answer is not None:
            verdicts[first:first + fitted.n_items] = answer
    return verdicts


def yes_no_output(prefix: str, inputs: ScorerInput, shown: Sequence[Shown],
                  verdicts: Sequence[Verdict | None]) -> ScorerOutput:
    """The scores of a yes/no scorer and its examples. An example's prediction is P(yes) where it was read,
    else the answer as 1/0; balanced accuracy, precision and recall use the answer, AUC uses P(yes)."""
    judged = [(s, v) for s, v in zip(shown, verdicts, strict=True) if v is not None]
    labels = [int(s.target) for s, _ in judged]
    answers = [int(v.says_yes) for _, v in judged]
    probabilities = [v.p_yes for _, v in judged]
    positive_groups = sorted({s.example.group for s, _ in judged if s.target})
    in_group = {group: [i for i, (s, _) in enumerate(judged) if s.example.group == group and s.target]
                for group in positive_groups}
    auc = (roc_auc(labels, [p for p in probabilities if p is not None])
           if judged and all(p is not None for p in probabilities)
           else Score(None, "AUC needs P(yes) for every answer; the backend gave none for some"))
    scores: MetricTable = {
        f"{prefix}_balanced_accuracy": {ALL: balanced_accuracy(labels, answers)},
        f"{prefix}_auc": {ALL: auc},
        f"{prefix}_precision": {ALL: precision(labels, answers)},
        f"{prefix}_recall": {ALL: recall(labels, answers),
                             **{g: recall([labels[i] for i in rows], [answers[i] for i in rows])
                                for g, rows in in_group.items()}},
        f"{prefix}_unparsed": {ALL: float(len(shown) - len(judged))},
    }
    examples = [JudgedExample(group=s.example.group, tokens=s.example.record.tokens,
                              true_activations=s.example.record.activations, target=float(s.target),
                              prediction=None if v is None else v.p_yes if v.p_yes is not None else float(v.says_yes))
                for s, v in zip(shown, verdicts, strict=True)]
    return output(prefix, inputs, scores, f"{prefix}_balanced_accuracy", examples)


def output(scorer: str, inputs: ScorerInput, scores: MetricTable, headline: str,
           examples: list[JudgedExample]) -> ScorerOutput:
    values, reasons = split_scores(scores)
    table = {name: dict(variants) for name, variants in values.items()}
    return ScorerOutput(scores=table, headline=headline, reasons=reasons,
                        result=ExplanationScores(neuron_id=NeuronId.from_unit(inputs.unit),
                                                 explanation=inputs.explanation, scorer=scorer, scores=table,
                                                 examples=examples))


def require_explanation(inputs: ScorerInput) -> None:
    if not inputs.explanation.strip():
        raise StageError("records", DataError(f"{inputs.unit}: the explanation is empty; nothing to judge"))




@dataclass(frozen=True, kw_only=True)
class YesNoOptions(JudgeOptions):
    n_per_quantile: int = 5
    """Activating excerpts drawn from each quantile (or, without quantile samples, n_quantiles x this many from the
    scored split's top excerpts)."""
    n_non_activating: int = 15
    """Non-activating excerpts drawn from the unit's random sample (those the explainer was not shown)."""
    excerpts_per_prompt: int = 5
    """Excerpts judged in one prompt (fewer when the context is short: the rest move to the next prompt)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "n_per_quantile", "n_non_activating", "excerpts_per_prompt")


WorkedYesNo = tuple[tuple[str, tuple[tuple[str, bool], ...]], ...]
"""(explanation, ((excerpt as shown, right answer), ...)) per worked example."""


class YesNoScorer(ABC):
    """A scorer that shows numbered excerpts with the explanation and asks yes / no for each; subclasses decide
    what is shown (`draw`) and the words (`instructions`, `worked_examples`). The headline is balanced accuracy:
    it is computed with every backend (AUC needs generated-token log-probabilities) and a constant answer scores
    0.5 whatever the mix of positive and negative excerpts."""

    options_type: ClassVar[type[Any]] = YesNoOptions
    evidence: ClassVar[frozenset[Evidence]] = frozenset({Evidence.ACTIVATION_RECORDS, Evidence.QUANTILE_RECORDS})
    needs_explanation: ClassVar[bool] = True
    name: ClassVar[str]
    """Registry name, and the prefix of every score name."""
    instructions: ClassVar[str]
    worked_examples: ClassVar[WorkedYesNo]

    def __init__(self, backend: Backend, options: YesNoOptions) -> None:
        self.backend = backend
        self.options = options

    @classmethod
    def estimate(cls, options: Any, shape: ScoringShape) -> CallEstimate:
        n = options.n_quantiles * options.n_per_quantile + options.n_non_activating
        per_prompt = options.excerpts_per_prompt
        return estimate(options, math.ceil(n / per_prompt), per_prompt, shape.excerpt_tokens,
                        TOKENS_PER_VERDICT * per_prompt + 8)

    @classmethod
    def build_prompt(cls, explanation: str, texts: Sequence[str], n_examples: int) -> JudgePrompt:
        def question(explained: str, shown: Sequence[str]) -> str:
            return f"{explanation_line(explained)}\n\nExcerpts:\n{numbered(shown)}"

        examples = tuple((question(e, [t for t, _ in shown]), verdict_answer([label for _, label in shown]))
                         for e, shown in cls.worked_examples[:n_examples])
        return JudgePrompt(instructions=cls.instructions, examples=examples, question=question(explanation, texts))

    def draw_examples(self, inputs: ScorerInput, rng: np.random.Generator) -> tuple[list[Example], list[Example]]:
        """Activating and non-activating examples; a unit short of either fails at stage 'records'."""
        try:
            return (draw_activating(inputs, self.options, self.options.n_per_quantile, rng),
                    draw_non_activating(inputs, self.options.n_non_activating, self.options, rng))
        except DataError as error:
            raise StageError("records", error) from error

    @abstractmethod
    def draw(self, inputs: ScorerInput) -> list[Shown]:
        """The examples to judge, in the order shown (raises StageError('records', ...) when there are none)."""

    async def score(self, inputs: ScorerInput) -> ScorerOutput:
        require_explanation(inputs)
        shown = self.draw(inputs)
        verdicts = await judge_yes_no(self.backend, self.options, shown, self.options.excerpts_per_prompt,
                                      lambda texts, n: self.build_prompt(inputs.explanation, texts, n))
        return yes_no_output(self.name, inputs, shown, verdicts)
