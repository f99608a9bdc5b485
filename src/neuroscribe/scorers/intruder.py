"""Intruder: which excerpt of this group does not belong? Judges the unit itself, with no explanation.

Each question shows `group_size - 1` activating excerpts from one activation quantile of the unit and one
intruder (a non-activating excerpt of its random sample, or another unit's top excerpt), in a random order.
Every excerpt has its own strongest tokens marked <<like this>>, so the intruder is not given away by having
no marks. A unit whose excerpts share something recognisable lets the model find the intruder more often than
chance (1 / group size); accuracy per quantile shows down to which activation level that holds.

Another unit's top excerpt could activate this unit too: its activations for this unit are not in the
evidence, so that is not checked ('random' intruders are checked: they stay at or below the threshold).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from neuroscribe.errors import ConfigError, DataError, ParseError, StageError
from neuroscribe.llm.base import Backend, CallEstimate, Choice
from neuroscribe.records import ActivationRecord, Evidence
from neuroscribe.results import JudgedExample
from neuroscribe.scorers import examples as draw
from neuroscribe.scorers.base import MetricTable, ScorerInput, ScorerOutput, ScoringShape
from neuroscribe.scorers.judging import ALL, JudgeOptions, JudgePrompt, ask_all, estimate, fit, numbered, output
from neuroscribe.scoring import Score, accuracy

HEADLINE = "intruder_accuracy"
CHANCE = "chance"
"""The variant of `intruder_accuracy` holding what guessing would score (mean of 1 / group size)."""

INSTRUCTIONS = (
    "We are studying one unit inside a language model: a neuron that responds strongly to some tokens of a text. "
    "Below are numbered text excerpts; in each, the tokens the unit responded to most within that excerpt are "
    "marked <<like this>>. All excerpts but one were chosen because the unit responds to them in the same way; "
    "one, the intruder, was not. Find what the others share and name the intruder. Answer with its number only."
)

WORKED_EXAMPLES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("A <<cat>> slept on the warm mat.", "Our <<dog>> barked at the mailman.", "The stock <<fell>> sharply on "
      "Monday.", "She was feeding the <<horses>> at dawn."), 3),
    (("<<def>> parse(text):", "The <<meeting>> was moved to <<noon>>.", "<<class>> Parser:", "<<import>> json"), 2),
)

_NUMBER = re.compile(r"\d+")


def question(texts: Sequence[str]) -> str:
    return f"Excerpts:\n{numbered(texts)}"


def build_prompt(texts: Sequence[str], n_examples: int) -> JudgePrompt:
    examples = tuple((question(shown), str(answer)) for shown, answer in WORKED_EXAMPLES[:n_examples])
    return JudgePrompt(instructions=INSTRUCTIONS, examples=examples, question=question(texts))


def parse_choice(choice: Choice, n: int) -> int:
    """The excerpt the answer names (1-based): its first number, which must be one of 1..n."""
    found = _NUMBER.search(choice.text)
    if found is None:
        raise ParseError(f"the answer names no excerpt number 1-{n}", raw_text=choice.text)
    number = int(found.group())
    if not 1 <= number <= n:
        raise ParseError(f"the answer names excerpt {number}, but there are {n}", raw_text=choice.text)
    return number


@dataclass(frozen=True, kw_only=True)
class IntruderOptions(JudgeOptions):
    group_size: int = 5
    """Excerpts per question: group_size - 1 from one quantile and one intruder (at least 3)."""
    n_groups_per_quantile: int = 3
    """Questions asked per quantile drawn from (each draws its own members and intruder)."""
    intruder_source: Literal["random", "other_units"] = "random"
    """'random': a non-activating excerpt of the unit's random sample; 'other_units': another unit's top excerpt."""
    n_marked: int = 2
    """Tokens marked in every excerpt: its own strongest ones (ties broken at random)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        draw.require_positive(self, "n_groups_per_quantile", "n_marked")
        if self.group_size < 3:
            raise ConfigError(f"group_size must be at least 3, got {self.group_size}")
        if self.intruder_source not in ("random", "other_units"):
            raise ConfigError(f"intruder_source must be 'random' or 'other_units', got {self.intruder_source!r}")


