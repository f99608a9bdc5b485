"""The record model: the paper's splits, 0-10 normalization and the token-pair layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.records import (
    ActivationRecord,
    ExcerptSources,
    NeuronId,
    NeuronRecord,
    SliceParams,
    TokenPairRecord,
    n_pairs,
    normalize_activations,
    pair_index,
    random_split,
    split_records,
    top_split,
)
from neuroscribe.serialization import from_json_obj

SPLITS_FILE = Path(__file__).parent / "data" / "refdata" / "splits" / "gpt2-xl-9-6236-train-valid.json"


def _record(name: str, peak: float) -> ActivationRecord:
    return ActivationRecord(tokens=[name, "x"], activations=[peak, 0.0])


# --- splits against the real split of GPT-2 XL neuron 9/6236 ------------------------------------


@pytest.fixture(scope="module")
def reference_splits() -> dict[str, list[ActivationRecord]]:
    data = json.loads(SPLITS_FILE.read_text())
    return {name: [from_json_obj(r, ActivationRecord, f"{SPLITS_FILE.name}:{name}[{i}]") for i, r in enumerate(rs)]
            for name, rs in data.items()}


def test_reference_maxima_match_provenance(reference_splits: dict[str, list[ActivationRecord]]) -> None:
    assert [r.max_activation for r in reference_splits["train"]] == [4.0117, 3.4824, 3.3125, 3.2832, 3.2031]
    valid_top = reference_splits["valid"][:5]
    assert [r.max_activation for r in valid_top] == [3.5117, 3.3516, 3.2988, 3.2363, 3.1895]


def test_reference_train_and_valid_interleave_like_a_sorted_top_list(
        reference_splits: dict[str, list[ActivationRecord]]) -> None:
    # Top records are sorted by max activation. Stride 4 puts train at 0, 4, 8, ... and valid at 2, 6, 10, ...,
    # so merged by max activation (descending) the two splits must alternate train, valid, train, valid, ...
    train, valid_top = reference_splits["train"], reference_splits["valid"][:5]
    merged = sorted([("train", r.max_activation) for r in train] + [("valid", r.max_activation) for r in valid_top],
                    key=lambda item: -item[1])
    assert [name for name, _ in merged] == ["train", "valid"] * 5


def _synthetic_record(reference: dict[str, list[ActivationRecord]]) -> NeuronRecord:
    """A 9/6236-like record: the reference records at the positions the paper's slicing reads, fillers elsewhere.

    Fillers interpolate the neighbours' maxima, so the top list stays sorted as in a real record.
    """
    train, valid_top, valid_random = reference["train"], reference["valid"][:5], reference["valid"][5:]
    top: list[ActivationRecord] = []
    for i in range(5):
        top.append(train[i])
        top.append(_record(f"calibration-{i}", (train[i].max_activation + valid_top[i].max_activation) / 2))
        top.append(valid_top[i])
        next_peak = train[i + 1].max_activation if i + 1 < 5 else valid_top[i].max_activation - 0.1
        top.append(_record(f"test-{i}", (valid_top[i].max_activation + next_peak) / 2))
    random: list[ActivationRecord] = []
    for i in range(5):
        random += [_record(f"random-calibration-{i}", 0.01), valid_random[i], _record(f"random-test-{i}", 0.02)]
    # extra records beyond 4 x 5 and 3 x 5 must not shift anything
    return NeuronRecord(neuron_id=NeuronId(9, 6236), most_positive_activation_records=[*top, _record("extra", 0.1)],
                        random_sample=[*random, _record("extra-random", 0.0)])


def test_splits_reproduce_the_reference_order(reference_splits: dict[str, list[ActivationRecord]]) -> None:
    record = _synthetic_record(reference_splits)
    assert [r.max_activation for r in record.most_positive_activation_records[:20]] == sorted(
        (r.max_activation for r in record.most_positive_activation_records[:20]), reverse=True)
    splits = split_records(record, SliceParams(n_examples_per_split=5))
    assert splits.train == reference_splits["train"]
    assert splits.valid.all == reference_splits["valid"]  # 5 top, then 5 random, as the reference returns them
    assert [r.tokens[0] for r in splits.calibration.top] == [f"calibration-{i}" for i in range(5)]
    assert [r.tokens[0] for r in splits.test.top] == [f"test-{i}" for i in range(5)]
    assert [r.tokens[0] for r in splits.calibration.random] == [f"random-calibration-{i}" for i in range(5)]
    assert [r.tokens[0] for r in splits.test.random] == [f"random-test-{i}" for i in range(5)]
    assert splits.n_dropped == 0


def test_default_split_size_is_equal_for_every_split(real_record_path: Path) -> None:
    # 50 top records / 4 splits -> 12 each (the last 2 unused); 50 random / 3 -> 16 each, as in the reference
    from neuroscribe.serialization import load_json_file

    record = load_json_file(real_record_path, NeuronRecord)
    splits = split_records(record, SliceParams())
    assert [len(splits.train), len(splits.calibration.top), len(splits.valid.top), len(splits.test.top)] == [12] * 4
    assert [len(s.random) for s in (splits.calibration, splits.valid, splits.test)] == [16] * 3
    assert splits.valid.top[0] is record.most_positive_activation_records[2]
    assert splits.test.random[-1] is record.random_sample[47]


def test_single_split_accessors_and_errors() -> None:
    record = NeuronRecord(neuron_id=NeuronId(3, 7),
                          most_positive_activation_records=[_record(f"t{i}", 10 - i) for i in range(8)],
                          random_sample=[_record(f"r{i}", 0) for i in range(6)])
    params = SliceParams(n_examples_per_split=2)
    assert [r.tokens[0] for r in top_split(record, "valid", params)] == ["t2", "t6"]
    assert [r.tokens[0] for r in random_split(record, "test", params)] == ["r2", "r5"]
    with pytest.raises(DataError, match="unknown split 'train' for random records"):
        random_split(record, "train", params)
    with pytest.raises(DataError, match="unknown split 'validation' for top records"):
        top_split(record, "validation", params)
    with pytest.raises(DataError, match=r"unit 3/7 has 8 top-activating records, but 3 per split x 4 splits need 12"):
        top_split(record, "train", SliceParams(n_examples_per_split=3))
    with pytest.raises(ConfigError, match="at least 1"):
        SliceParams(n_examples_per_split=0)


def test_disjoint_drops_scoring_records_seen_by_the_explainer() -> None:
    top = [_record(f"t{i}", 10 - i) for i in range(8)]
    top[6] = ActivationRecord(tokens=list(top[0].tokens), activations=[4.0, 0.0])  # valid repeats a train excerpt
    random = [_record(f"r{i}", 0) for i in range(6)]
    random[4] = ActivationRecord(tokens=list(top[4].tokens), activations=[1.0, 0.0])  # random valid repeats train
    random[5] = ActivationRecord(tokens=list(top[1].tokens), activations=[1.0, 0.0])  # test repeats calibration
    record = NeuronRecord(neuron_id=NeuronId(0, 0), most_positive_activation_records=top, random_sample=random)
    params = SliceParams(n_examples_per_split=2)
    overlapping = split_records(record, params)
    assert overlapping.n_dropped == 0 and len(overlapping.valid.all) == 4
    disjoint = split_records(record, SliceParams(n_examples_per_split=2, disjoint=True))
    assert [r.tokens[0] for r in disjoint.valid.top] == ["t2"]
    assert [r.tokens[0] for r in disjoint.valid.random] == ["r1"]
    assert [r.tokens[0] for r in disjoint.test.random] == ["r2"]
    assert disjoint.n_dropped == 3
    explained = {tuple(r.tokens) for r in disjoint.train}
    assert not explained & {tuple(r.tokens) for s in (disjoint.calibration, disjoint.valid, disjoint.test)
                            for r in s.all}


def _with_sources(top_documents: list[int], random_documents: list[int]) -> NeuronRecord:
    return NeuronRecord(
        neuron_id=NeuronId(0, 0),
        most_positive_activation_records=[_record(f"t{i}", 20 - i) for i in range(len(top_documents))],
        random_sample=[_record(f"r{i}", 0) for i in range(len(random_documents))],
        excerpt_sources=ExcerptSources(most_positive_activation_records=[(d, 0) for d in top_documents],
                                       random_sample=[(d, 64) for d in random_documents]))


def _documents(splits: object, record: NeuronRecord) -> dict[str, set[int]]:
    assert record.excerpt_sources is not None
    where = {id(r): d for r, (d, _) in zip(record.most_positive_activation_records,
                                           record.excerpt_sources.most_positive_activation_records, strict=True)}
    where |= {id(r): d for r, (d, _) in zip(record.random_sample, record.excerpt_sources.random_sample, strict=True)}
    return {name: {where[id(r)] for r in (getattr(splits, name) if name == "train" else getattr(splits, name).all)}
            for name in ("train", "calibration", "valid", "test")}


def test_with_a_document_per_excerpt_the_split_is_the_papers() -> None:
    record = _with_sources(list(range(12)), list(range(100, 109)))
    params = SliceParams(n_examples_per_split=3)
    by_document = split_records(record, params)
    plain = split_records(NeuronRecord(neuron_id=record.neuron_id,
                                       most_positive_activation_records=record.most_positive_activation_records,
                                       random_sample=record.random_sample), params)
    assert by_document == plain and by_document.n_dropped == 0


def test_no_document_is_in_two_splits_and_the_tail_refills() -> None:
    # top excerpts 0, 1, 5 share document 7 (train's); 2 and 6 share document 8; random 0 and 3 share one
    record = _with_sources([7, 7, 8, 9, 10, 7, 8, 11, 12, 13, 14, 15], [20, 21, 22, 20, 23, 24, 25])
    splits = split_records(record, SliceParams(n_examples_per_split=2))
    documents = _documents(splits, record)
    assert all(documents[a].isdisjoint(documents[b]) for a in documents for b in documents if a < b)
    assert [r.tokens[0] for r in splits.train] == ["t0", "t1"]  # document 7 stays in train; t5 has no room there
    assert [r.tokens[0] for r in splits.calibration.top] == ["t2", "t6"]  # document 8 stays together
    assert [r.tokens[0] for r in splits.valid.top] == ["t3", "t7"]
    assert [r.tokens[0] for r in splits.test.top] == ["t4", "t8"]  # refilled from the tail (t8 beyond 4 x 2)
    assert [r.tokens[0] for r in splits.calibration.random] == ["r0", "r3"]
    assert [r.tokens[0] for r in splits.valid.random] == ["r1", "r4"]
    assert [r.tokens[0] for r in splits.test.random] == ["r2", "r5"]
    assert splits.n_dropped == 0


def test_what_no_split_can_take_is_counted() -> None:
    # six top excerpts of one document: train takes 2, the other splits get the rest of the documents only;
    # the random excerpt from train's document is left out
    record = _with_sources([5, 5, 5, 5, 5, 5, 1, 2, 3, 4], [5, 30, 31, 32, 33, 34])
    splits = split_records(record, SliceParams(n_examples_per_split=2))
    assert [len(splits.train), len(splits.calibration.top), len(splits.valid.top), len(splits.test.top)] == [2, 2, 1, 1]
    assert [len(s.random) for s in (splits.calibration, splits.valid, splits.test)] == [2, 2, 1]
    assert splits.n_dropped == 3
    documents = _documents(splits, record)
    assert 5 not in documents["calibration"] | documents["valid"] | documents["test"]


def test_sources_that_do_not_fit_the_record_are_refused() -> None:
    with pytest.raises(DataError, match=r"unit 0/0: random_sample has 2 excerpts but its excerpt sources list 1"):
        NeuronRecord(neuron_id=NeuronId(0, 0), random_sample=[_record("a", 0), _record("b", 0)],
                     excerpt_sources=ExcerptSources(random_sample=[(0, 0)]))
    with pytest.raises(DataError, match=r"random_sample_by_quantile\[1\] has 1 excerpts but its excerpt sources"):
        NeuronRecord(neuron_id=NeuronId(0, 0), random_sample_by_quantile=[[], [_record("a", 0)]],
                     excerpt_sources=ExcerptSources(random_sample_by_quantile=[[], []]))


# --- normalization --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activations", "max_activation", "expected"),
    [
        ([0.0, 0.5, 1.0, 2.0], 1.0, [0, 5, 10, 10]),  # capped at 10 above the max
        ([-1.0, 0.099, 0.1, 0.999], 1.0, [0, 0, 1, 9]),  # floor, relu
        ([1.0, 2.0], 0.0, [0, 0]),  # max 0: no division by zero
        ([1.0, -2.0], -3.0, [0, 0]),  # negative max
        ([1.0], math.nan, [0]),
        ([1.0], math.inf, [0]),
        ([math.nan, 1.0], 2.0, [0, 5]),
        ([], 1.0, []),
        ([3.7], 3.7, [10]),
    ],
)
def test_normalization_edge_cases(activations: list[float], max_activation: float, expected: list[int]) -> None:
    assert normalize_activations(activations, max_activation) == expected


def test_normalization_is_the_reference_formula_on_the_real_record(real_record_path: Path) -> None:
    """floor(10 * relu(a) / max), max over the top excerpts, computed here in numpy from the raw JSON: the
    levels must agree token for token on the real record (at the max exactly: 10)."""
    import numpy as np

    data = json.loads(real_record_path.read_text())
    excerpts = data["most_positive_activation_records"] + data["random_sample"]
    peak = max(max(r["activations"]) for r in data["most_positive_activation_records"])
    for index, raw in enumerate(excerpts):
        a = np.asarray(raw["activations"], dtype=np.float64)
        reference = np.minimum(np.floor(10.0 * (np.maximum(a, 0.0) / peak)), 10).astype(int).tolist()
        assert normalize_activations(raw["activations"], peak) == reference, index
    levels = [v for raw in excerpts for v in normalize_activations(raw["activations"], peak)]
    assert levels.count(10) >= 1 and 0 < levels.count(0) < len(levels) and len(set(levels)) == 11


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=False, width=32), max_size=30),
       st.floats(allow_nan=True, allow_infinity=True))
def test_normalization_stays_in_range_and_preserves_order(activations: list[float], max_activation: float) -> None:
    normalized = normalize_activations(activations, max_activation)
    assert len(normalized) == len(activations)
    assert all(type(v) is int and 0 <= v <= 10 for v in normalized)
    finite = [(a, v) for a, v in zip(activations, normalized, strict=True) if not math.isnan(a)]
    for (a1, v1) in finite:
        for (a2, v2) in finite:
            if a1 <= a2:
                assert v1 <= v2  # monotone: a larger activation never gets a smaller level
    if max_activation > 0 and math.isfinite(max_activation):
        assert normalize_activations([max_activation], max_activation) == [10]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.just(0.0) | st.floats(1e-6, 1e6), min_size=1, max_size=30), st.floats(0.01, 100))
def test_normalization_is_scale_free(activations: list[float], factor: float) -> None:
    peak = max(activations)
    if peak <= 0:
        return
    base = normalize_activations(activations, peak)
    scaled = normalize_activations([a * factor for a in activations], peak * factor)
    # equal up to one level where 10*a/max lands within rounding error of an integer
    assert all(abs(x - y) <= 1 for x, y in zip(base, scaled, strict=True))


def test_neuron_record_max_activation_and_variance() -> None:
    record = NeuronRecord(neuron_id=NeuronId(0, 0), most_positive_activation_records=[_record("a", 2.0),
                                                                                    _record("b", 5.0)])
    assert record.max_activation == 5.0
    assert NeuronRecord(neuron_id=NeuronId(0, 0)).max_activation == 0.0
    assert NeuronRecord(neuron_id=NeuronId(0, 0), stddev=3.0).variance_or_none == 9.0
    assert NeuronRecord(neuron_id=NeuronId(0, 0), variance=2.0, stddev=3.0).variance_or_none == 2.0


# --- token pairs ----------------------------------------------------------------------------------


def test_pair_index_is_the_row_major_lower_triangle() -> None:
    expected = [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0)]
    assert [pair_index(q, k) for q, k in expected] == list(range(7))
    assert [n_pairs(n) for n in range(5)] == [0, 1, 3, 6, 10]
    with pytest.raises(ValueError, match=r"\(query=1, key=2\) is not in the lower triangle"):
        pair_index(1, 2)


def test_token_pair_record_reads_pairs_and_checks_its_size() -> None:
    record = TokenPairRecord(tokens=["a", "b", "c"], activations=[0.0, 1.0, 2.0, 3.0, 9.0, 5.0])
    assert record.activation(2, 1) == 9.0
    assert record.activation(1, 0) == 1.0
    assert record.top_pairs(2) == [(2, 1, 9.0), (2, 2, 5.0)]
    assert record.max_activation == 9.0
    with pytest.raises(DataError, match="3 tokens, so it needs 6 pair activations"):
        TokenPairRecord(tokens=["a", "b", "c"], activations=[0.0] * 5)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 40))
def test_pair_index_enumerates_every_pair_once(n_tokens: int) -> None:
    indices = [pair_index(q, k) for q in range(n_tokens) for k in range(q + 1)]
    assert indices == list(range(n_pairs(n_tokens)))


def test_sae_latent_is_read_as_autoencoder_latent() -> None:
    from neuroscribe.records import UnitKind

    assert UnitKind("sae_latent") is UnitKind.AUTOENCODER_LATENT
    assert UnitKind("sae_latent").value == "autoencoder_latent"  # written under our name
    with pytest.raises(ValueError):
        UnitKind("latent")
