"""Training data for the trained simulator, from synthetic units and from finished runs, and the training.

`neuroscribe train-simulator` calls `train_simulator`. A run directory gives, per finished unit with an
explanation, the excerpts of its stored record (RUN/records) with their true activations; a results file
(JSONL of the published `NeuronSimulationResults`) gives the scored excerpts of each explanation. True
activations are normalized per unit onto 0-10 (`records.normalize_activations`, by the unit's maximum).
Validation units are held out by unit, every `VALIDATION_EVERY`-th in name order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from neuroscribe import serialization
from neuroscribe.datasets.synthetic import synthetic_units
from neuroscribe.errors import DataError
from neuroscribe.experiments.store import RunStore
from neuroscribe.records import ActivationRecord, normalize_activations
from neuroscribe.results import NeuronSimulationResults
from neuroscribe.simulator.trained import TrainingExample, TrainingSettings, save_checkpoint, train_head

if TYPE_CHECKING:
    from neuroscribe.simulator.trained import TrainingManifest

logger = logging.getLogger(__name__)
VALIDATION_EVERY = 5
"""One unit in this many (in name order) is held out to validate the head."""


@dataclass(frozen=True, kw_only=True)
class TrainingData:
    """Where the examples come from."""

    synthetic_units: bool = True
    """Include the synthetic units of `neuroscribe.datasets.synthetic`."""
    synthetic_excerpts: int = 800
    """The shared pool of BBC excerpts the synthetic rules run over."""
    literal_words: int = 80
    """Synthetic single-word units (frequent corpus words drawn by the seed)."""
    runs: tuple[str, ...] = ()
    """Run directories: their explained units' records."""
    results: tuple[str, ...] = ()
    """Results files (JSONL of NeuronSimulationResults): their scored excerpts."""
    seed: int = 0


def _examples(explanations: Sequence[str], records: Sequence[ActivationRecord], source: str,
              unit: str) -> list[TrainingExample]:
    """The unit's excerpts normalized by its maximum, read with its explanations in turn."""
    top = max((a for r in records for a in r.activations), default=0.0)
    if top <= 0:
        return []  # a unit that never activates teaches nothing about following explanations
    return [TrainingExample(explanation=explanations[i % len(explanations)], tokens=list(r.tokens),
                            targets=[float(v) for v in normalize_activations(r.activations, top)],
                            source=source, unit=unit) for i, r in enumerate(records) if r.tokens]


def examples_from_run(run: str) -> list[TrainingExample]:
    store = RunStore(run)
    if not store.exists():
        raise DataError(f"{run} is not a run directory (no run.json); give a finished `neuroscribe run` directory")
    out = []
    for method in store.methods():
        for unit, outcome in store.finished(method).items():
            record = store.read_record(unit) if outcome.explanation else None
            if record is None or not outcome.explanation:
                continue
            records = record.most_positive_activation_records + record.random_sample
            out += _examples([outcome.explanation], records, f"run {run}", f"{run}:{method}:{unit.layer}/{unit.index}")
    return out


def examples_from_results(path: str) -> list[TrainingExample]:
    out = []
    for where, result in enumerate(serialization.read_jsonl(path, NeuronSimulationResults)):
        for scored in result.scored_explanations:
            records = [ActivationRecord(tokens=s.simulation.tokens, activations=s.true_activations)
                       for s in scored.scored_simulation.scored_sequence_simulations]
            unit = f"{path}:{where}:{result.neuron_id.layer_index}/{result.neuron_id.neuron_index}"
            out += _examples([scored.explanation], records, f"results {path}", unit)
    return out


def training_examples(data: TrainingData) -> list[TrainingExample]:
    examples: list[TrainingExample] = []
    if data.synthetic_units:
        for unit in synthetic_units(n_excerpts=data.synthetic_excerpts, literal_words=data.literal_words,
                                    seed=data.seed):
            examples += _examples(unit.explanations, unit.records, f"synthetic {unit.family}", unit.name)
    for run in data.runs:
        examples += examples_from_run(run)
    for path in data.results:
        examples += examples_from_results(path)
    return examples


def split_validation(examples: Sequence[TrainingExample]) -> tuple[list[TrainingExample], list[TrainingExample]]:
    held = set(sorted({e.unit for e in examples})[::VALIDATION_EVERY])
    return [e for e in examples if e.unit not in held], [e for e in examples if e.unit in held]


def train_simulator(data: TrainingData, settings: TrainingSettings, *, name: str, out: Path,
                    progress: Callable[[int, float], None] | None = None) -> TrainingManifest:
    """Gather the examples, train a head, save it with its manifest into `out`; returns the manifest."""
    train, validation = split_validation(training_examples(data))
    logger.info("training on %d excerpts, validating on %d", len(train), len(validation))
    head, manifest = train_head(train, validation, settings, name=name, progress=progress, notes=(
        f"synthetic units: {data.synthetic_units} ({data.synthetic_excerpts} BBC excerpts, {data.literal_words} "
        f"literal words); runs: {list(data.runs)}; results: {list(data.results)}; every {VALIDATION_EVERY}th unit "
        "held out for validation; the carousel neurons and the neuron puzzles never used"))
    save_checkpoint(head, manifest, out)
    return manifest
