"""The paper's cheap baseline: explain from the tokens with the highest average activation alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neuroscribe import formatting
from neuroscribe.errors import DataError
from neuroscribe.explainer.base import ExplainerInput
from neuroscribe.explainer.few_shot import LOOKUP_EXAMPLES
from neuroscribe.explainer.prompts import (
    ExplainerOptions,
    ExplainerPrompt,
    FittedPrompt,
    PromptedExplainer,
    WorkedAnswer,
    fit_prompt,
)
from neuroscribe.llm.base import CallEstimate
from neuroscribe.records import Evidence, normalize_activations
from neuroscribe.results import TokenLookupTableSummaryOfNeuron

INSTRUCTIONS = (
    "We are working out what individual neurons of a language model respond to. You will see the "
    "tokens on which one neuron is most active on average, strongest first, each followed by a tab and "
    f"its average activation. {formatting.SCALE_SENTENCE} Say, in a short phrase, what these tokens "
    "have in common."
)


@dataclass(frozen=True, kw_only=True)
class TokenLookupOptions(ExplainerOptions):
    max_tokens_shown: int = 50
    """Tokens of the look-up table shown, strongest first."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least(1, "max_tokens_shown")


def question(pairs: Sequence[tuple[str, float]]) -> str:
    top = max((value for _, value in pairs), default=0.0)
    values = normalize_activations([value for _, value in pairs], top)
    lines = formatting.activation_lines([token for token, _ in pairs], values)
    return "Tokens (token<TAB>average value):\n" + "\n".join(lines)


def ranked(table: TokenLookupTableSummaryOfNeuron) -> list[tuple[str, float]]:
    return sorted(zip(table.tokens, table.average_activations, strict=True), key=lambda p: p[1], reverse=True)


class TokenLookupExplainer(PromptedExplainer[TokenLookupOptions]):
    """Explains a unit from its token look-up table (activation-based summary), no excerpts."""

    options_type = TokenLookupOptions
    evidence = frozenset({Evidence.TOKEN_LOOKUP_TABLE})

    @classmethod
    def estimate(cls, options: Any, n_excerpts: int, excerpt_tokens: int) -> CallEstimate:
        return CallEstimate(calls=1, prompt_tokens=options.max_tokens_shown * 6 + 600,
                            completion_tokens=options.max_tokens * options.n_candidates)

    def fit(self, inputs: ExplainerInput) -> FittedPrompt:
        table = inputs.lookup_table
        if table is None or not table.tokens:
            raise DataError(f"{inputs.unit}: the token look-up explainer needs a look-up table "
                            "(related-tokens/activation-based), and the input has none")
        pairs = ranked(table)[: self.options.max_tokens_shown]
        if not pairs[0][1] > 0:
            raise DataError(f"{inputs.unit}: every average activation in the look-up table is <= 0; nothing to explain")

        def build(shown: Sequence[tuple[str, float]], n_examples: int) -> ExplainerPrompt:
            examples = tuple(
                WorkedAnswer(question=question(ranked(ex.table)), explanation=ex.explanation)
                for ex in LOOKUP_EXAMPLES[:n_examples]
            )
            return ExplainerPrompt(instructions=INSTRUCTIONS, examples=examples, question=question(shown),
                                   lead_in=formatting.NEURON_LEAD_IN)

        return fit_prompt(self.backend, self.options, pairs, build, item_name="token")
