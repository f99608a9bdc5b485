"""The record model: what a unit did on which text.

Plain dataclasses whose field names follow the published neuron-explainer JSON, so that
`serialization` can read and write them without renaming. Derived values are small properties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from neuroscribe.errors import ConfigError, DataError


class UnitKind(StrEnum):
    """What sort of unit of the subject model a record describes."""

    MLP_NEURON = "mlp_neuron"
    ATTENTION_HEAD = "attention_head"
    AUTOENCODER_LATENT = "autoencoder_latent"

    @classmethod
    def _missing_(cls, value: object) -> UnitKind | None:
        """'sae_latent', as much of the field names them, reads as autoencoder latents (written as ours)."""
        return cls.AUTOENCODER_LATENT if value == "sae_latent" else None


class Evidence(StrEnum):
    """What a component may declare it needs about a unit; the runner builds only what is declared.

    Explainers get the explaining (train) split; scorers get the held-out (scoring and calibration)
    splits, so no component can take evidence from the wrong side of the split by accident.
    """

    ACTIVATION_RECORDS = "activation_records"
    """Excerpts with one activation per token (MLP neurons, autoencoder latents)."""
    TOKEN_PAIR_RECORDS = "token_pair_records"
    """Excerpts with one activation per (query, key) token pair (attention heads)."""
    TOKEN_LOOKUP_TABLE = "token_lookup_table"
    """Tokens with the highest average activation (the dataset's table, else computed from the train split)."""
    WEIGHT_SUMMARY = "weight_summary"
    """Tokens whose embeddings most drive, or are most driven by, the unit (published datasets)."""
    OTHER_UNITS_RECORDS = "other_units_records"
    """Top excerpts of other units of the run (e.g. for intruders or negatives)."""
    QUANTILE_RECORDS = "quantile_records"
    """Excerpts sampled within each activation quantile of the unit (never shown to an explainer)."""


@dataclass(frozen=True, order=True)
class UnitId:
    """A unit of a subject model: layer, index within the layer, and kind."""

    layer: int
    index: int
    kind: UnitKind = UnitKind.MLP_NEURON
    sae: str = ""
    """The autoencoder a latent belongs to, where a collection has several (its `saes` id); empty otherwise."""

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.ref}"

    @property
    def ref(self) -> str:
        """'layer/index', or 'sae:layer/index' for a latent of one of several autoencoders (as [units] refs)."""
        return f"{self.sae}:{self.layer}/{self.index}" if self.sae else f"{self.layer}/{self.index}"


@dataclass(frozen=True)
class NeuronId:
    """The published identifier of a unit (field names as in the published files)."""

    layer_index: int
    neuron_index: int
    sae: str | None = None
    """neuroscribe's: the autoencoder of a latent of one of several (`UnitId.sae`); written only when set."""

    def to_unit(self, kind: UnitKind = UnitKind.MLP_NEURON) -> UnitId:
        return UnitId(self.layer_index, self.neuron_index, kind, self.sae or "")

    @classmethod
    def from_unit(cls, unit: UnitId) -> NeuronId:
        return cls(layer_index=unit.layer, neuron_index=unit.index, sae=unit.sae or None)


@dataclass
class ActivationRecord:
    """One excerpt: its tokens and the unit's activation at each token.

    For attention heads the activations are per (query, key) pair instead, see `TokenPairRecord`.
    """

    tokens: list[str]
    activations: list[float]

    def __post_init__(self) -> None:
        if len(self.activations) != len(self.tokens):
            raise DataError(f"the record has {len(self.tokens)} tokens but {len(self.activations)} activations; "
                            "it needs one activation per token")

    @classmethod
    def decoded_as(cls, fields: Mapping[str, object]) -> type[ActivationRecord]:
        """The class a decoded record is built as: published token-pair files tag their records
        'ActivationRecord', and pair-shaped activations (one per (query, key) pair of the lower triangle)
        make such a record the `TokenPairRecord` it is."""
        tokens, activations = fields.get("tokens"), fields.get("activations")
        if (cls is ActivationRecord and isinstance(tokens, list) and isinstance(activations, list)
                and len(tokens) > 1 and len(activations) == n_pairs(len(tokens))):
            return TokenPairRecord
        return cls

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0


