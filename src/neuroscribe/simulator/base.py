"""The simulator interface: an explanation and an excerpt's tokens in, predicted activations out.

A simulator never sees the true activations of what it predicts; only a calibration wrapper sees
the calibration split's truth, to map predictions onto the unit's scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from neuroscribe.llm.base import Backend, CallEstimate
from neuroscribe.results import SequenceSimulation


class Simulator(Protocol):
    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        """Raise `neuroscribe.errors.ParseError` or `BackendError` when no valid prediction is possible."""
        ...


class RegisteredSimulator(Simulator, Protocol):
    """A simulator class in `neuroscribe.simulator.SIMULATORS`, built as `cls(backend, options)` with
    `options` an instance of `options_type` (checked when the config is loaded). A simulator that asks
    no model (e.g. 'lexical', 'embedding') takes the backend and never calls it."""

    options_type: ClassVar[type[Any]]
    ordinal_scale: ClassVar[bool]
    """True when the 0-10 values only order tokens (a fixed monotone map of a match or similarity, not an
    estimate of the normalized activation): correlation means what it always does, but the scale-dependent
    scores (r-squared, absolute deviation explained, R^2) are not comparable, so uncalibrated they are not
    reported."""

    def __init__(self, backend: Backend, options: Any) -> None: ...

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        """Model calls and tokens to simulate one excerpt of `excerpt_tokens` tokens."""
        ...
