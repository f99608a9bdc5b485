"""The evidence components declare, built lazily per unit and only when declared.

Which evidence a unit kind can provide is known here, so a config asking for what its units cannot
give (token-pair records of an MLP neuron, per-token records of an attention head) is refused when it
is loaded. Explainers get the explaining (train) split; scorers get the scored and calibration
splits; no component can reach the other side.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from neuroscribe.errors import ConfigError, DataError, NeuroscribeError, StageError
from neuroscribe.experiments.config import ExperimentConfig
from neuroscribe.experiments.store import RunStore
from neuroscribe.explainer.base import ExplainerInput
from neuroscribe.records import (
    ActivationRecord,
    Evidence,
    NeuronRecord,
    RecordSplits,
    ScoringSet,
    SliceParams,
    TokenPairRecord,
    UnitId,
    UnitKind,
    split_records,
)
from neuroscribe.results import TokenLookupTableSummaryOfNeuron, WeightBasedSummaryOfNeuron
from neuroscribe.scorers.base import ScorerInput

logger = logging.getLogger(__name__)
R = TypeVar("R", bound=ActivationRecord)
T = TypeVar("T")
_Cut = Callable[[RecordSplits], list[ActivationRecord]]
"""Which excerpts of another unit's splits a component gets."""

PROVIDED: Mapping[UnitKind, frozenset[Evidence]] = {
    UnitKind.MLP_NEURON: frozenset({Evidence.ACTIVATION_RECORDS, Evidence.TOKEN_LOOKUP_TABLE,
                                    Evidence.WEIGHT_SUMMARY, Evidence.OTHER_UNITS_RECORDS,
                                    Evidence.QUANTILE_RECORDS}),
    UnitKind.AUTOENCODER_LATENT: frozenset({Evidence.ACTIVATION_RECORDS, Evidence.TOKEN_LOOKUP_TABLE,
                                            Evidence.OTHER_UNITS_RECORDS, Evidence.QUANTILE_RECORDS}),
    UnitKind.ATTENTION_HEAD: frozenset({Evidence.TOKEN_PAIR_RECORDS, Evidence.OTHER_UNITS_RECORDS}),
}
"""What the runner can build for each unit kind (weight summaries come from published datasets)."""


def check_evidence(needs: frozenset[Evidence], kind: UnitKind, where: str) -> None:
    missing = sorted(needs - PROVIDED[kind])
    if missing:
        raise ConfigError(
            f"{where} needs {', '.join(missing)}, which {kind.value} units cannot provide (they provide "
            f"{', '.join(sorted(PROVIDED[kind]))}); for [units] kind = {kind.value!r} use {_fitting(kind)} "
            "(or turn off the control that needs it)"
        )


def _fitting(kind: UnitKind) -> str:
    """The registered explainers and scorers whose declared evidence `kind` units provide."""
    from neuroscribe.explainer import EXPLAINERS
    from neuroscribe.scorers import SCORERS

    parts = []
    for noun, registry in (("explainers", EXPLAINERS), ("scorers", SCORERS)):
        names = [repr(n) for n in registry.names() if registry.get(n).evidence <= PROVIDED[kind]]
        parts.append(f"{noun} {', '.join(names) or '(none)'}")
    return " and ".join(parts)