def pair_index(query: int, key: int) -> int:
    """Index of (query, key), key <= query, in a row-major flattened lower triangle."""
    if not 0 <= key <= query:
        raise ValueError(f"token pair (query={query}, key={key}) is not in the lower triangle")
    return query * (query + 1) // 2 + key


def n_pairs(n_tokens: int) -> int:
    return n_tokens * (n_tokens + 1) // 2


@dataclass
class TokenPairRecord(ActivationRecord):
    """An excerpt with one activation per (query, key) token pair, key <= query.

    `activations` is the flattened lower triangle, row-major: pair (i, j) sits at i*(i+1)/2 + j.
    It is an `ActivationRecord` so it can sit in a `NeuronRecord`'s lists (attention-head datasets);
    code that pairs tokens with activations one to one must check for it.
    """

    def __post_init__(self) -> None:
        expected = n_pairs(len(self.tokens))
        if len(self.activations) != expected:
            raise DataError(
                f"token-pair record has {len(self.tokens)} tokens, so it needs {expected} pair activations "
                f"(lower triangle), but has {len(self.activations)}"
            )

    def activation(self, query: int, key: int) -> float:
        return self.activations[pair_index(query, key)]

    def top_pairs(self, k: int) -> list[tuple[int, int, float]]:
        """The k strongest (query, key, activation) pairs, strongest first."""
        pairs = [
            (q, key, self.activations[pair_index(q, key)])
            for q in range(len(self.tokens))
            for key in range(q + 1)
        ]
        pairs.sort(key=lambda p: p[2], reverse=True)
        return pairs[:k]


ExcerptSource = tuple[int, int]
"""Where an excerpt came from: (document, token offset of its first token in that document)."""


@dataclass
class ExcerptSources:
    """Where each excerpt of a collected `NeuronRecord` came from, list for list and item for item.

    Documents are numbered in the order the collector read them, so two excerpts share a document exactly
    when their numbers are equal. Published datasets have none; the collector writes them beside each record.
    """

    most_positive_activation_records: list[ExcerptSource] = field(default_factory=list)
    random_sample: list[ExcerptSource] = field(default_factory=list)
    random_sample_by_quantile: list[list[ExcerptSource]] | None = None


@dataclass
class NeuronRecord:
    """Everything published about one unit: top excerpts, random samples and summary statistics.

    `variance` and `stddev` are both accepted (files differ); `variance_or_none` reconciles them.
    """

    neuron_id: NeuronId
    most_positive_activation_records: list[ActivationRecord] = field(default_factory=list)
    random_sample: list[ActivationRecord] = field(default_factory=list)
    random_sample_by_quantile: list[list[ActivationRecord]] | None = None
    quantile_boundaries: list[float | None] | None = None
    mean: float | None = None
    variance: float | None = None
    stddev: float | None = None
    skewness: float | None = None
    kurtosis: float | None = None
    most_negative_activation_records: list[ActivationRecord] | None = None
    excerpt_sources: ExcerptSources | None = None
    """Where each excerpt came from (collected datasets, from the file beside the record); None for
    published data. Splits keep explanation and scoring excerpts in different documents with it."""

    def __post_init__(self) -> None:
        sources = self.excerpt_sources
        if sources is None:
            return
        by_quantile, known_by_quantile = self.random_sample_by_quantile or [], sources.random_sample_by_quantile or []
        lists: dict[str, tuple[Sequence[object], Sequence[object]]] = {
            "most_positive_activation_records": (self.most_positive_activation_records,
                                                 sources.most_positive_activation_records),
            "random_sample": (self.random_sample, sources.random_sample),
            "random_sample_by_quantile": (by_quantile, known_by_quantile),
        }
        lists.update({f"random_sample_by_quantile[{q}]": pair
                      for q, pair in enumerate(zip(by_quantile, known_by_quantile, strict=False))})
        for name, (excerpts, known) in lists.items():
            if len(excerpts) != len(known):
                raise DataError(f"unit {self.neuron_id.layer_index}/{self.neuron_id.neuron_index}: {name} has "
                                f"{len(excerpts)} excerpts but its excerpt sources list {len(known)}; the sources "
                                "belong to another record (collect the dataset again)")

    @property
    def max_activation(self) -> float:
        """The largest activation over the top records (the scale the paper normalizes by)."""
        return max((r.max_activation for r in self.most_positive_activation_records), default=0.0)

    @property
    def variance_or_none(self) -> float | None:
        if self.variance is not None:
            return self.variance
        return None if self.stddev is None else self.stddev**2


