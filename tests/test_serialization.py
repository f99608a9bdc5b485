"""The published tagged-dataclass format: the real record, round trips, aliases and readable errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroscribe.errors import DataError
from neuroscribe.records import (
    ActivationRecord,
    ExcerptSources,
    NeuronId,
    NeuronRecord,
    RecordSplits,
    ScoringSet,
    SliceParams,
    TokenPairRecord,
    UnitId,
    UnitKind,
)
from neuroscribe.results import (
    ActivationScale,
    AttentionSimulation,
    AttentionSimulationResults,
    ExplanationScores,
    JudgedExample,
    NeuronSimulationResults,
    ScoredAttentionExplanation,
    ScoredAttentionSimulation,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    TokenLookupTableSummaryOfNeuron,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)
from neuroscribe.serialization import (
    KNOWN_DATACLASSES,
    append_jsonl,
    dump_json_file,
    dumps,
    from_json_obj,
    from_tagged_json_obj,
    load_json_file,
    loads,
    read_jsonl,
    result_from_json_obj,
    to_json_obj,
)

# --- the real published record ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_record(real_record_path: Path) -> NeuronRecord:
    return load_json_file(real_record_path, NeuronRecord)


def test_real_record_loads_with_its_published_shape(real_record: NeuronRecord) -> None:
    assert real_record.neuron_id == NeuronId(layer_index=1, neuron_index=1)
    assert len(real_record.most_positive_activation_records) == 50
    assert len(real_record.random_sample) == 50
    assert real_record.random_sample_by_quantile is not None
    assert [len(bucket) for bucket in real_record.random_sample_by_quantile] == [20] * 5
    assert real_record.quantile_boundaries == [None, -0.0032, 0.5005, 1.5146, 2.3789, None]
    assert real_record.stddev is None and real_record.variance is not None
    assert real_record.most_negative_activation_records is None
    everything = [*real_record.most_positive_activation_records, *real_record.random_sample,
                  *(r for bucket in real_record.random_sample_by_quantile for r in bucket)]
    assert sorted(len(r.tokens) for r in everything if len(r.tokens) != 64) == [48, 59, 62]
    assert all(len(r.tokens) == len(r.activations) for r in everything)


def test_real_record_writes_back_to_the_same_json(real_record: NeuronRecord, real_record_path: Path) -> None:
    original = json.loads(real_record_path.read_text())
    written = dumps(real_record)
    assert json.loads(written) == original  # same keys (no neuroscribe-only extras), same values
    assert loads(written, NeuronRecord, "rewritten") == real_record


def test_real_record_round_trips_through_a_file(real_record: NeuronRecord, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "1.json"
    dump_json_file(path, real_record)
    assert load_json_file(path, NeuronRecord) == real_record
    assert [p.name for p in path.parent.iterdir()] == ["1.json"]  # no temp file left behind


def test_tagged_dispatch_finds_the_class(real_record_path: Path) -> None:
    assert isinstance(from_tagged_json_obj(json.loads(real_record_path.read_text())), NeuronRecord)


# --- writing --------------------------------------------------------------------------------------


def _simulation(n: int = 3) -> SequenceSimulation:
    return SequenceSimulation(
        tokens=[f"t{i}" for i in range(n)],
        expected_activations=[float(i) for i in range(n)],
        activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
        distribution_values=[[0.0, 10.0]] * n,
        distribution_probabilities=[[0.25, 0.75]] * n,
    )


def _results() -> NeuronSimulationResults:
    sequence = ScoredSequenceSimulation(simulation=_simulation(), true_activations=[0.0, 1.0, 2.0],
                                        ev_correlation_score=1.0, rsquared_score=None,
                                        absolute_dev_explained_score=0.5)
    scored = ScoredSimulation(scored_sequence_simulations=[sequence], ev_correlation_score=1.0)
    explanation = ScoredExplanation(explanation="years", scored_simulation=scored)
    return NeuronSimulationResults(neuron_id=NeuronId(5, 131), scored_explanations=[explanation])


def test_every_nested_object_is_tagged() -> None:
    def tags(node: object) -> list[str]:
        if isinstance(node, dict):
            return [node["dataclass_name"], *(t for v in node.values() for t in tags(v))]
        if isinstance(node, list):
            return [t for v in node for t in tags(v)]
        return []

    found = tags(to_json_obj(_results()))
    assert set(found) == {"NeuronSimulationResults", "NeuronId", "ScoredExplanation", "ScoredSimulation",
                          "ScoredSequenceSimulation", "SequenceSimulation"}


def test_nan_is_written_as_null_and_enums_as_values() -> None:
    record = ActivationRecord(tokens=["a", "b"], activations=[math.nan, math.inf])
    assert json.loads(dumps(record)) == {"dataclass_name": "ActivationRecord", "tokens": ["a", "b"],
                                         "activations": [None, None]}
    text = dumps(_simulation(1))
    assert '"activation_scale": "simulated_normalized_activations"' in text
    assert "NaN" not in dumps(NeuronRecord(neuron_id=NeuronId(0, 0), mean=math.nan))


def test_null_in_a_float_list_reads_back_as_nan() -> None:
    record = loads('{"tokens": ["a"], "activations": [null]}', ActivationRecord)
    assert math.isnan(record.activations[0])


def test_neuroscribe_only_fields_are_written_only_when_set() -> None:
    bare = json.loads(dumps(NeuronRecord(neuron_id=NeuronId(0, 0))))
    assert "stddev" not in bare and "most_negative_activation_records" not in bare
    with_extras = NeuronRecord(neuron_id=NeuronId(0, 0), stddev=2.0,
                               most_negative_activation_records=[ActivationRecord(["x"], [-1.0])])
    assert loads(dumps(with_extras), NeuronRecord) == with_extras
    assert with_extras.variance_or_none == 4.0


def test_jsonl_append_and_read(tmp_path: Path) -> None:
    path = tmp_path / "results" / "m.jsonl"
    first, second = _results(), _results()
    second.neuron_id = NeuronId(layer_index=6, neuron_index=0)
    append_jsonl(path, first)
    append_jsonl(path, second)
    assert read_jsonl(path, NeuronSimulationResults) == [first, second]
    assert path.read_text().count("\n") == 2


def test_a_torn_last_line_is_closed_off_and_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    append_jsonl(path, _results())
    with path.open("a") as handle:
        handle.write('{"dataclass_name": "NeuronSimulationResults", "neur')  # a writer killed mid-line
    with pytest.raises(DataError, match=r"m\.jsonl:2: not valid JSON"):
        read_jsonl(path, NeuronSimulationResults)
    assert len(read_jsonl(path, NeuronSimulationResults, allow_torn_tail=True)) == 1
    append_jsonl(path, _results())  # the new line must not be glued onto the torn one
    with pytest.raises(DataError, match=r"m\.jsonl:2"):
        read_jsonl(path, NeuronSimulationResults)
    lines = path.read_text().splitlines()
    assert loads(lines[2], NeuronSimulationResults) == _results()


# --- compatibility ------------------------------------------------------------------------------


def test_sequence_simulation_is_an_alias_of_simulation() -> None:
    data = to_json_obj(_results().scored_explanations[0].scored_simulation.scored_sequence_simulations[0])
    data["sequence_simulation"] = data.pop("simulation")
    loaded = from_json_obj(data, ScoredSequenceSimulation)
    assert loaded.simulation == _simulation()
    data["simulation"] = data["sequence_simulation"]
    with pytest.raises(DataError, match="given twice"):
        from_json_obj(data, ScoredSequenceSimulation)


def test_token_pair_records_inside_a_neuron_record() -> None:
    pairs = TokenPairRecord(tokens=["a", "b"], activations=[0.0, 2.0, 1.0])
    record = NeuronRecord(neuron_id=NeuronId(0, 3), most_positive_activation_records=[pairs],
                          random_sample=[ActivationRecord(tokens=["c"], activations=[0.5])])
    loaded = loads(dumps(record), NeuronRecord)
    assert loaded == record
    assert type(loaded.most_positive_activation_records[0]) is TokenPairRecord
    assert loaded.most_positive_activation_records[0].activation(1, 0) == 2.0
    bad = to_json_obj(record)
    bad["most_positive_activation_records"][0]["activations"] = [0.0]
    with pytest.raises(DataError, match=r"at most_positive_activation_records\[0\]: token-pair record has 2 tokens"):
        from_json_obj(bad, NeuronRecord, "heads.json")


def test_calibrated_simulation_keeps_the_uncalibrated_one() -> None:
    raw = _simulation(2)
    calibrated = SequenceSimulation(tokens=raw.tokens, expected_activations=[0.0, 0.5],
                                    activation_scale=ActivationScale.NEURON_ACTIVATIONS, uncalibrated_simulation=raw)
    data = to_json_obj(calibrated)
    assert data["uncalibrated_simulation"]["dataclass_name"] == "SequenceSimulation"
    assert "uncalibrated_simulation" not in data["uncalibrated_simulation"]  # written only when set
    assert from_json_obj(data, SequenceSimulation) == calibrated
    data["uncalibrated_simulation"] = None  # the reference writes null
    assert from_json_obj(data, SequenceSimulation).uncalibrated_simulation is None


def test_untagged_objects_load_when_the_type_is_known() -> None:
    record = from_json_obj({"neuron_id": {"layer_index": 9, "neuron_index": 6236}}, NeuronRecord)
    assert record.neuron_id == NeuronId(9, 6236)
    assert record.most_positive_activation_records == []


def test_integers_are_accepted_where_floats_are_expected() -> None:
    record = loads('{"tokens": ["a", "b"], "activations": [0, 1.5]}', ActivationRecord)
    assert record.activations == [0.0, 1.5] and all(type(x) is float for x in record.activations)


# --- errors that say where -------------------------------------------------------------------------


def _bad_record(tmp_path: Path, mutate: object) -> Path:
    data = to_json_obj(NeuronRecord(
        neuron_id=NeuronId(1, 2),
        most_positive_activation_records=[ActivationRecord(["a", "b"], [0.0, 1.0]) for _ in range(4)],
    ))
    assert callable(mutate)
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["most_positive_activation_records"][3].__setitem__("activations", [0.0, "x"]),
         r"bad\.json: at most_positive_activation_records\[3\]\.activations\[1\]: expected a number, got 'x'"),
        (lambda d: d["most_positive_activation_records"][3].__setitem__("activation", []),
         r"at most_positive_activation_records\[3\]\.activation: unknown field of ActivationRecord "
         r"\(did you mean 'activations'\?\)"),
        (lambda d: d["most_positive_activation_records"][2].pop("tokens"),
         r"at most_positive_activation_records\[2\]\.tokens: missing required field of ActivationRecord"),
        (lambda d: d["most_positive_activation_records"][0].__setitem__("dataclass_name", "NeuronId"),
         r"at most_positive_activation_records\[0\]\.dataclass_name: expected 'ActivationRecord', found 'NeuronId'"),
        (lambda d: d["neuron_id"].__setitem__("layer_index", "one"),
         r"at neuron_id\.layer_index: expected an integer, got 'one'"),
        (lambda d: d.__setitem__("random_sample", {}),
         r"at random_sample: expected an array, got \{\} \(object\)"),
        (lambda d: d.__setitem__("mean", True),
         r"at mean: expected a number, got true \(boolean\)"),
        (lambda d: d.pop("neuron_id"), r"at neuron_id: missing required field of NeuronRecord"),
        (lambda d: d.__setitem__("dataclass_name", "NeuronSimulationResults"),
         r"at dataclass_name: expected 'NeuronRecord', found 'NeuronSimulationResults'"),
    ],
)
def test_bad_input_names_file_path_and_field(tmp_path: Path, mutate: object, expected: str) -> None:
    path = _bad_record(tmp_path, mutate)
    with pytest.raises(DataError, match=expected):
        load_json_file(path, NeuronRecord)


def test_bad_enum_value_lists_the_valid_ones() -> None:
    data = to_json_obj(_simulation(1))
    data["activation_scale"] = "raw"
    with pytest.raises(DataError, match=r"at activation_scale: expected one of \['neuron_activations'"):
        from_json_obj(data, SequenceSimulation, "sim.json")


def test_a_class_own_validation_becomes_a_data_error_with_path() -> None:
    data = {"tokens": ["a", "b"], "activations": [1.0, 2.0]}  # needs 3 pair activations
    with pytest.raises(DataError, match=r"pairs\.json: at the top level: token-pair record has 2 tokens"):
        from_json_obj(data, TokenPairRecord, "pairs.json")


def test_pair_shaped_records_tagged_as_activation_records_are_read_as_token_pairs() -> None:
    """Published token-pair files tag each record 'ActivationRecord'; 3 tokens with 6 activations are pairs."""
    pairs = {"dataclass_name": "ActivationRecord", "tokens": ["a", "b", "c"], "activations": [1.0] * 6}
    decoded = from_json_obj(pairs, ActivationRecord, "pairs.json")
    assert type(decoded) is TokenPairRecord and decoded.activation(2, 1) == 1.0
    per_token = from_json_obj({**pairs, "activations": [1.0] * 3}, ActivationRecord, "tokens.json")
    assert type(per_token) is ActivationRecord
    with pytest.raises(DataError, match=r"odd\.json: at the top level: the record has 3 tokens but 4 activations"):
        from_json_obj({**pairs, "activations": [1.0] * 4}, ActivationRecord, "odd.json")


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_json_file(tmp_path / "missing.json", NeuronRecord)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON \(line 1, column 2\)"):
        load_json_file(broken, NeuronRecord)
    with pytest.raises(DataError, match=r"no 'dataclass_name' tag"):
        from_tagged_json_obj({"tokens": []}, "x.json")
    with pytest.raises(DataError, match=r"unknown type 'Foo'"):
        from_tagged_json_obj({"dataclass_name": "Foo"}, "x.json")


def test_a_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + dumps(ActivationRecord(["a"], [1.0])).encode())
    assert load_json_file(path, ActivationRecord) == ActivationRecord(["a"], [1.0])


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(dumps(_results()) + "\n\n" + '{"dataclass_name": "NeuronSimulationResults", "neuron_id": 3}\n')
    with pytest.raises(DataError, match=r"r\.jsonl:3: at neuron_id: expected a NeuronId object, got 3"):
        read_jsonl(path, NeuronSimulationResults)


# --- every class round-trips (hypothesis) ------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
text = st.text(max_size=6)


@st.composite
def activation_records(draw: st.DrawFn) -> ActivationRecord:
    tokens = draw(st.lists(text, max_size=6))
    return ActivationRecord(tokens=tokens, activations=draw(st.lists(finite, min_size=len(tokens),
                                                                     max_size=len(tokens))))


@st.composite
def token_pair_records(draw: st.DrawFn) -> TokenPairRecord:
    tokens = draw(st.lists(text, max_size=4))
    n = len(tokens) * (len(tokens) + 1) // 2
    return TokenPairRecord(tokens=tokens, activations=draw(st.lists(finite, min_size=n, max_size=n)))


neuron_ids = st.builds(NeuronId, layer_index=st.integers(0, 100), neuron_index=st.integers(0, 10**6))
optional_float = st.none() | finite
neuron_records = st.builds(
    NeuronRecord,
    neuron_id=neuron_ids,
    most_positive_activation_records=st.lists(activation_records(), max_size=3),
    random_sample=st.lists(activation_records(), max_size=3),
    random_sample_by_quantile=st.none() | st.lists(st.lists(activation_records(), max_size=2), max_size=3),
    quantile_boundaries=st.none() | st.lists(optional_float, max_size=4),
    mean=optional_float, variance=optional_float, stddev=optional_float,
    skewness=optional_float, kurtosis=optional_float,
    most_negative_activation_records=st.none() | st.lists(activation_records(), max_size=2),
)
sequence_simulations = st.recursive(
    st.none(),
    lambda uncalibrated: st.builds(
        SequenceSimulation, tokens=st.lists(text, max_size=4), expected_activations=st.lists(finite, max_size=4),
        activation_scale=st.sampled_from(ActivationScale),
        distribution_values=st.lists(st.lists(finite, max_size=3), max_size=3),
        distribution_probabilities=st.lists(st.lists(finite, max_size=3), max_size=3),
        uncalibrated_simulation=uncalibrated,
    ),
    max_leaves=2,
).filter(lambda s: s is not None)
scored_sequence_simulations = st.builds(
    ScoredSequenceSimulation, simulation=sequence_simulations, true_activations=st.lists(finite, max_size=4),
    ev_correlation_score=optional_float, rsquared_score=optional_float, absolute_dev_explained_score=optional_float,
)
scored_simulations = st.builds(
    ScoredSimulation, scored_sequence_simulations=st.lists(scored_sequence_simulations, max_size=2),
    ev_correlation_score=optional_float, rsquared_score=optional_float, absolute_dev_explained_score=optional_float,
)
neuron_simulation_results = st.builds(
    NeuronSimulationResults, neuron_id=neuron_ids,
    scored_explanations=st.lists(st.builds(ScoredExplanation, explanation=text, scored_simulation=scored_simulations),
                                 max_size=2),
)
scoring_sets = st.builds(ScoringSet, top=st.lists(activation_records(), max_size=2),
                         random=st.lists(activation_records(), max_size=2))
tokens_and_weights = st.builds(TokensAndWeights, tokens=st.lists(text, max_size=3),
                               strengths=st.lists(finite, max_size=3))
judged_examples = st.builds(
    JudgedExample, group=text, tokens=st.lists(text, max_size=3), true_activations=st.lists(finite, max_size=3),
    target=optional_float, prediction=optional_float, predicted_activations=st.lists(finite, max_size=3),
)
score_tables = st.dictionaries(text, st.dictionaries(text, optional_float, max_size=3), max_size=3)
attention_simulations = st.builds(
    AttentionSimulation, tokens=st.lists(text, min_size=1, max_size=3),
    token_pair_coords=st.tuples(st.integers(0, 2), st.integers(0, 2)).map(lambda p: (max(p), min(p))),
    token_pair_label=st.sampled_from([0, 1]), simulation_prediction=st.floats(0, 1),
)
scored_attention_simulations = st.builds(ScoredAttentionSimulation,
                                         attention_simulations=st.lists(attention_simulations, max_size=3),
                                         roc_auc_score=optional_float)
scored_attention_explanations = st.builds(ScoredAttentionExplanation, explanation=text,
                                          scored_attention_simulation=scored_attention_simulations)
sources_lists = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**4)), max_size=3)
STRATEGIES: dict[type, st.SearchStrategy[object]] = {
    ExcerptSources: st.builds(ExcerptSources, most_positive_activation_records=sources_lists,
                              random_sample=sources_lists,
                              random_sample_by_quantile=st.none() | st.lists(sources_lists, max_size=2)),
    AttentionSimulation: attention_simulations,
    ScoredAttentionSimulation: scored_attention_simulations,
    ScoredAttentionExplanation: scored_attention_explanations,
    AttentionSimulationResults: st.builds(AttentionSimulationResults, attention_head_id=neuron_ids,
                                          scored_explanations=st.lists(scored_attention_explanations, max_size=2)),
    JudgedExample: judged_examples,
    ExplanationScores: st.builds(ExplanationScores, neuron_id=neuron_ids, explanation=text, scorer=text,
                                 scores=score_tables, examples=st.lists(judged_examples, max_size=2)),
    ActivationRecord: activation_records(),
    TokenPairRecord: token_pair_records(),
    NeuronId: neuron_ids,
    UnitId: st.builds(UnitId, layer=st.integers(0, 100), index=st.integers(0, 10**5), kind=st.sampled_from(UnitKind)),
    NeuronRecord: neuron_records,
    SequenceSimulation: sequence_simulations,
    ScoredSequenceSimulation: scored_sequence_simulations,
    ScoredSimulation: scored_simulations,
    ScoredExplanation: st.builds(ScoredExplanation, explanation=text, scored_simulation=scored_simulations),
    NeuronSimulationResults: neuron_simulation_results,
    TokenLookupTableSummaryOfNeuron: st.builds(TokenLookupTableSummaryOfNeuron, tokens=st.lists(text, max_size=3),
                                               average_activations=st.lists(finite, max_size=3)),
    TokensAndWeights: tokens_and_weights,
    SliceParams: st.builds(SliceParams, n_examples_per_split=st.none() | st.integers(1, 20), disjoint=st.booleans()),
    ScoringSet: scoring_sets,
    RecordSplits: st.builds(RecordSplits, train=st.lists(activation_records(), max_size=2), calibration=scoring_sets,
                            valid=scoring_sets, test=scoring_sets, n_dropped=st.integers(0, 5)),
    WeightBasedSummaryOfNeuron: st.builds(WeightBasedSummaryOfNeuron, input_positive=tokens_and_weights,
                                          input_negative=tokens_and_weights, output_positive=tokens_and_weights,
                                          output_negative=tokens_and_weights),
}


def test_every_record_and_result_class_has_a_round_trip_strategy() -> None:
    missing = set(KNOWN_DATACLASSES.values()) - set(STRATEGIES)
    assert not missing, f"add strategies for {sorted(c.__name__ for c in missing)}"


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(STRATEGIES, key=lambda c: c.__name__)).flatmap(
    lambda cls: st.tuples(st.just(cls), STRATEGIES[cls])))
def test_round_trip_is_exact(case: tuple[type, object]) -> None:
    cls, obj = case
    text_form = dumps(obj)
    assert loads(text_form, cls) == obj
    assert from_tagged_json_obj(json.loads(text_form)) == obj


def test_a_results_line_is_read_as_the_type_its_tag_names() -> None:
    ours = ExplanationScores(neuron_id=NeuronId(1, 2), explanation="dates", scorer="detection",
                             scores={"auc": {"top_and_random": 0.75, "random_only": None}},
                             examples=[JudgedExample(group="top", tokens=["a"], true_activations=[1.5], target=1.0,
                                                     prediction=None)])
    assert result_from_json_obj(json.loads(dumps(ours))) == ours
    published = json.loads(dumps(_results()))
    assert result_from_json_obj(published) == _results()
    del published["dataclass_name"]  # older published files carry no tag: they are the published format
    assert isinstance(result_from_json_obj(published), NeuronSimulationResults)
    head = AttentionSimulationResults(attention_head_id=NeuronId(0, 5), scored_explanations=[ScoredAttentionExplanation(
        explanation="the first token", scored_attention_simulation=ScoredAttentionSimulation(
            attention_simulations=[AttentionSimulation(tokens=["a", "b"], token_pair_coords=(1, 0), token_pair_label=1,
                                                       simulation_prediction=0.8)], roc_auc_score=None))])
    assert result_from_json_obj(json.loads(dumps(head))) == head
    with pytest.raises(DataError, match=r"token_pair_coords: expected an array of 2 items, got \[1\]"):
        result_from_json_obj(json.loads(dumps(head).replace("[1, 0]", "[1]")))
    with pytest.raises(DataError, match=r"line 7: at scores\.auc: expected an object"):
        result_from_json_obj({**json.loads(dumps(ours)), "scores": {"auc": 3}}, "line 7")
