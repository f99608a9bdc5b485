"""A scripted model that follows explanations, for runner tests that need scores which depend on them.

As an explainer it offers candidates of the form "the word X": one names the strongest token of the
excerpts it is shown, the others name tokens that do not fire (asked for one, it draws one by the seed).
As an all-at-once simulator it predicts 10 on every token named by the explanation and 0 elsewhere, so a
candidate's score measures how right it is.
Every simulated excerpt is logged by explanation, so a test can see which excerpts judged which candidate.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict

from neuroscribe import formatting
from neuroscribe.llm.base import Choice, Completion, CompletionRequest, Usage

SIMULATED: defaultdict[str, list[tuple[str, ...]]] = defaultdict(list)
"""Explanation -> the excerpts (rendered tokens) simulated for it, in request order."""
EXPLAINER_SEEDS: list[int | None] = []
"""The sampling seed of every explainer request, in request order."""
N_WRONG = 3
FUNCTION_WORDS = frozenset({"the", "words", "word", "and", "or", "also", "in", "of", "a", "an", "such", "as"})


def _shown_values(prompt: str) -> list[tuple[str, int]]:
    question = prompt[prompt.rindex("Excerpts (token<TAB>value):"):]
    pairs = [line.rsplit("\t", 1) for line in question.splitlines() if "\t" in line]
    return [(token.strip(), int(value)) for token, value in pairs if value.strip().isdigit()]


def _explain(prompt: str, request: CompletionRequest) -> Completion:
    """All candidates when several are asked for; one, drawn by the request's seed, when one is."""
    EXPLAINER_SEEDS.append(request.sampling.seed)
    shown = _shown_values(prompt)
    strongest = max(shown, key=lambda pair: pair[1])[0]
    silent = list(dict.fromkeys(t for t, v in shown if v == 0 and t and t != strongest))[:N_WRONG]
    named = [*silent[:1], strongest, *silent[1:]]  # the right one second: "first candidate" would be wrong
    if request.sampling.n == 1:
        named = [named[(request.sampling.seed or 0) % len(named)]]
    return Completion(choices=tuple(Choice(text=f"the word {token}.") for token in named))


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[\w-]+", text.lower()) if w not in FUNCTION_WORDS}


def simulate_named_words(request: CompletionRequest) -> Completion:
    """All at once: 10 on each token that is a content word of the explanation, 0 elsewhere."""
    assert request.distributions is not None
    segments = request.distributions.segments
    text = "".join(s.text for s in segments)
    explanation = text[text.rindex("Explanation: "):].split("\n", 1)[0]
    named = content_words(explanation.removeprefix("Explanation: ").removeprefix(formatting.NEURON_LEAD_IN))
    tokens = tuple(segments[i - 1].text.rsplit("\n", 1)[-1].removesuffix("\t").strip()
                   for i, s in enumerate(segments) if s.read_distribution)
    SIMULATED[explanation].append(tokens)
    candidates = request.distributions.candidates
    return Completion(distributions=tuple(
        tuple(1.0 if int(c) == (10 if token.lower() in named else 0) else 0.0 for c in candidates)
        for token in tokens))


def follows_explanations(request: CompletionRequest) -> Completion:
    if request.distributions is not None:
        return simulate_named_words(request)
    prompt = "\n".join(m.content for m in request.messages or ()) or request.prompt or ""
    return _explain(prompt, request)




def no_choices(request: CompletionRequest) -> Completion:
    """A server that answers every request with no choices at all."""
    return Completion(choices=())


def unreadable_explanations(request: CompletionRequest) -> Completion:
    """Simulates as `follows_explanations`, but every explanation answer is unparseable (100 prompt tokens)."""
    if request.distributions is not None:
        return simulate_named_words(request)
    return Completion(choices=(Choice(text="unknown"),), usage=Usage(prompt_tokens=100, completion_tokens=1))


def predicts_nothing(request: CompletionRequest) -> Completion:
    """Explains as `follows_explanations`, but simulates 0 at every token (a constant prediction)."""
    if request.distributions is None:
        return follows_explanations(request)
    slots = sum(s.read_distribution for s in request.distributions.segments)
    return Completion(distributions=tuple(tuple(1.0 if c == "0" else 0.0 for c in request.distributions.candidates)
                                          for _ in range(slots)))


async def slowly_follows_explanations(request: CompletionRequest) -> Completion:
    """`follows_explanations`, 20 ms per request (so a run lasts long enough to be killed part-way)."""
    await asyncio.sleep(0.02)
    return follows_explanations(request)
