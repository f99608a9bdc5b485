"""`neuroscribe inspect`: the summary a user sees first for a downloaded record or an explanations file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from neuroscribe.cli import main
from neuroscribe.records import ActivationRecord, NeuronId, NeuronRecord, TokenPairRecord
from neuroscribe.results import (
    ActivationScale,
    NeuronSimulationResults,
    ScoredExplanation,
    TokenLookupTableSummaryOfNeuron,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)
from neuroscribe.results import SequenceSimulation as Sim
from neuroscribe.scoring import score_sequences
from neuroscribe.serialization import append_jsonl, dump_json_file


def _inspect(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_real_neuron_record(capsys: pytest.CaptureFixture[str], real_record_path: Path) -> None:
    code, out, _ = _inspect(capsys, str(real_record_path), "--top", "3")
    assert code == 0
    assert out.startswith("NeuronRecord: layer 1, neuron 1\n")
    assert "top-activating records      50 (64 tokens each)" in out
    assert "random sample               50 (62-64 tokens each)" in out
    assert "5 buckets of 20 records" in out
    assert "max activation              3.262 (top record #1, token ' transfers')" in out
    assert "-inf | -0.0032 | 0.5005 | 1.515 | 2.379 | +inf" in out
    assert "mean -0.0499  variance 0.0053 (std 0.0728)  skewness 9.856  kurtosis 195.6" in out
    assert "[transfers 3.26]" in out and "[transfer 3.17]" in out
    assert "#4" not in out  # --top 3


def _write_results(path: Path) -> None:
    for layer, neuron, predicted in [(5, 131, [0.0, 9.0, 1.0]), (5, 132, [3.0, 3.0, 3.0]), (6, 0, [0.0, 1.0, 8.0])]:
        simulation = Sim(tokens=[" the", " year", " 1999"], expected_activations=predicted,
                         activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS)
        scored = score_sequences([(simulation, [0.0, 4.0, 0.5])])
        append_jsonl(path, NeuronSimulationResults(
            neuron_id=NeuronId(layer, neuron),
            scored_explanations=[ScoredExplanation(explanation="years and dates", scored_simulation=scored)]))


def test_explanations_jsonl(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "explanations.jsonl"
    _write_results(path)
    code, out, _ = _inspect(capsys, str(path), "--limit", "2", "--excerpts")
    assert code == 0
    assert f"{path}: 3 units, 3 explanations" in out
    assert "mean ev_correlation (best)" in out and "n=2, 1 missing" in out  # the constant prediction is n/a
    assert "NeuronSimulationResults: layer 5, neuron 131: 1 explanation" in out
    assert "1. 'years and dates'" in out
    assert "ev_correlation  1.000  rsquared -0.554  abs_dev_explained -0.222  (1 excerpt, 3 tokens)" in out
    assert "ev_correlation    n/a  rsquared  0.000" in out  # layer 5 neuron 132 predicted a constant
    assert "true:       the [year 4]" in out and "simulated:  the [year 9]" in out
    assert "... and 1 more (use --limit 0 to show all)" in out


def test_other_published_types(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lookup = tmp_path / "lookup.json"
    dump_json_file(lookup, TokenLookupTableSummaryOfNeuron(tokens=[" year", "\n"], average_activations=[2.5, 0.25]))
    assert "' year' 2.5, '⏎' 0.25" in _inspect(capsys, str(lookup))[1]
    weights = tmp_path / "weights.json"
    part = TokensAndWeights(tokens=["a", "b"], strengths=[1.0, -1.0])
    dump_json_file(weights, WeightBasedSummaryOfNeuron(input_positive=part, input_negative=part,
                                                       output_positive=part, output_negative=part))
    assert "output, negative" in _inspect(capsys, str(weights))[1]
    pairs = tmp_path / "pairs.json"
    dump_json_file(pairs, TokenPairRecord(tokens=["a", "b"], activations=[0.0, 5.0, 1.0]))
    assert "5  query #1 'b' <- key #0 'a'" in _inspect(capsys, str(pairs))[1]


def test_attention_head_record(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "head.json"
    top = TokenPairRecord(tokens=[" Mary", " met", " John", ".", " She"], activations=[0.0] * 14 + [4.0])
    top.activations[10] = 9.0  # " She" (query 4) <- " Mary" (key 0)
    dump_json_file(path, NeuronRecord(neuron_id=NeuronId(2, 7), most_positive_activation_records=[top]))
    code, out, _ = _inspect(capsys, str(path))
    assert code == 0
    assert "max activation              9 (top record #1, pair ' She' <- ' Mary')" in out
    assert "Mary met John. She…  | strongest pairs (query <- key): ' She' <- ' Mary' 9, ' She' <- ' She' 4" in out


def test_untagged_file_needs_a_type(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"tokens": ["a", " b"], "activations": [0.0, 2.0]}))
    code, _, err = _inspect(capsys, str(path))
    assert code == 2 and "no 'dataclass_name' tag" in err
    code, out, _ = _inspect(capsys, str(path), "--type", "ActivationRecord")
    assert code == 0 and "a [b 2]" in out


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from neuroscribe.serialization import dumps

    monkeypatch.setattr("sys.stdin", io.StringIO(dumps(ActivationRecord(tokens=["x"], activations=[1.0]))))
    code, out, _ = _inspect(capsys, "-")
    assert code == 0 and "ActivationRecord: 1 token, max activation 1" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"dataclass_name": "NeuronRecord", "neuron_id": {"layer_index": "x", "neuron_index": 1}}',
         "at neuron_id.layer_index: expected an integer"),
        ("{broken", "not valid JSON"),
        ("", "no records in the file"),
    ],
)
def test_bad_files_give_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str,
                                      message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = _inspect(capsys, str(path))
    assert code == 2
    assert err.startswith("neuroscribe inspect: error: ") and message in err and "bad.json" in err


def test_a_record_whose_tokens_and_activations_differ_in_length_is_refused(
        capsys: pytest.CaptureFixture[str], real_record_path: Path, tmp_path: Path) -> None:
    data = json.loads(real_record_path.read_text())
    data["random_sample"][7]["activations"].pop()
    path = tmp_path / "short.json"
    path.write_text(json.dumps(data))
    code, _, err = _inspect(capsys, str(path))
    tokens = len(data["random_sample"][7]["tokens"])
    assert code == 2
    assert "short.json" in err and "random_sample[7]" in err
    assert f"{tokens} tokens but {tokens - 1} activations" in err


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _inspect(capsys, str(tmp_path / "nope.json"))
    assert code == 2 and "no such file" in err
