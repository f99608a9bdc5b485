"""Scorers: every way of judging an explanation, each one module plus a registry entry here.

`SCORERS` maps config names (`[[scorers]] name = ...`) to scorer classes; `create_scorer` builds one
with options validated against its options dataclass. The paper's scoring is `simulation`; `detection`,
`fuzzing` and `intruder` ask a model yes/no or which-one questions about excerpts; `attention_simulation`
scores attention-head explanations on token pairs.
"""

from __future__ import annotations

from collections.abc import Mapping

from neuroscribe.errors import StageError
from neuroscribe.llm.base import Backend
from neuroscribe.registry import Registry, registered_options
from neuroscribe.scorers.attention import AttentionSimulationOptions, AttentionSimulationScorer
from neuroscribe.scorers.base import (
    Scorer,
    ScorerInput,
    ScorerOutput,
    ScoreTable,
    ScoringShape,
    primary_variant,
)
from neuroscribe.scorers.detection import DetectionOptions, DetectionScorer
from neuroscribe.scorers.fuzzing import FuzzingOptions, FuzzingScorer
from neuroscribe.scorers.intruder import IntruderOptions, IntruderScorer
from neuroscribe.scorers.simulation import SimulationOptions, SimulationScorer

SCORERS: Registry[Scorer] = Registry("scorer")
SCORERS.register("simulation")(SimulationScorer)
SCORERS.register("detection")(DetectionScorer)
SCORERS.register("fuzzing")(FuzzingScorer)
SCORERS.register("intruder")(IntruderScorer)
SCORERS.register("attention_simulation")(AttentionSimulationScorer)


def create_scorer(name: str, backend: Backend, options: Mapping[str, object]) -> Scorer:
    """The scorer registered as `name`, asking `backend`; unknown or ill-typed options fail early."""
    return SCORERS.get(name)(backend, registered_options(SCORERS, name, options))


__all__ = [
    "SCORERS",
    "AttentionSimulationOptions",
    "AttentionSimulationScorer",
    "DetectionOptions",
    "DetectionScorer",
    "FuzzingOptions",
    "FuzzingScorer",
    "IntruderOptions",
    "IntruderScorer",
    "ScoreTable",
    "Scorer",
    "ScorerInput",
    "ScorerOutput",
    "ScoringShape",
    "SimulationOptions",
    "SimulationScorer",
    "StageError",
    "create_scorer",
    "primary_variant",
]
