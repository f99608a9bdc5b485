"""Synthetic units and scripted judges for the scorer tests.

A unit's excerpts are 8 tokens, each with a unique first token, so a responder can tell from an excerpt's
text alone which one it is and answer from the truth (or against it) without any model.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from neuroscribe.llm.base import Choice, Completion, CompletionRequest, TokenLogprob
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.records import ActivationRecord, ScoringSet, UnitId
from neuroscribe.scorers import ScorerInput
from neuroscribe.scorers.examples import MARK_CLOSE, MARK_OPEN, render

__all__ = ["MARK_CLOSE", "MARK_OPEN"]

UNIT = UnitId(3, 7)
EXPLANATION = "the word apple"
_LINE = re.compile(r"^(\d+)\. (.*)$", re.MULTILINE)


def record(name: str, peak: float, at: int = 4) -> ActivationRecord:
    tokens = [f" {name}", " a", " b", " c", " apple", " d", " e", "."]
    activations = [0.0] * len(tokens)
    activations[at] = peak
    return ActivationRecord(tokens=tokens, activations=activations)


def unit_inputs(*, n_quantiles: int = 4, per_quantile: int = 10, n_random: int = 20, explanation: str = EXPLANATION,
                with_quantiles: bool = True, seed: int = 0) -> ScorerInput:
    """Quantile q holds excerpts peaking at (q + 1) / n_quantiles of the max (10); the random pool is all zeros."""
    quantiles = [[record(f"q{q}x{i}", 10.0 * (q + 1) / n_quantiles) for i in range(per_quantile)]
                 for q in range(n_quantiles)]
    top = [record(f"top{i}", 10.0) for i in range(per_quantile)]
    return ScorerInput(unit=UNIT, explanation=explanation, max_activation=10.0,
                       quantiles=quantiles if with_quantiles else [],
                       random_pool=[record(f"r{i}", 0.0) for i in range(n_random)],
                       scoring=ScoringSet(top=top, random=[]), seed=seed)


def question_of(request: CompletionRequest) -> str:
    """The last question of a prompt (chat: the last user turn; completion: after the last 'Excerpts:')."""
    if request.messages is not None:
        return request.messages[-1].content
    text = request.prompt or ""
    return text[text.rindex("Excerpts:"):]


def excerpts_of(request: CompletionRequest) -> list[str]:
    return [m.group(2) for m in _LINE.finditer(question_of(request))]


def unmarked(text: str) -> str:
    return text.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")


def verdicts_choice(p_yes: Sequence[float], says_yes: Sequence[bool] | None = None) -> Choice:
    """`N: yes|no` lines with logprobs whose answer token holds P(yes) (and P(no) = 1 - P(yes))."""
    says = [p >= 0.5 for p in p_yes] if says_yes is None else list(says_yes)
    tokens = []
    for i, (p, yes) in enumerate(zip(p_yes, says, strict=True), start=1):
        word = " yes" if yes else " no"
        top = ((" yes", math.log(max(p, 1e-9))), (" no", math.log(max(1 - p, 1e-9))))
        top = top if yes else top[::-1]
        tokens += [TokenLogprob(str(i), 0.0), TokenLogprob(":", 0.0), TokenLogprob(word, top[0][1], top)]
        if i < len(p_yes):
            tokens.append(TokenLogprob("\n", 0.0))
    return Choice(text="".join(t.token for t in tokens), logprobs=tuple(tokens))


def yes_no_judge(p_yes: Callable[[str], float]) -> ScriptedBackend:
    """A backend answering every excerpt with P(yes) = p_yes(excerpt text as shown)."""
    def respond(request: CompletionRequest) -> Completion:
        return Completion(choices=(verdicts_choice([p_yes(t) for t in excerpts_of(request)]),))
    return ScriptedBackend(respond)


def text_judge(answer: Callable[[CompletionRequest], str], **kwargs: object) -> ScriptedBackend:
    return ScriptedBackend(lambda request: Completion(choices=(Choice(text=answer(request)),)), **kwargs)  # type: ignore[arg-type]


def coin(text: str, salt: str = "") -> float:
    """A pseudo-random number in [0, 1) fixed by the text: an answer independent of the truth."""
    digest = hashlib.sha256(f"{salt}|{text}".encode()).digest()
    return float(np.random.default_rng(int.from_bytes(digest[:8], "little")).random())


def shown_truth(shown: Sequence[object]) -> dict[str, bool]:
    return {s.text: s.target for s in shown}  # type: ignore[attr-defined]


def plain(r: ActivationRecord) -> str:
    return render(r.tokens)
