"""Simulators: predict a unit's activation at every token of an excerpt from an explanation alone.

`SIMULATORS` maps config names to simulator classes; `create_simulator` builds one with options
validated against its options dataclass. Most ask a model for values on the 0-10 scale; `lexical`,
`embedding` and `trained` ask none (a keyword match; a sentence-embedding model's similarity; a head trained
over that model's states, `neuroscribe train-simulator`) and order tokens only.
`calibration.calibrate` maps predictions onto the true activation scale. A new simulator is one module
plus a registry entry here. `TokenPairSimulator` predicts whether an attention head links a (query, key)
pair instead; the `attention_simulation` scorer uses it.
"""

from __future__ import annotations

from collections.abc import Mapping

from neuroscribe.llm.base import Backend
from neuroscribe.registry import Registry, registered_options
from neuroscribe.simulator.all_at_once import AllAtOnceSimulator
from neuroscribe.simulator.base import RegisteredSimulator, Simulator
from neuroscribe.simulator.calibration import CALIBRATION_METHODS, CalibratedSimulator, calibrate
from neuroscribe.simulator.embedding import EmbeddingOptions, EmbeddingSimulator
from neuroscribe.simulator.generated_logprobs import GeneratedLogprobsOptions, GeneratedLogprobsSimulator
from neuroscribe.simulator.json_simulator import JsonSimulator, JsonSimulatorOptions
from neuroscribe.simulator.lexical import LexicalOptions, LexicalSimulator
from neuroscribe.simulator.one_at_a_time import OneAtATimeOptions, OneAtATimeSimulator
from neuroscribe.simulator.prompts import PromptedSimulator, SimulatorOptions
from neuroscribe.simulator.token_pair import TokenPairSimulator, TokenPairSimulatorOptions
from neuroscribe.simulator.trained import TrainedOptions, TrainedSimulator

SIMULATORS: Registry[RegisteredSimulator] = Registry("simulator")
SIMULATORS.register("all_at_once")(AllAtOnceSimulator)
SIMULATORS.register("one_at_a_time")(OneAtATimeSimulator)
SIMULATORS.register("json")(JsonSimulator)
SIMULATORS.register("generated_logprobs")(GeneratedLogprobsSimulator)
SIMULATORS.register("lexical")(LexicalSimulator)
SIMULATORS.register("embedding")(EmbeddingSimulator)
SIMULATORS.register("trained")(TrainedSimulator)


def create_simulator(name: str, backend: Backend, options: Mapping[str, object]) -> Simulator:
    """The simulator registered as `name`, talking to `backend`.

    Unknown or ill-typed options raise ConfigError; a backend lacking what the simulator needs
    (e.g. prompt distributions for 'all_at_once') raises CapabilityError.
    """
    return SIMULATORS.get(name)(backend, registered_options(SIMULATORS, name, options))


__all__ = [
    "CALIBRATION_METHODS",
    "SIMULATORS",
    "AllAtOnceSimulator",
    "CalibratedSimulator",
    "EmbeddingOptions",
    "EmbeddingSimulator",
    "GeneratedLogprobsOptions",
    "GeneratedLogprobsSimulator",
    "JsonSimulator",
    "JsonSimulatorOptions",
    "LexicalOptions",
    "LexicalSimulator",
    "OneAtATimeOptions",
    "OneAtATimeSimulator",
    "PromptedSimulator",
    "RegisteredSimulator",
    "Simulator",
    "SimulatorOptions",
    "TokenPairSimulator",
    "TokenPairSimulatorOptions",
    "TrainedOptions",
    "TrainedSimulator",
    "calibrate",
    "create_simulator",
]
