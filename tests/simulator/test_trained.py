"""The trained simulator with the real all-MiniLM-L6-v2: a head trained end to end on synthetic units
beats the untrained head and the mismatched explanation on held-out units; checkpoints round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.experiments.simulator_training import TrainingData, split_validation, training_examples
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.simulator import SIMULATORS, create_simulator
from neuroscribe.simulator.trained import (
    DEFAULT_CHECKPOINT,
    HEAD_FILE,
    MANIFEST_FILE,
    TrainedSimulator,
    TrainingSettings,
    head_predictor,
    load_checkpoint,
    save_checkpoint,
    train_head,
)

SENTENCE = [" The", " match", " ended", " 2", "-", "1", " on", " Monday", "."]


def never_called(request: object) -> object:
    raise AssertionError("the trained simulator asked the backend")


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    torch.set_num_threads(1)
    train, validation = split_validation(training_examples(TrainingData(synthetic_excerpts=300, literal_words=30)))
    return train_head(train, validation, TrainingSettings(steps=1500), name="tiny")


@pytest.mark.slow
def test_a_trained_head_follows_explanations_of_held_out_synthetic_units(tiny: tuple[torch.nn.Module, object]) -> None:
    _, manifest = tiny
    scores = manifest.validation  # type: ignore[attr-defined]
    assert manifest.validation_units >= 10 and manifest.units > manifest.validation_units  # type: ignore[attr-defined]
    assert scores["r"] > scores["r_untrained"] + 0.1, scores
    assert scores["r"] > scores["r_mismatched"] + 0.1, scores


@pytest.mark.slow
async def test_a_saved_checkpoint_loads_by_path_and_by_name_and_predicts_the_same(
        tiny: tuple[torch.nn.Module, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    head, manifest = tiny
    monkeypatch.setenv("NEUROSCRIBE_CACHE", str(tmp_path / "cache"))
    saved = save_checkpoint(head, manifest, tmp_path / "cache" / "simulators" / "tiny")  # type: ignore[arg-type]
    written = json.loads((saved / MANIFEST_FILE).read_text())
    assert written["sentence_model_sha256"] and written["settings"]["seed"] == 0 and written["steps"] == 1500
    expected = head_predictor(head, lexical=True)("dates and days of the week", SENTENCE)
    for checkpoint in ("tiny", str(saved)):
        simulator = create_simulator("trained", ScriptedBackend(never_called), {"checkpoint": checkpoint})
        values = (await simulator.simulate("dates and days of the week", SENTENCE)).expected_activations
        assert values == pytest.approx(expected) and all(0.0 <= v <= 10.0 for v in values)
    with pytest.raises(ConfigError, match="make one with"):
        create_simulator("trained", ScriptedBackend(never_called), {"checkpoint": "no-such-checkpoint"})
    (saved / HEAD_FILE).write_bytes(b"not a tensor file")
    load_checkpoint.cache_clear()
    with pytest.raises(DataError, match="damaged"):
        create_simulator("trained", ScriptedBackend(never_called), {"checkpoint": str(saved)})


async def test_the_shipped_checkpoint_loads_with_its_manifest_and_reads_the_explanation() -> None:
    head, manifest = load_checkpoint(DEFAULT_CHECKPOINT)
    assert SIMULATORS.get("trained") is TrainedSimulator and TrainedSimulator.ordinal_scale
    assert manifest.sources and manifest.validation["r"] > manifest.validation["r_mismatched"]
    assert sum(p.numel() for p in head.parameters()) < 200_000
    simulator = create_simulator("trained", ScriptedBackend(never_called), {})
    days = (await simulator.simulate("days of the week", SENTENCE)).expected_activations
    sport = (await simulator.simulate("sport and competition", SENTENCE)).expected_activations
    assert len(days) == len(SENTENCE) and days != sport
    assert max(range(len(SENTENCE)), key=days.__getitem__) == SENTENCE.index(" Monday")
    assert (await simulator.simulate("days of the week", [])).expected_activations == []