# --- splits -------------------------------------------------------------------------------------

TOP_SPLITS = ("train", "calibration", "valid", "test")
"""The paper interleaves top-activating records with stride 4 in this order."""

RANDOM_SPLITS = ("calibration", "valid", "test")
"""Random records interleave with stride 3 in this order (there is no random train split)."""


@dataclass(frozen=True, kw_only=True)
class SliceParams:
    """How to cut a unit's records into splits."""

    n_examples_per_split: int | None = None
    """Records per split and source (top / random); None: as many as every split can have equally."""
    disjoint: bool = False
    """For records without excerpt sources (published data): drop records from later splits whose tokens
    already appear in an earlier one (train, then calibration, then valid / test), so no scoring excerpt
    was shown to the explainer or used for calibration. Off by default, as in the paper, where the random
    sample can repeat a top excerpt. Records with excerpt sources are always split by document."""

    def __post_init__(self) -> None:
        if self.n_examples_per_split is not None and self.n_examples_per_split < 1:
            raise ConfigError(f"n_examples_per_split must be at least 1 (or unset), got {self.n_examples_per_split}")


def _per_split(records: Sequence[ActivationRecord], stride: int, n: int | None, source: str, unit: NeuronId,
               remedy: str = "lower n_examples_per_split") -> int:
    """`n`, or as many as every split can have equally (None); a record with too few is a `DataError`."""
    if n is None:
        n = len(records) // stride
    if len(records) < n * stride:
        raise DataError(
            f"unit {unit.layer_index}/{unit.neuron_index} has {len(records)} {source} records, but "
            f"{n} per split x {stride} splits need {n * stride}; {remedy}"
        )
    return n


def _interleaved(records: Sequence[ActivationRecord], splits: Sequence[str], split: str, n: int | None,
                 source: str, unit: NeuronId) -> list[ActivationRecord]:
    """The paper's interleaving: split k of s takes records k, k+s, k+2s, ... (n of them)."""
    stride = len(splits)
    n = _per_split(records, stride, n, source, unit)
    start = splits.index(split)
    return list(records[start:n * stride:stride])


def top_split(record: NeuronRecord, split: str, params: SliceParams) -> list[ActivationRecord]:
    """Top-activating records of one split (stride 4: train, calibration, valid, test): the paper's
    interleaving alone, with no disjointness rule (`split_records` applies it)."""
    if split not in TOP_SPLITS:
        raise DataError(f"unknown split {split!r} for top records; valid: {', '.join(TOP_SPLITS)}")
    return _interleaved(record.most_positive_activation_records, TOP_SPLITS, split, params.n_examples_per_split,
                        "top-activating", record.neuron_id)


def random_split(record: NeuronRecord, split: str, params: SliceParams) -> list[ActivationRecord]:
    """Random-sample records of one split (stride 3: calibration, valid, test), as in `top_split`."""
    if split not in RANDOM_SPLITS:
        raise DataError(f"unknown split {split!r} for random records; valid: {', '.join(RANDOM_SPLITS)}")
    return _interleaved(record.random_sample, RANDOM_SPLITS, split, params.n_examples_per_split, "random",
                        record.neuron_id)


@dataclass(frozen=True, kw_only=True)
class ScoringSet:
    """Top-activating and random records of one split; `top + random` is the paper's pooled order."""

    top: list[ActivationRecord]
    random: list[ActivationRecord]

    @property
    def all(self) -> list[ActivationRecord]:
        return [*self.top, *self.random]


@dataclass(frozen=True, kw_only=True)
class RecordSplits:
    """A unit's records cut as in the paper: explain on `train`, calibrate, score on `valid`/`test`."""

    train: list[ActivationRecord]
    calibration: ScoringSet
    valid: ScoringSet
    test: ScoringSet
    n_dropped: int = 0
    """How many excerpts the splits are short of the paper's slicing, because another split already
    holds their document (records with excerpt sources) or an earlier one their tokens (`disjoint=True`)."""


def _without_seen(records: ScoringSet, seen: set[tuple[str, ...]]) -> ScoringSet:
    return ScoringSet(top=[r for r in records.top if tuple(r.tokens) not in seen],
                      random=[r for r in records.random if tuple(r.tokens) not in seen])