class EvidenceBuilder:
    """Loads each unit's record once (from the run directory, else the dataset) and cuts what is asked."""

    def __init__(self, config: ExperimentConfig, store: RunStore, dataset: str) -> None:
        self.config = config
        self.store = store
        self.dataset = dataset
        self.all_units = config.units.resolve(config.seed)
        self._records: dict[UnitId, asyncio.Task[NeuronRecord]] = {}

    # --- records ------------------------------------------------------------------------------

    def record(self, unit: UnitId) -> asyncio.Task[NeuronRecord]:
        """The unit's record; a failure to load or cut it is a `StageError` at stage 'records'."""
        if unit not in self._records:
            self._records[unit] = asyncio.get_running_loop().create_task(self._load_record(unit))
        return self._records[unit]

    def forget(self, unit: UnitId) -> None:
        """Done with the unit: drop it from memory (a later need reads RUN/records again)."""
        task = self._records.pop(unit, None)
        if task is not None and not task.done():
            task.cancel()

    def pending(self) -> list[asyncio.Task[NeuronRecord]]:
        return list(self._records.values())

    async def _load_record(self, unit: UnitId) -> NeuronRecord:
        return await _at_records(self._read_record(unit))

    async def _read_record(self, unit: UnitId) -> NeuronRecord:
        saved = await asyncio.to_thread(self.store.read_record, unit)
        if saved is not None:
            return saved
        from neuroscribe.datasets import UnitRef, load_neuron_record

        ref = UnitRef.of(self.dataset, unit)
        record = await asyncio.to_thread(load_neuron_record, ref, self.config.records.data_root or None)
        if not record.most_positive_activation_records:
            raise DataError(f"{ref}: the record has no top-activating excerpts to explain")
        await asyncio.to_thread(self.store.write_record, unit, record)
        return record

    def splits(self, record: NeuronRecord) -> RecordSplits:
        params = SliceParams(n_examples_per_split=self.config.records.n_per_split,
                             disjoint=self.config.records.disjoint)
        return split_records(record, params)

    def scored_split(self, splits: RecordSplits, split: str | None = None) -> ScoringSet:
        """The scored split (`[records] score_split`), or `split` (e.g. the selection split of best-of-n)."""
        scored: ScoringSet = getattr(splits, split or self.config.records.score_split)
        return scored

    # --- what components get ------------------------------------------------------------------

    async def explainer_input(self, unit: UnitId, needs: frozenset[Evidence]) -> ExplainerInput:
        """What an explainer declared, from the train split; any failure is a `StageError` at 'records'."""
        return await _at_records(self._explainer_input(unit, needs))

    async def scorer_input(self, unit: UnitId, explanation: str, needs: frozenset[Evidence],
                           split: str | None = None) -> ScorerInput:
        """What a scorer declared, from the held-out splits (the scored one, or `split`); any failure is a
        `StageError` at 'records'."""
        return await _at_records(self._scorer_input(unit, explanation, needs, split))

    async def _explainer_input(self, unit: UnitId, needs: frozenset[Evidence]) -> ExplainerInput:
        splits = self.splits(await self.record(unit))
        shown = splits.train
        _require_finite(shown, unit)
        records = _of_type(shown, ActivationRecord, unit) if Evidence.ACTIVATION_RECORDS in needs else []
        pairs = _of_type(shown, TokenPairRecord, unit) if Evidence.TOKEN_PAIR_RECORDS in needs else []
        scale_from = records or pairs
        return ExplainerInput(
            unit=unit,
            records=records,
            token_pair_records=pairs,
            max_activation=max((r.max_activation for r in scale_from), default=0.0),
            lookup_table=await self._lookup_table(unit, shown) if Evidence.TOKEN_LOOKUP_TABLE in needs else None,
            weight_summary=await self._weight_summary(unit) if Evidence.WEIGHT_SUMMARY in needs else None,
            other_units_records=(await self._other_units(unit, lambda s: s.train)
                                 if Evidence.OTHER_UNITS_RECORDS in needs else {}),
        )

    async def _scorer_input(self, unit: UnitId, explanation: str, needs: frozenset[Evidence],
                            split: str | None) -> ScorerInput:
        record = await self.record(unit)
        splits = self.splits(record)
        scored = self.scored_split(splits, split)
        empty = ScoringSet(top=[], random=[])
        activations = Evidence.ACTIVATION_RECORDS in needs
        shown = {tuple(r.tokens) for r in splits.train}
        quantiles = (record.random_sample_by_quantile or []) if Evidence.QUANTILE_RECORDS in needs else []
        return ScorerInput(
            unit=unit,
            explanation=explanation,
            scoring=_set_of_type(scored, ActivationRecord, unit) if activations else empty,
            calibration=_set_of_type(splits.calibration, ActivationRecord, unit) if activations else empty,
            random_pool=([r for r in _of_type(record.random_sample, ActivationRecord, unit)
                          if tuple(r.tokens) not in shown] if activations else []),
            max_activation=max((r.max_activation for r in record.most_positive_activation_records), default=0.0),
            quantiles=[[r for r in _of_type(bucket, ActivationRecord, unit) if tuple(r.tokens) not in shown]
                       for bucket in quantiles],
            quantile_boundaries=list(record.quantile_boundaries or []) if quantiles else [],
            token_pair_scoring=(_set_of_type(scored, TokenPairRecord, unit)
                                if Evidence.TOKEN_PAIR_RECORDS in needs else empty),
            lookup_table=(await self._lookup_table(unit, splits.train)
                          if Evidence.TOKEN_LOOKUP_TABLE in needs else None),
            weight_summary=await self._weight_summary(unit) if Evidence.WEIGHT_SUMMARY in needs else None,
            other_units_records=(await self._other_units(unit, lambda s: self.scored_split(s).top)
                                 if Evidence.OTHER_UNITS_RECORDS in needs else {}),
            seed=self.config.sampling_seed,
        )

    async def _lookup_table(self, unit: UnitId, shown: Sequence[ActivationRecord]) -> TokenLookupTableSummaryOfNeuron:
        """The dataset's activation-based token table; computed from the explained excerpts where it has none."""
        from neuroscribe.datasets import UnitRef, load_token_lookup

        ref = UnitRef.of(self.dataset, unit)
        try:
            return await asyncio.to_thread(load_token_lookup, ref, self.config.records.data_root or None)
        except NeuroscribeError as error:
            logger.info("%s: no token look-up table (%s); averaging over the explained excerpts", ref, error)
            return token_lookup_table(shown)

    async def _weight_summary(self, unit: UnitId) -> WeightBasedSummaryOfNeuron:
        from neuroscribe.datasets import UnitRef, load_weight_summary

        ref = UnitRef.of(self.dataset, unit)
        return await asyncio.to_thread(load_weight_summary, ref, self.config.records.data_root or None)

    async def _other_units(self, unit: UnitId, cut: _Cut) -> dict[UnitId, list[ActivationRecord]]:
        others = other_units(unit, self.all_units, self.config.records.other_units,
                             self.config.sampling_seed)
        records = await asyncio.gather(*(self.record(other) for other in others))
        return {other: cut(self.splits(record)) for other, record in zip(others, records, strict=True)}


