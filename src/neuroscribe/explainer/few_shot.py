"""Worked examples for the explainers, written for this project (no text taken from elsewhere).

The neuron and attention-head examples live in `neuroscribe.formatting` because the simulators show
them too; here are the look-up-table ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from neuroscribe.results import TokenLookupTableSummaryOfNeuron


@dataclass(frozen=True, kw_only=True)
class LookupExample:
    table: TokenLookupTableSummaryOfNeuron
    explanation: str


LOOKUP_EXAMPLES: tuple[LookupExample, ...] = (
    LookupExample(
        table=TokenLookupTableSummaryOfNeuron(
            tokens=[" Tuesday", " Friday", " Monday", " weekend", " Sunday", " Thursday", " Sat", " Wed"],
            average_activations=[4.1, 4.0, 3.8, 3.1, 3.0, 2.9, 2.2, 2.0],
        ),
        explanation="days of the week and the weekend",
    ),
    LookupExample(
        table=TokenLookupTableSummaryOfNeuron(
            tokens=["'t", " gonna", " wanna", "ain", " y", "all", " kinda", " gotta"],
            average_activations=[1.9, 1.8, 1.8, 1.5, 1.2, 1.1, 1.0, 0.9],
        ),
        explanation="informal spoken contractions such as gonna, wanna and ain't",
    ),
)
