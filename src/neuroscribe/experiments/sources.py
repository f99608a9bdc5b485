"""Where a method's explanation comes from: an explainer, the published file, or another unit (a control).

Each source is one small class behind `ExplanationSource`; the runner asks a source by its label and
never looks at which kind it is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from neuroscribe.errors import BackendError, ConfigError, DataError, NeuroscribeError, describe
from neuroscribe.experiments.config import (
    PUBLISHED,
    RANDOM_EXPLANATION,
    ExperimentConfig,
    candidates_of,
    selection_scorer,
)
from neuroscribe.experiments.evidence import EvidenceBuilder
from neuroscribe.experiments.store import Candidate
from neuroscribe.explainer import EXPLAINERS, create_explainer
from neuroscribe.explainer.base import Explainer
from neuroscribe.llm.base import Backend
from neuroscribe.records import UnitId
from neuroscribe.registry import registered_options
from neuroscribe.scorers import Scorer
from neuroscribe.scorers.base import primary_variant


@dataclass(frozen=True)
class SourceContext:
    """What a source may use: the unit's evidence, and the (memoized) explanations of other sources."""

    evidence: EvidenceBuilder
    explanation_of: Callable[[str, UnitId], Awaitable[str]]


@dataclass(frozen=True, kw_only=True)
class Sourced:
    """A source's explanation, and the candidates it was chosen from (best-of-n; empty otherwise)."""

    text: str
    candidates: tuple[Candidate, ...] = ()
    selection: Mapping[str, str] = field(default_factory=dict)


class ExplanationSource(Protocol):
    async def explain(self, unit: UnitId, context: SourceContext) -> Sourced:
        """The explanation, or a `NeuroscribeError` (a `BackendError` when the backend was the problem)."""
        ...


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Best-of-n: score every candidate with `scorer` on `split` and keep the one with the highest `score`."""

    scorer: Scorer
    scorer_label: str
    score: str
    """Score name; empty means the scorer's headline."""
    variant: str
    """Variant; empty means the score's primary variant."""
    split: str

    async def judge(self, unit: UnitId, explanation: str, evidence: EvidenceBuilder) -> tuple[float | None, str, str]:
        """The deciding score of one candidate, with the score's name and variant as resolved."""
        inputs = await evidence.scorer_input(unit, explanation, type(self.scorer).evidence, split=self.split)
        output = await self.scorer.score(inputs)
        name = self.score or output.headline
        if name not in output.scores:
            raise DataError(f"select.score {name!r} is not a score of {self.scorer_label!r}; it gives "
                            f"{', '.join(output.scores)}")
        variants = output.scores[name]
        variant = self.variant or primary_variant(variants) or ""
        if variant not in variants:
            raise DataError(f"select.variant {variant!r} is not a variant of {name!r}; it has {', '.join(variants)}")
        return variants[variant], name, variant


@dataclass(frozen=True)
class ExplainerSource:
    """An explainer, given the evidence it declared; with several candidates, the best on the selection split."""

    explainer: Explainer
    selection: Selection | None = None

    async def explain(self, unit: UnitId, context: SourceContext) -> Sourced:
        inputs = await context.evidence.explainer_input(unit, type(self.explainer).evidence)
        output = await self.explainer.explain(inputs)
        if not output.explanations:
            raise _no_explanation(unit, output.failures)
        if self.selection is None or len(output.explanations) == 1:
            return Sourced(text=output.explanations[0])
        return await self._choose(unit, output.explanations, context.evidence, self.selection)

    @staticmethod
    async def _choose(unit: UnitId, explanations: Sequence[str], evidence: EvidenceBuilder,
                      selection: Selection) -> Sourced:
        judged = await asyncio.gather(*(selection.judge(unit, e, evidence) for e in explanations),
                                      return_exceptions=True)
        errors = [j for j in judged if isinstance(j, BaseException)]
        for error in errors:
            if not isinstance(error, NeuroscribeError):
                raise error  # a bug, not a candidate's failure
        if len(errors) == len(judged):
            failures = [e for e in errors if isinstance(e, NeuroscribeError)]
            raise _no_explanation(unit, failures, "no candidate could be scored for the choice")
        resolved = [j for j in judged if not isinstance(j, BaseException)]
        scores = [None if isinstance(j, BaseException) else j[0] for j in judged]
        defined = [i for i, score in enumerate(scores) if score is not None]
        best = max(defined, key=lambda i: (scores[i], -i)) if defined else 0  # ties: the earlier candidate
        candidates = tuple(
            Candidate(explanation=e, selection_score=score, chosen=i == best,
                      error=describe(j) if isinstance(j, NeuroscribeError) else None)
            for i, (e, score, j) in enumerate(zip(explanations, scores, judged, strict=True))
        )
        described = {"scorer": selection.scorer_label, "score": resolved[0][1], "variant": resolved[0][2],
                     "split": selection.split}
        if not defined:
            described["note"] = "no candidate had a defined selection score; the first was kept"
        return Sourced(text=explanations[best], candidates=candidates, selection=described)


