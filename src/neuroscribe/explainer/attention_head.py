"""Explain an attention head from excerpts in which its strongest (query, key) links are marked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neuroscribe import formatting
from neuroscribe.errors import DataError
from neuroscribe.explainer.base import ExplainerInput
from neuroscribe.explainer.prompts import (
    ExplainerOptions,
    ExplainerPrompt,
    FittedPrompt,
    PromptedExplainer,
    WorkedAnswer,
    fit_prompt,
)
from neuroscribe.records import MAX_NORMALIZED_ACTIVATION, Evidence, TokenPairRecord, normalize_activations

INSTRUCTIONS = (
    "We are working out what individual attention heads of a language model do. For each excerpt you "
    "will see its text with numbered tokens, then the links the head weighs most: a later (query) "
    "token, an arrow, and the earlier (key) token it draws on, with a strength from 0 to "
    f"{MAX_NORMALIZED_ACTIVATION} ({MAX_NORMALIZED_ACTIVATION} is the strongest link seen). Say, in a "
    "short phrase, which tokens the head links to which."
)


@dataclass(frozen=True, kw_only=True)
class AttentionHeadOptions(ExplainerOptions):
    pairs_per_excerpt: int = 3
    """Strongest (query, key) links marked per excerpt."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_at_least(1, "pairs_per_excerpt")


def excerpt_block(record: TokenPairRecord, max_activation: float, n_pairs: int) -> str:
    numbered = "".join(f"[{i}]{formatting.render_token(t)}" for i, t in enumerate(record.tokens))
    top = [p for p in record.top_pairs(n_pairs) if p[2] > 0]
    values = normalize_activations([value for _, _, value in top], max_activation)
    links = [
        f"[{q}]{formatting.render_token(record.tokens[q])!r} -> [{k}]{formatting.render_token(record.tokens[k])!r}"
        f"\t{value}"
        for (q, k, _), value in zip(top, values, strict=True)
    ]
    return "\n".join([formatting.START, numbered, "Strongest links:", *links, formatting.END])


def question(records: Sequence[TokenPairRecord], max_activation: float, n_pairs: int) -> str:
    return "Excerpts:\n" + "\n".join(excerpt_block(r, max_activation, n_pairs) for r in records)


class AttentionHeadExplainer(PromptedExplainer[AttentionHeadOptions]):
    """Explains an attention head from token-pair records, marking each excerpt's strongest links."""

    options_type = AttentionHeadOptions
    evidence = frozenset({Evidence.TOKEN_PAIR_RECORDS})

    def fit(self, inputs: ExplainerInput) -> FittedPrompt:
        records = inputs.token_pair_records
        if not records:
            raise DataError(f"{inputs.unit}: the attention-head explainer needs token-pair records, got none")
        scale = inputs.max_activation if inputs.max_activation > 0 else max(r.max_activation for r in records)
        if not scale > 0:
            raise DataError(f"{inputs.unit}: no (query, key) pair activates above 0; nothing to explain")
        n_pairs = self.options.pairs_per_excerpt

        def build(shown: Sequence[TokenPairRecord], n_examples: int) -> ExplainerPrompt:
            examples = tuple(
                WorkedAnswer(question=question([ex.record], ex.record.max_activation, n_pairs),
                             explanation=ex.explanation)
                for ex in formatting.HEAD_EXAMPLES[:n_examples]
            )
            return ExplainerPrompt(instructions=INSTRUCTIONS, examples=examples,
                                   question=question(shown, scale, n_pairs), lead_in=formatting.HEAD_LEAD_IN)

        return fit_prompt(self.backend, self.options, records, build)