@dataclass(frozen=True)
class Question:
    group: str
    excerpts: list[ActivationRecord]
    intruder: int
    """1-based position of the intruder."""


class IntruderScorer:
    """Accuracy at naming the intruder, overall and per quantile, next to chance. Headline `intruder_accuracy`
    (the pooled variant `all`); compare it with the `chance` variant."""

    options_type: ClassVar[type[Any]] = IntruderOptions
    evidence: ClassVar[frozenset[Evidence]] = frozenset({Evidence.ACTIVATION_RECORDS, Evidence.QUANTILE_RECORDS,
                                                         Evidence.OTHER_UNITS_RECORDS})
    needs_explanation: ClassVar[bool] = False

    def __init__(self, backend: Backend, options: IntruderOptions) -> None:
        self.backend = backend
        self.options = options

    @classmethod
    def estimate(cls, options: Any, shape: ScoringShape) -> CallEstimate:
        return estimate(options, options.n_quantiles * options.n_groups_per_quantile, options.group_size,
                        shape.excerpt_tokens, 4)

    def _intruders(self, inputs: ScorerInput) -> list[ActivationRecord]:
        if self.options.intruder_source == "random":
            return draw.non_activating_pool(inputs, self.options.activation_threshold)
        pool = [r for records in inputs.other_units_records.values() for r in records]
        if not pool:
            raise DataError(f"{inputs.unit}: no other units' excerpts to take intruders from (records.other_units "
                            "is 0, or the run has one unit)")
        return pool

    def draw(self, inputs: ScorerInput) -> list[Question]:
        rng = draw.unit_rng(inputs, "intruder")
        try:
            buckets = draw.activating_buckets(inputs, self.options)
            intruders = self._intruders(inputs)
            for group, records in buckets:
                draw.require_enough(inputs, self.options, f"activating excerpts in {group}", len(records),
                                    self.options.group_size - 1)
        except DataError as error:
            raise StageError("records", error) from error
        questions = []
        for group, records in buckets:
            for _ in range(self.options.n_groups_per_quantile):
                members = draw.sample(records, self.options.group_size - 1, rng)
                position = int(rng.integers(len(members) + 1))
                members.insert(position, intruders[int(rng.integers(len(intruders)))])
                questions.append(Question(group, members, position + 1))
        return questions

    async def score(self, inputs: ScorerInput) -> ScorerOutput:
        rng = draw.unit_rng(inputs, "intruder-marks")
        questions = self.draw(inputs)
        requests = []
        for q in questions:
            texts = [draw.render(r.tokens, draw.top_positions(r, self.options.n_marked, rng)) for r in q.excerpts]
            requests.append(fit(self.backend, self.options, texts, build_prompt, lambda _: 8,
                                min_items=len(texts)).request)
        answers = await ask_all(self.backend, requests,
                                lambda i, choice: parse_choice(choice, len(questions[i].excerpts)))
        examples = [JudgedExample(group=q.group, tokens=q.excerpts[q.intruder - 1].tokens,
                                  true_activations=q.excerpts[q.intruder - 1].activations, target=float(q.intruder),
                                  prediction=None if a is None else float(a))
                    for q, a in zip(questions, answers, strict=True)]
        judged = [e for e in examples if e.prediction is not None]

        def accuracy_of(chosen: Sequence[JudgedExample]) -> Score:
            return accuracy([e.target or 0.0 for e in chosen], [e.prediction or 0.0 for e in chosen])

        answered = [q for q, a in zip(questions, answers, strict=True) if a is not None]
        scores: MetricTable = {
            HEADLINE: {ALL: accuracy_of(judged),
                       **{group: accuracy_of([e for e in judged if e.group == group])
                          for group in dict.fromkeys(q.group for q in questions)},
                       CHANCE: float(np.mean([1 / len(q.excerpts) for q in answered]))},
            "intruder_unparsed": {ALL: float(len(examples) - len(judged))},
        }
        return output("intruder", inputs, scores, HEADLINE, examples)