def split_disjointness(config: ExperimentConfig, dataset: str) -> str:
    """How the run keeps explanation and scoring excerpts apart (run.json `disjointness`, the report's
    'Splits disjoint by'): by document where the dataset kept excerpt sources (collected data), else by
    tokens with `[records] disjoint`, else not at all (the paper's slicing of published data)."""
    from neuroscribe.datasets import Artifact, UnitRef, get_dataset

    first = UnitRef.of(dataset, config.units.resolve(config.seed)[0]).dataset  # one autoencoder's, of several
    if Artifact.EXCERPT_SOURCES in get_dataset(first).templates:
        return "documents"
    return f"{'tokens' if config.records.disjoint else 'none'} (the dataset has no document ids)"


async def _at_records(work: Awaitable[T]) -> T:
    try:
        return await work
    except StageError:
        raise
    except NeuroscribeError as error:
        raise StageError("records", error) from error


def other_units(unit: UnitId, units: Sequence[UnitId], n: int, seed: int) -> list[UnitId]:
    """`n` other units of the run, drawn with the seed and the unit (the same in every process and shard)."""
    pool = [u for u in units if u != unit]
    return sorted(random.Random(f"other-units:{seed}:{unit}").sample(pool, min(n, len(pool))))


def _require_finite(shown: Sequence[ActivationRecord], unit: UnitId) -> None:
    """An explainer must not see a scale that an infinite or NaN activation broke (everything would show as 0)."""
    for number, record in enumerate(shown):
        bad = next((i for i, a in enumerate(record.activations) if not math.isfinite(a)), None)
        if bad is not None:
            raise DataError(f"{unit}: excerpt {number} of the explaining (train) split has a non-finite activation "
                            f"({record.activations[bad]}) at position {bad}; the 0-10 scale cannot be drawn from "
                            "it: fix or drop the record")


def _of_type(records: Sequence[ActivationRecord], kind: type[R], unit: UnitId) -> list[R]:
    pairs_wanted = kind is TokenPairRecord
    wrong = [r for r in records if isinstance(r, TokenPairRecord) != pairs_wanted]
    if wrong:
        raise DataError(f"{unit}: the record's excerpts are {type(wrong[0]).__name__}s, but a component of the "
                        f"config needs {kind.__name__}s; is [units] kind right for this dataset?")
    return [r for r in records if isinstance(r, kind)]


def _set_of_type(records: ScoringSet, kind: type[ActivationRecord], unit: UnitId) -> ScoringSet:
    return ScoringSet(top=_of_type(records.top, kind, unit), random=_of_type(records.random, kind, unit))


def token_lookup_table(records: Sequence[ActivationRecord], size: int = 50,
                       min_count: int = 2) -> TokenLookupTableSummaryOfNeuron:
    """Tokens with the highest average activation over `records` (seen at least `min_count` times).

    Token-pair records (attention heads) have no activation per token, so they have no such table."""
    if any(isinstance(r, TokenPairRecord) for r in records):
        raise DataError("a token look-up table averages one activation per token, and these excerpts hold one per "
                        "(query, key) pair (an attention head); attention heads have no look-up table")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for record in records:
        for token, activation in zip(record.tokens, record.activations, strict=True):
            sums[token] = sums.get(token, 0.0) + activation
            counts[token] = counts.get(token, 0) + 1
    frequent = [t for t in sums if counts[t] >= min_count] or list(sums)
    ranked = sorted(frequent, key=lambda t: sums[t] / counts[t], reverse=True)[:size]
    return TokenLookupTableSummaryOfNeuron(tokens=ranked, average_activations=[sums[t] / counts[t] for t in ranked])
