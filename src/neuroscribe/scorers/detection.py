"""Detection: given the explanation, does the unit respond to some token of this excerpt? (yes / no)

The model sees numbered plain excerpts, activating ones from several of the unit's activation quantiles and
non-activating ones from its random sample, shuffled, several to a prompt, and answers `N: yes` / `N: no`.
Unlike simulation it asks nothing about *which* tokens, so it tests whether the explanation picks out the
right contexts, and it works with any backend that generates text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from neuroscribe.scorers import examples as draw
from neuroscribe.scorers.base import ScorerInput
from neuroscribe.scorers.judging import Shown, WorkedYesNo, YesNoOptions, YesNoScorer

INSTRUCTIONS = (
    "We are studying one unit inside a language model: a neuron that responds strongly to some tokens of a text "
    "and stays silent on the rest. You get an explanation of what the unit responds to, then numbered text "
    "excerpts. For each excerpt, decide from the explanation alone whether the unit responds to any token in it. "
    "Many excerpts hold nothing the explanation describes; say no to those. Answer with one line per excerpt, "
    '"N: yes" or "N: no", in order, and nothing else.'
)

WORKED_EXAMPLES: WorkedYesNo = (
    ("bodies of water: rivers, lakes and seas", (
        ("We rowed across the lake before the sun came up.", True),
        ("The invoice is due on Friday, please pay promptly.", False),
        ("Barges carry grain down the Danube to the Black Sea.", True),
        ("He pressed the red button twice and waited.", False),
    )),
    ("closing brackets in source code", (
        ("for (int i = 0; i < n; i++) { sum += a[i]; }", True),
        ("She smiled, waved goodbye and walked home.", False),
        ("print(len(items))", True),
    )),
)


@dataclass(frozen=True, kw_only=True)
class DetectionOptions(YesNoOptions):
    """Detection's options are the shared ones (quantiles, non-activating excerpts, excerpts per prompt)."""


class DetectionScorer(YesNoScorer):
    """Plain excerpts; yes is right for the activating ones. Scores `detection_*` (see `yes_no_output`)."""

    options_type: ClassVar[type[Any]] = DetectionOptions
    name: ClassVar[str] = "detection"
    instructions: ClassVar[str] = INSTRUCTIONS
    worked_examples: ClassVar[WorkedYesNo] = WORKED_EXAMPLES

    def draw(self, inputs: ScorerInput) -> list[Shown]:
        """The activating and non-activating excerpts, shuffled with the unit's seed."""
        rng = draw.unit_rng(inputs, self.name)
        active, inactive = self.draw_examples(inputs, rng)
        return draw.shuffled([Shown(e, draw.render(e.record.tokens), e.activating) for e in [*active, *inactive]],
                             rng)
