"""neuroscribe: explain, simulate and score the units of language models.

The record and result types load eagerly (cheap); everything that pulls in models loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from neuroscribe.errors import (
    BackendError,
    CapabilityError,
    ConfigError,
    DataError,
    NeuroscribeError,
    ParseError,
)
from neuroscribe.records import (
    ActivationRecord,
    Evidence,
    NeuronId,
    NeuronRecord,
    RecordSplits,
    ScoringSet,
    SliceParams,
    TokenPairRecord,
    UnitId,
    UnitKind,
    normalize_activations,
    split_records,
)
from neuroscribe.results import (
    ActivationScale,
    ExplanationScores,
    JudgedExample,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
)

_LAZY = {
    # name -> module that defines it; imported on first attribute access
    "run_experiment": "neuroscribe.experiments",
    "load_config": "neuroscribe.experiments",
    "build_report": "neuroscribe.experiments",
    "build_leaderboard": "neuroscribe.experiments",
    "RunStore": "neuroscribe.experiments",
    "create_backend": "neuroscribe.llm",
    "BackendSpec": "neuroscribe.llm",
    "create_explainer": "neuroscribe.explainer",
    "create_simulator": "neuroscribe.simulator",
    "create_scorer": "neuroscribe.scorers",
    "calibrate": "neuroscribe.simulator",
    "load_neuron_record": "neuroscribe.datasets",
    "collect": "neuroscribe.datasets.collect",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neuroscribe' has no attribute {name!r}")


__all__ = [
    "ActivationRecord",
    "ActivationScale",
    "BackendError",
    "CapabilityError",
    "ConfigError",
    "DataError",
    "Evidence",
    "ExplanationScores",
    "JudgedExample",
    "NeuronId",
    "NeuronRecord",
    "NeuronSimulationResults",
    "NeuroscribeError",
    "ParseError",
    "RecordSplits",
    "ScoredExplanation",
    "ScoredSequenceSimulation",
    "ScoredSimulation",
    "ScoringSet",
    "SequenceSimulation",
    "SliceParams",
    "TokenPairRecord",
    "UnitId",
    "UnitKind",
    "normalize_activations",
    "split_records",
    *_LAZY,
]
