"""A scripted model that follows explanations word for word, for the sanity checks.

As an explainer it names every token that fires in the excerpts it is shown ("the words cat and dog").
As an all-at-once simulator it predicts 10 on each token that is a word of the explanation and 0 elsewhere,
so a wrong, an incomplete or a padded explanation predicts worse wherever the excerpts hold the words
involved. It reads nothing but the prompt: it never sees the true activations of what it simulates.
"""

from __future__ import annotations

import re

from neuroscribe import formatting
from neuroscribe.llm.base import Choice, Completion, CompletionRequest

FUNCTION_WORDS = frozenset({"the", "words", "word", "and", "or", "also", "in", "of", "a", "an", "such", "as"})


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[\w-]+", text.lower()) if w not in FUNCTION_WORDS}


def _explain(prompt: str) -> Completion:
    shown = prompt[prompt.rindex("Excerpts (token<TAB>value):"):]
    pairs = [line.rsplit("\t", 1) for line in shown.splitlines() if "\t" in line]
    firing = [token.strip() for token, value in pairs if value.strip().isdigit() and int(value) > 0]
    return Completion(choices=(Choice(text=f"the words {' and '.join(dict.fromkeys(firing))}."),))


def _simulate(request: CompletionRequest) -> Completion:
    assert request.distributions is not None
    segments = request.distributions.segments
    text = "".join(s.text for s in segments)
    line = text[text.rindex("Explanation: "):].split("\n", 1)[0]
    named = content_words(line.removeprefix("Explanation: ").removeprefix(formatting.NEURON_LEAD_IN))
    tokens = [segments[i - 1].text.rsplit("\n", 1)[-1].removesuffix("\t").strip().lower()
              for i, s in enumerate(segments) if s.read_distribution]
    candidates = request.distributions.candidates
    return Completion(distributions=tuple(
        tuple(1.0 if int(c) == (10 if token in named else 0) else 0.0 for c in candidates) for token in tokens))


def follows_words(request: CompletionRequest) -> Completion:
    if request.distributions is not None:
        return _simulate(request)
    return _explain("\n".join(m.content for m in request.messages or ()) or request.prompt or "")
