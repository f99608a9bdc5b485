"""The lexical simulator: a token that the explanation names predicts 10, every other token 0.

The floor a report can always show: it asks no model, reads no context and knows no meaning, so it
scores only explanations that name literal words ("the word 'Marvel'", "mentions of carousels").

The rule, fixed in advance (never fitted to any unit):
- The explanation's key terms are every word inside quotes ("...", '...', `...`, curly quotes), whatever
  its length, and every other word of at least two characters none of whose variants (below) is in
  `STOP_WORDS` (function words and the vocabulary explanations are written in: 'words', 'related', ...).
- A token's word is its text lowercased, without surrounding spaces and punctuation.
- They match when they are equal or share a variant: the word itself, or the word without one of the
  endings in `ENDINGS`, where at least three characters are left ('times' and 'time', 'played' and 'plays').
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from neuroscribe.llm.base import Backend, CallEstimate
from neuroscribe.results import ActivationScale, SequenceSimulation

MATCH_VALUE = 10.0
"""What a matching token predicts (the top of the 0-10 scale); any other token predicts 0."""

ENDINGS = ("'s", "ing", "ed", "es", "ly", "s")
"""Endings dropped to compare inflected forms (a crude stemmer, enough for English plurals and tenses)."""
MIN_STEM = 3

_STOP_WORDS_TEXT = """
a an the and or but nor of in on at to for from by with without into onto upon about above below over under
between among through during before after as than then that this these those there here which who whom whose
what when where why how it its itself they them their he she his her him we us our you your me my is are was
were be been being am do does did have has had can could will would shall should may might must not no so
such very too also just only even more most less many much some any all each every both either other another
one ones same if else while because though although until via per etc eg ie e.g i.e like including include
includes especially particularly often usually typically mostly mainly generally sometimes various several
certain specific different
word words token tokens term terms phrase phrases mention mentions mentioned mentioning reference references
referring refers related relating relates context contexts usage use used uses using text texts sentence
sentences concept concepts instance instances occurrence occurrences appear appears appearing thing things
something kind kinds neuron activates activation activations fires firing detects pattern patterns
particular
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
"""Words that never count as key terms unless quoted."""

_QUOTED = re.compile(r"(?<!\w)[\"'`\u201c\u2018]([^\"'`\u201c\u201d\u2018\u2019]+)[\"'`\u201d\u2019](?!\w)")
_WORD = re.compile(r"[^\W_]+(?:[.'][^\W_]+)*")
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def variants(word: str) -> frozenset[str]:
    """The word and its forms without one ending of `ENDINGS` (at least `MIN_STEM` characters left)."""
    return frozenset([word, *(word[: -len(e)] for e in ENDINGS if word.endswith(e) and len(word) - len(e) >= MIN_STEM)])


def key_terms(explanation: str) -> frozenset[str]:
    """The lowercase words a token must match (see the module docstring)."""
    text = explanation.lower()
    quoted = {w for span in _QUOTED.findall(text) for w in _WORD.findall(span)}
    named = {w for w in _WORD.findall(_QUOTED.sub(" ", text)) if len(w) >= 2 and variants(w).isdisjoint(STOP_WORDS)}
    return frozenset(quoted | named)


def token_word(token: str) -> str:
    """The token's text lowercased, without surrounding spaces and punctuation ('' when nothing is left)."""
    return _EDGES.sub("", token.lower())


def lexical_matches(explanation: str, tokens: Sequence[str]) -> list[bool]:
    """Per token: whether its word matches a key term of the explanation."""
    terms: set[str] = set()
    for term in key_terms(explanation):
        terms |= variants(term)
    return [bool(word) and not variants(word).isdisjoint(terms) for word in map(token_word, tokens)]


@dataclass(frozen=True, kw_only=True)
class LexicalOptions:
    """The lexical simulator has no settings: its rule is fixed (see `neuroscribe.simulator.lexical`)."""


class LexicalSimulator:
    """Keyword match of the explanation's key terms against the tokens; asks no model."""

    options_type: ClassVar[type[Any]] = LexicalOptions
    ordinal_scale: ClassVar[bool] = True

    def __init__(self, backend: Backend, options: LexicalOptions) -> None:
        self.options = options

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        return CallEstimate()

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        return SequenceSimulation(
            tokens=list(tokens),
            expected_activations=[MATCH_VALUE if m else 0.0 for m in lexical_matches(explanation, tokens)],
            activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
        )
