"""A scripted model that follows explanations word for word, for the sanity checks.

As an explainer it names every token that fires in the excerpts it is shown ("the words cat and dog").
As an all-at-once simulator (`explanation_following.simulate_named_words`) it predicts 10 on each token that
is a word of the explanation and 0 elsewhere, so a wrong, an incomplete or a padded explanation predicts
worse wherever the excerpts hold the words involved. It reads nothing but the prompt: it never sees the
true activations of what it simulates.
"""

from __future__ import annotations

from explanation_following import content_words, simulate_named_words
from neuroscribe.llm.base import Choice, Completion, CompletionRequest

__all__ = ["content_words", "follows_words"]


def _explain(prompt: str) -> Completion:
    shown = prompt[prompt.rindex("Excerpts (token<TAB>value):"):]
    pairs = [line.rsplit("\t", 1) for line in shown.splitlines() if "\t" in line]
    firing = [token.strip() for token, value in pairs if value.strip().isdigit() and int(value) > 0]
    return Completion(choices=(Choice(text=f"the words {' and '.join(dict.fromkeys(firing))}."),))


def follows_words(request: CompletionRequest) -> Completion:
    if request.distributions is not None:
        return simulate_named_words(request)
    return _explain("\n".join(m.content for m in request.messages or ()) or request.prompt or "")