def _no_explanation(unit: UnitId, failures: Sequence[NeuroscribeError],
                    why: str = "the explainer returned none") -> NeuroscribeError:
    message = f"no explanation for {unit}: {why}" + "".join(f"; {describe(f)}" for f in failures)
    backend_errors = [f for f in failures if isinstance(f, BackendError)]
    if failures and len(backend_errors) == len(failures):  # every candidate failed for the backend's reasons
        first = backend_errors[0]
        return BackendError(message, retryable=first.retryable, status_code=first.status_code)
    return DataError(message)


@dataclass(frozen=True)
class PublishedSource:
    """The first non-empty explanation of the dataset's published explanations file."""

    dataset: str
    data_root: str | None

    async def explain(self, unit: UnitId, context: SourceContext) -> Sourced:
        from neuroscribe.datasets import UnitRef, load_explanations

        ref = UnitRef.of(self.dataset, unit)
        published = await asyncio.to_thread(load_explanations, ref, self.data_root)
        for result in published:
            for scored in result.scored_explanations:
                if scored.explanation.strip():
                    return Sourced(text=scored.explanation)
        raise DataError(f"{ref}: the published explanations file has no explanation")


@dataclass(frozen=True)
class PartnerSource:
    """Another unit's explanation by source `of`: the random-explanation control."""

    of: str
    """The label of the source whose explanations are lent."""
    partners: Mapping[UnitId, UnitId]

    async def explain(self, unit: UnitId, context: SourceContext) -> Sourced:
        partner = self.partners.get(unit)
        if partner is None:
            raise ConfigError("the random-explanation control needs at least 2 units")
        try:
            return Sourced(text=await context.explanation_of(self.of, partner))
        except NeuroscribeError as error:
            message = f"the explanation of {partner} (this unit's random-explanation control) failed: {error}"
            raise (BackendError(message) if isinstance(error, BackendError) else DataError(message)) from error


def random_partners(units: Sequence[UnitId], seed: int) -> dict[UnitId, UnitId]:
    """A seeded derangement: every unit gets another unit whose explanation is its random control.

    It depends only on the set of units and the seed, so every shard and every resumed run agree.
    """
    if len(units) < 2:
        return {}
    order = sorted(units)
    random.Random(f"random-explanation:{seed}").shuffle(order)
    return {unit: order[(i + 1) % len(order)] for i, unit in enumerate(order)}


def build_sources(config: ExperimentConfig, backends: Mapping[str, Backend], scorers: Mapping[str, Scorer],
                  dataset: str) -> dict[str, ExplanationSource]:
    """Every source the config turns on, by label (explainers, then the controls); `scorers` by label."""
    sources: dict[str, ExplanationSource] = {}
    for where, explainer, _ in config.explainer_configs():
        made = create_explainer(explainer.name, backends[explainer.backend], explainer.options)
        selection = None
        if candidates_of(registered_options(EXPLAINERS, explainer.name, explainer.options)) > 1:
            chooser = selection_scorer(config, explainer.select, where)
            selection = Selection(scorer=scorers[chooser.label], scorer_label=chooser.label,
                                  score=explainer.select.score, variant=explainer.select.variant,
                                  split=explainer.select.split)
        sources[explainer.label] = ExplainerSource(made, selection)
    if config.controls.random_explanation:
        units = config.units.resolve(config.seed)
        sources[RANDOM_EXPLANATION] = PartnerSource(of=config.explainers[0].label,
                                                    partners=random_partners(units, config.sampling_seed))
    if config.controls.published:
        sources[PUBLISHED] = PublishedSource(dataset=dataset, data_root=config.records.data_root or None)
    return sources
