"""Where a method's explanation comes from: an explainer, the published file, or another unit (a control).

Each source is one small class behind `ExplanationSource`; the runner asks a source by its label and
never looks at which kind it is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from neuroscribe.errors import BackendError, ConfigError, DataError, NeuroscribeError, describe
from neuroscribe.experiments.config import PUBLISHED, RANDOM_EXPLANATION, ExperimentConfig
from neuroscribe.experiments.evidence import EvidenceBuilder
from neuroscribe.explainer import create_explainer
from neuroscribe.explainer.base import Explainer
from neuroscribe.llm.base import Backend
from neuroscribe.records import UnitId


@dataclass(frozen=True)
class SourceContext:
    """What a source may use: the unit's evidence, and the (memoized) explanations of other sources."""

    evidence: EvidenceBuilder
    explanation_of: Callable[[str, UnitId], Awaitable[str]]


class ExplanationSource(Protocol):
    async def explain(self, unit: UnitId, context: SourceContext) -> str:
        """The explanation, or a `NeuroscribeError` (a `BackendError` when the backend was the problem)."""
        ...


@dataclass(frozen=True)
class ExplainerSource:
    """An explainer, given the evidence it declared."""

    explainer: Explainer

    async def explain(self, unit: UnitId, context: SourceContext) -> str:
        inputs = await context.evidence.explainer_input(unit, type(self.explainer).evidence)
        output = await self.explainer.explain(inputs)
        if not output.explanations:
            raise _no_explanation(unit, output.failures)
        return output.explanations[0]


def _no_explanation(unit: UnitId, failures: Sequence[NeuroscribeError]) -> NeuroscribeError:
    message = f"no explanation for {unit}: " + ("; ".join(describe(f) for f in failures)
                                                  or "the explainer returned none")
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

    async def explain(self, unit: UnitId, context: SourceContext) -> str:
        from neuroscribe.datasets import UnitRef, load_explanations

        ref = UnitRef(self.dataset, unit.layer, unit.index)
        published = await asyncio.to_thread(load_explanations, ref, self.data_root)
        for result in published:
            for scored in result.scored_explanations:
                if scored.explanation.strip():
                    return scored.explanation
        raise DataError(f"{ref}: the published explanations file has no explanation")


@dataclass(frozen=True)
class PartnerSource:
    """Another unit's explanation by source `of`: the random-explanation control."""

    of: str
    """The label of the source whose explanations are lent."""
    partners: Mapping[UnitId, UnitId]

    async def explain(self, unit: UnitId, context: SourceContext) -> str:
        partner = self.partners.get(unit)
        if partner is None:
            raise ConfigError("the random-explanation control needs at least 2 units")
        try:
            return await context.explanation_of(self.of, partner)
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


def build_sources(config: ExperimentConfig, backends: Mapping[str, Backend],
                  dataset: str) -> dict[str, ExplanationSource]:
    """Every source the config turns on, by label (explainers, then the controls)."""
    sources: dict[str, ExplanationSource] = {}
    for _, explainer, _ in config.explainer_configs():
        sources[explainer.label] = ExplainerSource(
            create_explainer(explainer.name, backends[explainer.backend], explainer.options))
    if config.controls.random_explanation:
        units = config.units.resolve(config.seed)
        sources[RANDOM_EXPLANATION] = PartnerSource(of=config.explainers[0].label,
                                                    partners=random_partners(units, config.seed))
    if config.controls.published:
        sources[PUBLISHED] = PublishedSource(dataset=dataset, data_root=config.records.data_root or None)
    return sources
