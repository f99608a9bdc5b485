"""Fuzzing: given the explanation, are the marked tokens of this excerpt the ones the unit responds to?

The model sees numbered excerpts with some tokens marked <<like this>>: activating excerpts with their truly
activating tokens marked (answer yes), and activating and non-activating excerpts with as many tokens marked
at random (answer no). Detection asks whether an explanation finds the right contexts; fuzzing asks whether
it finds the right tokens within them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neuroscribe.errors import ConfigError
from neuroscribe.scorers import examples as draw
from neuroscribe.scorers.base import ScorerInput
from neuroscribe.scorers.judging import Shown, WorkedYesNo, YesNoOptions, YesNoScorer

INSTRUCTIONS = (
    "We are studying one unit inside a language model: a neuron that responds strongly to some tokens of a text "
    "and stays silent on the rest. You get an explanation of what the unit responds to, then numbered text "
    "excerpts in which some tokens are marked <<like this>>. For each excerpt, decide whether the marked tokens "
    "are the ones the explanation says the unit responds to. Say yes only when the marks sit on what the "
    "explanation describes; say no when they sit on other tokens, even if the excerpt holds such tokens "
    'elsewhere. Answer with one line per excerpt, "N: yes" or "N: no", in order, and nothing else.'
)

WORKED_EXAMPLES: WorkedYesNo = (
    ("years written as numbers", (
        ("The bridge opened in <<1932>> and closed for repairs in <<1988>>.", True),
        ("She <<bought>> three apples in 2010.", False),
        ("Fighting lasted from <<1914>> to <<1918>>.", True),
        ("<<The>> weather stayed mild all <<week>>.", False),
    )),
    ("negations such as not and never", (
        ("I do <<not>> think that is right.", True),
        ("They walked down a <<quiet>> street.", False),
        ("<<Never>> again, she said, and meant it.", True),
    )),
)


@dataclass(frozen=True, kw_only=True)
class FuzzingOptions(YesNoOptions):
    mark_threshold: float = 0.5
    """A token of an activating excerpt counts as activating, and is marked, above this fraction of the unit's
    max activation, in [0, 1) (the excerpt's strongest token when none is)."""
    mismarked_fraction: float = 0.5
    """Share of the activating excerpts shown with random marks instead of their true ones, in [0, 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("mark_threshold", "mismarked_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")


class FuzzingScorer(YesNoScorer):
    """Yes is right for true marks only. Scores `fuzzing_*` (see `yes_no_output`)."""

    options_type: ClassVar[type[Any]] = FuzzingOptions
    name: ClassVar[str] = "fuzzing"
    instructions: ClassVar[str] = INSTRUCTIONS
    worked_examples: ClassVar[WorkedYesNo] = WORKED_EXAMPLES
    options: FuzzingOptions

    def draw(self, inputs: ScorerInput) -> list[Shown]:
        """Activating excerpts with true or random marks and non-activating ones with random marks, shuffled.
        Random marks cover as many tokens as true marks do on average (the same density)."""
        rng = draw.unit_rng(inputs, self.name)
        active, inactive = self.draw_examples(inputs, rng)
        true_marks = [draw.marked_positions(e.record, inputs.max_activation, self.options.mark_threshold)
                      for e in active]
        density = float(np.mean([len(m) / len(e.record.tokens) for e, m in zip(active, true_marks, strict=True)]))
        n_mismarked = min(round(self.options.mismarked_fraction * len(active)), len(active) - 1)  # keep a positive
        mismarked = set(rng.permutation(len(active))[:n_mismarked].tolist())

        def random_marks(example: draw.Example, avoid: Sequence[int]) -> Shown:
            k = max(1, round(density * len(example.record.tokens)))
            marks = draw.random_positions(len(example.record.tokens), k, avoid, rng)
            return Shown(example, draw.render(example.record.tokens, marks), False)

        shown = [random_marks(e, m) if i in mismarked else Shown(e, draw.render(e.record.tokens, m), True)
                 for i, (e, m) in enumerate(zip(active, true_marks, strict=True))]
        return draw.shuffled([*shown, *(random_marks(e, ()) for e in inactive)], rng)
