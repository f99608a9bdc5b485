"""Training data for the trained simulator: synthetic units, a run directory's records, a results file."""

from __future__ import annotations

from pathlib import Path

from neuroscribe import serialization
from neuroscribe.datasets.synthetic import TOKENS
from neuroscribe.experiments.simulator_training import (
    TrainingData,
    examples_from_results,
    examples_from_run,
    split_validation,
    training_examples,
)
from neuroscribe.experiments.store import RunStore, UnitOutcome
from neuroscribe.records import ActivationRecord, NeuronId, NeuronRecord, UnitId
from neuroscribe.results import (
    ActivationScale,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
)

TOKENS_A = [" red", " cars", " and", " blue", " cars"]


def test_synthetic_units_are_normalized_per_unit_and_validation_is_held_out_by_unit() -> None:
    examples = training_examples(TrainingData(synthetic_excerpts=120, literal_words=5))
    assert {e.source for e in examples} >= {"synthetic word list", "synthetic token class", "synthetic topic",
                                            "synthetic position", "synthetic literal word"}
    units: dict[str, list[float]] = {}
    for e in examples:
        assert len(e.tokens) == len(e.targets) == TOKENS
        units.setdefault(e.unit, []).extend(e.targets)
    assert all(max(v) == 10.0 and min(v) >= 0.0 for v in units.values())
    assert any(sum(t) == 0 for e in examples for t in [e.targets])  # random excerpts where nothing fires stay
    train, validation = split_validation(examples)
    assert validation and {e.unit for e in train}.isdisjoint({e.unit for e in validation})


def test_a_run_directory_and_a_results_file_give_their_explained_excerpts(tmp_path: Path) -> None:
    simulation = SequenceSimulation(tokens=TOKENS_A, expected_activations=[0.0] * 5,
                                    activation_scale=ActivationScale.NEURON_ACTIVATIONS)
    result = NeuronSimulationResults(neuron_id=NeuronId(3, 7), scored_explanations=[ScoredExplanation(
        explanation="colours", scored_simulation=ScoredSimulation(scored_sequence_simulations=[
            ScoredSequenceSimulation(simulation=simulation, true_activations=[2.0, 0, 1.0, 2.0, 0])]))])
    store = RunStore(tmp_path / "run")
    store.create()
    store.write_manifest({"config": {}})
    unit = UnitId(3, 7)
    record = NeuronRecord(neuron_id=NeuronId(3, 7),
                          most_positive_activation_records=[ActivationRecord(TOKENS_A, [0, 4, 0, 0, 2])],
                          random_sample=[ActivationRecord(TOKENS_A, [0, 0, 0, 0, 0])])
    store.write_record(unit, record)
    store.append("m", UnitOutcome(unit=unit, status="ok", explanation="cars"), result)
    from_run = examples_from_run(str(store.path))
    assert [(e.explanation, e.targets) for e in from_run] == [("cars", [0, 10, 0, 0, 5]), ("cars", [0.0] * 5)]

    path = tmp_path / "results.jsonl"
    serialization.append_jsonl(path, result)
    assert [(e.explanation, e.targets) for e in examples_from_results(str(path))] == [
        ("colours", [10, 0, 5, 10, 0])]
