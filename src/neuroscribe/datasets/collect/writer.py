"""Write collated statistics as a local dataset: published-format records per unit plus `dataset.json`.

Layout (read by `neuroscribe.datasets`):

    DIR/dataset.json                                          manifest (written last: marks completion)
    DIR/collated-activations/{layer}/{index}.json             NeuronRecord (the published format, as published)
    DIR/excerpt-sources/{layer}/{index}.json                  ExcerptSources: each excerpt's document and offset
    DIR/related-tokens/activation-based/{layer}/{index}.json  TokenLookupTableSummaryOfNeuron
    DIR/related-tokens/weight-based/{layer}/{index}.json      WeightBasedSummaryOfNeuron (optional)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from neuroscribe.records import (
    ActivationRecord,
    ExcerptSource,
    ExcerptSources,
    NeuronId,
    NeuronRecord,
    TokenPairRecord,
    UnitKind,
)
from neuroscribe.results import TokenLookupTableSummaryOfNeuron
from neuroscribe.serialization import OMITTED_WHEN_NONE, TAG, atomic_write_text, dumps

from .collation import CollationResult

MANIFEST = "dataset.json"
RECORDS_DIR = "collated-activations"
SOURCES_DIR = "excerpt-sources"
LOOKUP_DIR = "related-tokens/activation-based"
WEIGHT_DIR = "related-tokens/weight-based"
DECIMALS = 4
"""Activations are rounded like the published files (4 decimals)."""


def write_file(path: Path, text: str) -> None:
    """One record file, written atomically so an interrupted write never leaves half a record."""
    atomic_write_text(path, text + "\n")


def unit_path(root: Path, folder: str, layer: int, index: int) -> Path:
    return root / folder / str(layer) / f"{index}.json"


def _rounded(values: torch.Tensor) -> list[float]:
    rounded: list[float] = values.double().round(decimals=DECIMALS).tolist()
    return rounded


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else round(value, DECIMALS)


class RecordBuilder:
    """Turns one unit's column of a `CollationResult` into a `NeuronRecord`."""

    def __init__(self, result: CollationResult, token_strings: Callable[[Sequence[int]], list[str]],
                 kind: UnitKind) -> None:
        self.result = result
        self.token_strings = token_strings
        self.record_type = TokenPairRecord if kind is UnitKind.ATTENTION_HEAD else ActivationRecord

    def _records(self, activations: torch.Tensor, tokens: torch.Tensor) -> list[ActivationRecord]:
        """activations `[n, P]`, tokens `[n, T]`."""
        return [
            self.record_type(tokens=self.token_strings(t), activations=_rounded(a))
            for a, t in zip(activations, tokens.tolist(), strict=True)
        ]

    def _random_rows(self, column: int) -> torch.Tensor:
        rows = self.result.random_rows[:, column]
        return rows[rows >= 0]

    def _quantile_rows(self, column: int) -> list[torch.Tensor]:
        return [chosen.nonzero().squeeze(1) for chosen in self.result.quantile_chosen[:, :, column]]

    def record(self, column: int, neuron_id: NeuronId) -> NeuronRecord:
        """The unit's record in the published format (no excerpt sources: those go beside it)."""
        r = self.result
        pool_acts = r.pool_activations[:, :, column]
        by_quantile = [self._records(pool_acts[rows], r.pool_tokens[rows]) for rows in self._quantile_rows(column)]
        random_rows = self._random_rows(column)
        boundaries: list[float | None] = [None, *_rounded(r.quantile_boundaries[:, column]), None]
        return NeuronRecord(
            neuron_id=neuron_id,
            most_positive_activation_records=self._records(r.top_activations[column], r.top_tokens[column]),
            random_sample=self._records(pool_acts[random_rows], r.pool_tokens[random_rows]),
            random_sample_by_quantile=by_quantile,
            quantile_boundaries=boundaries,
            mean=_optional(float(r.mean[column])),
            variance=_optional(float(r.variance[column])),
            skewness=_optional(float(r.skewness[column])),
            kurtosis=_optional(float(r.kurtosis[column])),
        )

    def sources(self, column: int) -> ExcerptSources:
        """Where each excerpt of `record(column, ...)` came from, list for list."""
        r = self.result

        def listed(sources: torch.Tensor) -> list[ExcerptSource]:
            return [(document, offset) for document, offset in sources.tolist()]

        return ExcerptSources(
            most_positive_activation_records=listed(r.top_sources[column]),
            random_sample=listed(r.pool_sources[self._random_rows(column)]),
            random_sample_by_quantile=[listed(r.pool_sources[rows]) for rows in self._quantile_rows(column)],
        )

    def lookup_table(self, column: int) -> TokenLookupTableSummaryOfNeuron | None:
        r = self.result
        if r.lookup_token_ids is None or r.lookup_averages is None:
            return None
        return TokenLookupTableSummaryOfNeuron(
            tokens=self.token_strings(r.lookup_token_ids[column].tolist()),
            average_activations=_rounded(r.lookup_averages[column]),
        )


def _tagged(obj: object) -> object:
    """Published JSON of a record built from plain lists (already finite): `serialization.to_json_obj`
    without its per-element checks, which dominate writing thousands of records (tests pin equal output)."""
    if isinstance(obj, ActivationRecord):
        return {TAG: type(obj).__name__, "tokens": obj.tokens, "activations": obj.activations}
    if isinstance(obj, list):
        return [_tagged(item) for item in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        omitted = OMITTED_WHEN_NONE.get(type(obj), frozenset())
        out: dict[str, object] = {TAG: type(obj).__name__}
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if not (value is None and field.name in omitted):
                out[field.name] = _tagged(value)
        return out
    return obj


def record_json(record: NeuronRecord | ExcerptSources) -> str:
    return json.dumps(_tagged(record), ensure_ascii=False, allow_nan=False)


def write_unit(root: Path, builder: RecordBuilder, column: int, layer: int, index: int) -> None:
    neuron_id = NeuronId(layer_index=layer, neuron_index=index)
    write_file(unit_path(root, RECORDS_DIR, layer, index), record_json(builder.record(column, neuron_id)))
    write_file(unit_path(root, SOURCES_DIR, layer, index), record_json(builder.sources(column)))
    table = builder.lookup_table(column)
    if table is not None:
        write_file(unit_path(root, LOOKUP_DIR, layer, index), dumps(table))
