"""What every simulator shows a model: the instructions, worked examples and the explanation line.

The explanation is shown after the same lead-in the explainers complete
(`neuroscribe.formatting.NEURON_LEAD_IN`), so explanations written by any explainer, or published
ones, read as the sentence they were written to finish.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from neuroscribe import formatting
from neuroscribe.llm.base import Backend, CallEstimate, PromptFormat
from neuroscribe.results import SequenceSimulation

INSTRUCTIONS = (
    "We are predicting how one neuron of a language model responds to text. Each neuron responds to some "
    "particular pattern, summed up by a short explanation. Below, each explanation is followed by an "
    "excerpt, one token per line; after each token comes a tab and the neuron's activation on it. "
    f"{formatting.SCALE_SENTENCE} Where the activation is \"{formatting.UNKNOWN}\", it is to be predicted "
    "from the explanation."
)


PREAMBLE_TOKENS = 1200
"""About how many tokens the instructions and worked examples take (for cost estimates)."""


@dataclass(frozen=True, kw_only=True)
class SimulatorOptions:
    """Settings every prompted simulator shares."""

    n_worked_examples: int = 2
    """Worked examples (explanation + excerpt with values) shown before the excerpt to predict."""

    def __post_init__(self) -> None:
        if not 0 <= self.n_worked_examples <= len(formatting.WORKED_EXAMPLES):
            raise ValueError(
                f"n_worked_examples must be in 0..{len(formatting.WORKED_EXAMPLES)}, got {self.n_worked_examples}"
            )


@dataclass(frozen=True, kw_only=True)
class TopLogprobsOptions(SimulatorOptions):
    """Settings of the simulators that read values from the top log-probabilities of generated tokens."""

    prompt_format: PromptFormat = "auto"
    """'chat', 'completion' or 'auto' (chat when the backend has it)."""
    top_logprobs: int = 20
    """Alternatives read per generated token (OpenAI and many servers allow at most 20)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_logprobs <= 100:
            raise ValueError(f"top_logprobs must be in 1..100, got {self.top_logprobs}")


def explanation_line(explanation: str, lead_in: str = formatting.NEURON_LEAD_IN) -> str:
    """The explanation as the sentence it completes (`lead_in`: a neuron's, or a head's for token pairs)."""
    return f"Explanation: {lead_in} {explanation.strip().rstrip('.').strip()}."


def worked_examples_text(n: int) -> str:
    """The worked examples as complete blocks, each followed by a blank line."""
    blocks = []
    for example in formatting.WORKED_EXAMPLES[:n]:
        lines = formatting.activation_lines(example.tokens, example.values)
        blocks.append("\n".join([explanation_line(example.explanation), formatting.START, *lines, formatting.END]))
    return "".join(f"{block}\n\n" for block in blocks)


def preamble(n_worked_examples: int) -> str:
    """Everything before the explanation being simulated (the same for every unit: a reusable prefix)."""
    return f"{INSTRUCTIONS}\n\n{worked_examples_text(n_worked_examples)}"


Options = TypeVar("Options", bound=SimulatorOptions)


class PromptedSimulator(ABC, Generic[Options]):
    """A simulator that asks one backend; `create_simulator` validates config against `options_type`."""

    options_type: ClassVar[type[Any]] = SimulatorOptions
    ordinal_scale: ClassVar[bool] = False
    """The model is asked for the activation on the paper's 0-10 scale (see `RegisteredSimulator`)."""

    def __init__(self, backend: Backend, options: Options) -> None:
        self.backend = backend
        self.options = options

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        """Calls and tokens to simulate one excerpt of `excerpt_tokens` tokens (default: one request
        whose prompt holds the instructions, worked examples and the excerpt, nothing generated)."""
        return CallEstimate(calls=1, prompt_tokens=excerpt_tokens * 3 + PREAMBLE_TOKENS, completion_tokens=0)

    @abstractmethod
    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation: ...
