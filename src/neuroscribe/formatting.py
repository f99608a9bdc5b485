"""Prompt pieces shared by explainers and simulators, so what one writes the other reads the same way.

An explainer shows excerpts as `token<TAB>value` lines (values 0-10) and completes a fixed lead-in;
a simulator shows the explanation after the same lead-in and asks for the same lines. Keeping the
two in one module means a change to the format can never make them drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neuroscribe.records import (
    MAX_NORMALIZED_ACTIVATION,
    ActivationRecord,
    TokenPairRecord,
    n_pairs,
    normalize_activations,
    pair_index,
)

START = "<start>"
END = "<end>"
UNKNOWN = "unknown"
"""Placeholder a simulator prompt puts where a value is to be predicted."""

VALUE_CANDIDATES: tuple[str, ...] = tuple(str(v) for v in range(MAX_NORMALIZED_ACTIVATION + 1))
"""The values a simulator may predict, as text: "0".."10"."""

NEURON_LEAD_IN = "the main thing this neuron does is respond to"
"""Explanations complete this phrase; simulators read them after it. Explanations are noun phrases."""

HEAD_LEAD_IN = "the main thing this attention head does is link"

SCALE_SENTENCE = (
    f"Values run from 0 (no response) to {MAX_NORMALIZED_ACTIVATION} (the strongest response seen); "
    "most tokens get 0."
)

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def render_token(token: str) -> str:
    """A token as shown in a prompt line: line breaks and tabs escaped so one token is one line."""
    return "".join(_ESCAPES.get(ch, ch) for ch in token)


def max_activation_over(records: Sequence[ActivationRecord]) -> float:
    """The normalization scale for a set of shown excerpts: their largest activation."""
    return max((r.max_activation for r in records), default=0.0)


def activation_lines(
    tokens: Sequence[str], values: Sequence[int | str], *, omit_zeros: bool = False
) -> list[str]:
    """`token<TAB>value` lines; with `omit_zeros`, tokens whose value is 0 are left out."""
    return [
        f"{render_token(token)}\t{value}"
        for token, value in zip(tokens, values, strict=True)
        if not (omit_zeros and value == 0)
    ]


def format_excerpt(
    record: ActivationRecord, max_activation: float, *, omit_zeros: bool = False
) -> str:
    """One excerpt between <start>/<end>, values normalized to 0-10 against `max_activation`."""
    values = normalize_activations(record.activations, max_activation)
    lines = activation_lines(record.tokens, values, omit_zeros=omit_zeros)
    return "\n".join([START, *lines, END])


@dataclass(frozen=True, kw_only=True)
class WorkedExample:
    """A made-up unit with one excerpt and the explanation a careful reader would give it.

    Written for this project from plausible web-text and code excerpts; values are already on the
    0-10 scale with a maximum of 10, so normalizing them changes nothing.
    """

    tokens: tuple[str, ...]
    values: tuple[int, ...]
    explanation: str

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.values) or max(self.values) != MAX_NORMALIZED_ACTIVATION:
            raise ValueError(
                f"worked example {self.explanation!r}: needs one value per token ({len(self.tokens)} tokens, "
                f"{len(self.values)} values) and a maximum of {MAX_NORMALIZED_ACTIVATION}"
            )

    @property
    def record(self) -> ActivationRecord:
        return ActivationRecord(tokens=list(self.tokens), activations=[float(v) for v in self.values])


WORKED_EXAMPLES: tuple[WorkedExample, ...] = (
    WorkedExample(
        tokens=("The", " recipe", " calls", " for", " two", " cups", " of", " flour", " and", " a",
                " pinch", " of", " salt", ",", " then", " bake", " for", " forty", " minutes", "."),
        values=(0, 0, 0, 0, 8, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 10, 1, 0),
        explanation="number words and small quantities, especially counts of units",
    ),
    WorkedExample(
        tokens=("She", " moved", " from", " Lyon", " to", " Montreal", " in", " 2009", ",", " then",
                " spent", " a", " winter", " in", " Oslo", " before", " settling", " in", " Porto", "."),
        values=(0, 0, 0, 9, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 9, 0),
        explanation="names of cities",
    ),
    WorkedExample(
        tokens=("if", " (", "count", " >", " 0", ")", " {", "\n", "   ", " return", " total", " /",
                " count", ";", "\n", "}", " else", " {", "\n", "   ", " return", " 0", ";"),
        values=(0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0),
        explanation="the keyword return in source code",
    ),
)


@dataclass(frozen=True, kw_only=True)
class HeadExample:
    """A made-up attention head with one excerpt whose strongest (query, key) links are set, and its explanation
    (shown by the attention-head explainer and the token-pair simulator)."""

    record: TokenPairRecord
    explanation: str


def sparse_pair_record(tokens: tuple[str, ...], links: dict[tuple[int, int], float]) -> TokenPairRecord:
    """A token-pair record that is 0 everywhere except at the given (query, key) pairs."""
    activations = [0.0] * n_pairs(len(tokens))
    for (query, key), value in links.items():
        activations[pair_index(query, key)] = value
    return TokenPairRecord(tokens=list(tokens), activations=activations)


HEAD_EXAMPLES: tuple[HeadExample, ...] = (
    HeadExample(
        record=sparse_pair_record(
            ("Mrs", " Hale", " opened", " the", " shop", " at", " nine", ".", " By", " noon", " Mrs", " Hale",
             " had", " sold", " out", "."),
            {(11, 1): 9.0, (10, 0): 6.0, (15, 7): 3.0},
        ),
        explanation="a repeated word or name back to its earlier occurrence",
    ),
    HeadExample(
        record=sparse_pair_record(
            ("The", " keys", " to", " the", " cabinet", " are", " on", " the", " table", "."),
            {(5, 1): 10.0, (4, 2): 2.0},
        ),
        explanation="a verb to the noun that is its grammatical subject",
    ),
)
