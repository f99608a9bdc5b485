"""The public API is a promise: `neuroscribe.__all__` changes only on purpose, and every name in it resolves."""

from __future__ import annotations

import subprocess
import sys

import neuroscribe

PUBLIC = [
    "ActivationRecord", "ActivationScale", "BackendError", "CapabilityError", "ConfigError", "DataError", "Evidence",
    "ExplanationScores", "JudgedExample", "NeuronId", "NeuronRecord", "NeuronSimulationResults", "NeuroscribeError",
    "ParseError", "RecordSplits", "ScoredExplanation", "ScoredSequenceSimulation", "ScoredSimulation", "ScoringSet",
    "SequenceSimulation", "SliceParams", "TokenPairRecord", "UnitId", "UnitKind", "normalize_activations",
    "split_records",
    # loaded on first use
    "run_experiment", "load_config", "build_report", "build_leaderboard", "RunStore", "create_backend",
    "BackendSpec", "create_explainer", "create_simulator", "create_scorer", "calibrate", "load_neuron_record",
    "collect",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert neuroscribe.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(neuroscribe, name) is not None, name


def test_importing_the_package_loads_no_model_library() -> None:
    probe = ("import sys, neuroscribe; "
             "print(sorted(m for m in ('torch', 'transformers', 'openai', 'xllamacpp') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
