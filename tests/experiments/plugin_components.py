"""Components defined outside the package, as a user would: an explainer that reads token-pair records and
a scorer of its own, each registered by importing this module (a config names it under `plugins`).

Neither asks a model, so the test that runs them is fast; the backend they are handed is the registered
`scripted` backend, whose responder here refuses to be called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from neuroscribe.errors import BackendError, DataError
from neuroscribe.explainer import EXPLAINERS
from neuroscribe.explainer.base import ExplainerInput, ExplainerOutput
from neuroscribe.llm.base import Backend, CallEstimate, Choice, Completion, CompletionRequest
from neuroscribe.records import Evidence, NeuronId, TokenPairRecord
from neuroscribe.results import ExplanationScores, JudgedExample
from neuroscribe.scorers import SCORERS, ScorerInput, ScorerOutput, ScoringShape
from neuroscribe.scoring import correlation


@dataclass(frozen=True, kw_only=True)
class NoOptions:
    """Neither component has options; an option in the config is refused like any misspelt one."""


def no_model_needed(request: CompletionRequest) -> Completion:
    raise BackendError("the plugin components never ask a model")


def answer_links(request: CompletionRequest) -> Completion:
    """A fixed answer for the built-in attention-head explainer, only once its prompt shows links."""
    prompt = "\n".join(m.content for m in request.messages or ()) or request.prompt or ""
    if "Strongest links:" not in prompt:
        raise BackendError("the attention-head prompt shows no (query, key) links")
    return Completion(choices=(Choice(text="attends from each token to the one before it."),))


class PairLinksExplainer:
    """Names the (key -> query) token link that the head weighs most, over the explaining excerpts."""

    options_type: ClassVar[type[Any]] = NoOptions
    evidence: ClassVar[frozenset[Evidence]] = frozenset({Evidence.TOKEN_PAIR_RECORDS})

    def __init__(self, backend: Backend, options: Any) -> None:
        self.backend = backend

    @classmethod
    def estimate(cls, options: Any, n_excerpts: int, excerpt_tokens: int) -> CallEstimate:
        return CallEstimate()

    async def explain(self, inputs: ExplainerInput) -> ExplainerOutput:
        if not inputs.token_pair_records:
            return ExplainerOutput(explanations=[], failures=[DataError(f"{inputs.unit}: no token-pair records")])
        best = max(((r, *r.top_pairs(1)[0]) for r in inputs.token_pair_records), key=lambda item: item[3])
        record, query, key, _ = best
        return ExplainerOutput(explanations=[f"{record.tokens[query].strip()} looking back at "
                                             f"{record.tokens[key].strip()}"])


class KeywordOverlapScorer:
    """Predicts that a held-out excerpt activates the head when it holds a word of the explanation, and
    correlates that guess with the excerpt's strongest pair activation."""

    options_type: ClassVar[type[Any]] = NoOptions
    evidence: ClassVar[frozenset[Evidence]] = frozenset({Evidence.TOKEN_PAIR_RECORDS})
    needs_explanation: ClassVar[bool] = True

    def __init__(self, backend: Backend, options: Any) -> None:
        self.backend = backend

    @classmethod
    def estimate(cls, options: Any, shape: ScoringShape) -> CallEstimate:
        return CallEstimate()

    async def score(self, inputs: ScorerInput) -> ScorerOutput:
        words = {w.lower() for w in inputs.explanation.split()}
        groups = {"top": inputs.token_pair_scoring.top, "random": inputs.token_pair_scoring.random}
        examples = [self._judge(group, record, words) for group, records in groups.items() for record in records]
        by_variant = {"top_and_random": examples, "top_only": [e for e in examples if e.group == "top"],
                      "random_only": [e for e in examples if e.group == "random"]}
        hits = {variant: correlation([e.target or 0.0 for e in chosen], [e.prediction or 0.0 for e in chosen]).value
                for variant, chosen in by_variant.items()}
        scores = {"keyword_hits": hits}
        result = ExplanationScores(neuron_id=NeuronId.from_unit(inputs.unit), explanation=inputs.explanation,
                                   scorer="keyword_overlap", scores=scores, examples=examples)
        return ScorerOutput(scores=scores, headline="keyword_hits", result=result)

    @staticmethod
    def _judge(group: str, record: TokenPairRecord, words: set[str]) -> JudgedExample:
        hit = any(token.strip().lower() in words for token in record.tokens)
        return JudgedExample(group=group, tokens=record.tokens, true_activations=record.activations,
                             target=record.max_activation, prediction=1.0 if hit else 0.0)


EXPLAINERS.register("pair_links")(PairLinksExplainer)
SCORERS.register("keyword_overlap")(KeywordOverlapScorer)