def _by_document(records: Sequence[ActivationRecord], sources: Sequence[ExcerptSource], splits: Sequence[str],
                 n: int, placed: dict[int, str]) -> dict[str, list[ActivationRecord]]:
    """The paper's interleaving, one document per split: in order, an excerpt goes to the split its
    document was given, and a new document to the split with the fewest excerpts (the earlier on ties);
    a split takes at most `n`. With every excerpt in its own document this is exactly the stride-s slicing."""
    out: dict[str, list[ActivationRecord]] = {split: [] for split in splits}
    for excerpt, (document, _) in zip(records, sources, strict=True):
        split = placed.get(document)
        if split is None:
            split = min(splits, key=lambda s: len(out[s]))
            if len(out[split]) >= n:
                break
            placed[document] = split
        if split in out and len(out[split]) < n:
            out[split].append(excerpt)
    return out


def _split_by_document(record: NeuronRecord, sources: ExcerptSources, params: SliceParams) -> RecordSplits:
    top, random = record.most_positive_activation_records, record.random_sample
    n = params.n_examples_per_split
    n_top = _per_split(top, len(TOP_SPLITS), n, "top-activating", record.neuron_id)
    n_random = _per_split(random, len(RANDOM_SPLITS), n, "random", record.neuron_id,
                          "lower n_examples_per_split, or collect more tokens: a collected random sample leaves out "
                          "the documents of the unit's top excerpts")
    placed: dict[int, str] = {}
    tops = _by_document(top, sources.most_positive_activation_records, TOP_SPLITS, n_top, placed)
    randoms = _by_document(random, sources.random_sample, RANDOM_SPLITS, n_random, placed)
    sets = {name: ScoringSet(top=tops[name], random=randoms[name]) for name in RANDOM_SPLITS}
    placed_total = sum(len(v) for v in tops.values()) + sum(len(v) for v in randoms.values())
    return RecordSplits(train=tops["train"], calibration=sets["calibration"], valid=sets["valid"], test=sets["test"],
                        n_dropped=n_top * len(TOP_SPLITS) + n_random * len(RANDOM_SPLITS) - placed_total)


def split_records(record: NeuronRecord, params: SliceParams) -> RecordSplits:
    """Every split at once. A record with excerpt sources puts each document in one split only; without,
    `params.disjoint` makes later splits lose records whose tokens an earlier split holds."""
    if record.excerpt_sources is not None:
        return _split_by_document(record, record.excerpt_sources, params)
    train = top_split(record, "train", params)
    calibration, valid, test = (
        ScoringSet(top=top_split(record, name, params), random=random_split(record, name, params))
        for name in RANDOM_SPLITS
    )
    if not params.disjoint:
        return RecordSplits(train=train, calibration=calibration, valid=valid, test=test)
    before = sum(len(s.all) for s in (calibration, valid, test))
    seen = {tuple(r.tokens) for r in train}
    calibration = _without_seen(calibration, seen)
    seen |= {tuple(r.tokens) for r in calibration.all}
    valid, test = _without_seen(valid, seen), _without_seen(test, seen)
    after = sum(len(s.all) for s in (calibration, valid, test))
    return RecordSplits(train=train, calibration=calibration, valid=valid, test=test, n_dropped=before - after)


# --- normalization ------------------------------------------------------------------------------

MAX_NORMALIZED_ACTIVATION = 10


def normalize_activations(activations: Sequence[float], max_activation: float) -> list[int]:
    """Map activations to integers 0..10: floor(10 * relu(a) / max), capped at 10.

    A non-positive (or NaN) max means the unit never fired on what is shown: everything maps to 0
    instead of dividing by zero. The ratio a / max is taken first, so the max itself always maps to
    exactly 10 (10 * a / max can round to 9.999...) and huge values cannot overflow.
    """
    if not max_activation > 0 or math.isinf(max_activation):
        return [0] * len(activations)
    out = []
    for a in activations:
        ratio = a / max_activation if a > 0 else 0.0  # `a > 0` is False for NaN too
        level = MAX_NORMALIZED_ACTIVATION if ratio >= 1 else math.floor(MAX_NORMALIZED_ACTIVATION * ratio)
        out.append(min(MAX_NORMALIZED_ACTIVATION, level))
    return out
