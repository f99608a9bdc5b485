"""Simulations, scores and explanations, in the published neuron-explainer shapes.

Field names match the published JSON so published and new results sit side by side. Scores are
`None` where they are undefined (constant truth or prediction); never a silent 0 or NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from neuroscribe.records import NeuronId


class ActivationScale(StrEnum):
    """What the numbers in `expected_activations` mean."""

    NEURON_ACTIVATIONS = "neuron_activations"
    """On the unit's true scale (e.g. after calibration)."""
    SIMULATED_NORMALIZED_ACTIVATIONS = "simulated_normalized_activations"
    """On the simulator's 0-10 scale."""


@dataclass
class SequenceSimulation:
    """A simulator's prediction for one excerpt: an expected activation per token.

    `distribution_values[i]` / `distribution_probabilities[i]` hold the simulator's distribution
    over values at token i (empty lists when the simulator does not produce one).
    """

    tokens: list[str]
    expected_activations: list[float]
    activation_scale: ActivationScale
    distribution_values: list[list[float]] = field(default_factory=list)
    distribution_probabilities: list[list[float]] = field(default_factory=list)
    uncalibrated_simulation: SequenceSimulation | None = None
    """The same prediction before calibration (as in the reference format), when calibrated."""


@dataclass
class ScoredSequenceSimulation:
    """One excerpt's simulation next to the true activations, with per-excerpt scores."""

    simulation: SequenceSimulation
    true_activations: list[float]
    ev_correlation_score: float | None = None
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None


@dataclass
class ScoredSimulation:
    """Scores pooled over all scored excerpts of one explanation (the paper's headline number)."""

    scored_sequence_simulations: list[ScoredSequenceSimulation]
    ev_correlation_score: float | None = None
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None


@dataclass
class ScoredExplanation:
    explanation: str
    scored_simulation: ScoredSimulation


@dataclass
class NeuronSimulationResults:
    """One line of a published explanations `.jsonl` file."""

    neuron_id: NeuronId
    scored_explanations: list[ScoredExplanation]


@dataclass
class TokenLookupTableSummaryOfNeuron:
    """Tokens with the highest average activation, and those averages (activation-based)."""

    tokens: list[str]
    average_activations: list[float]


@dataclass
class TokensAndWeights:
    tokens: list[str]
    strengths: list[float]


@dataclass
class WeightBasedSummaryOfNeuron:
    """Tokens whose embeddings most strongly drive (input) or are driven by (output) a neuron."""

    input_positive: TokensAndWeights
    input_negative: TokensAndWeights
    output_positive: TokensAndWeights
    output_negative: TokensAndWeights


@dataclass
class JudgedExample:
    """One held-out example a scorer used: what it showed, the truth, and what the model answered.

    Enough to recompute any metric of the scorer from the results file alone.
    """

    group: str
    """Where the example was drawn from, e.g. 'top', 'random', 'quantile_2', 'non_activating'."""
    tokens: list[str]
    true_activations: list[float]
    """The unit's activation at each token (never shown to the judging model)."""
    target: float | None = None
    """What the model was asked to get right, when it is one number (e.g. 1.0 activating / 0.0 not)."""
    prediction: float | None = None
    """The model's answer as one number (e.g. P(yes) or a 0/1 label); None when it could not be read."""
    predicted_activations: list[float] = field(default_factory=list)
    """The model's prediction per token, for scorers that predict every token."""


@dataclass
class ExplanationScores:
    """One explanation of one unit judged by one scorer (neuroscribe's format for every scorer but
    `simulation`, which writes the published `NeuronSimulationResults`)."""

    neuron_id: NeuronId
    explanation: str
    scorer: str
    """Registry name of the scorer that computed these scores."""
    scores: dict[str, dict[str, float | None]]
    """Score name -> variant (e.g. 'top_and_random', 'random_only', 'quantile_2') -> value (None: undefined)."""
    examples: list[JudgedExample] = field(default_factory=list)


@dataclass
class AttentionSimulation:
    """The simulator's belief that one (query, key) pair of an excerpt is strongly attended (published format)."""

    tokens: list[str]
    token_pair_coords: tuple[int, int]
    """(query, key), key <= query: the later token and the earlier one (or itself) it may draw on."""
    token_pair_label: int
    """1 for a pair among the head's strongest, 0 for a weak one."""
    simulation_prediction: float
    """P(the pair is strongly attended) as the simulator gave it, between 0 and 1."""


@dataclass
class ScoredAttentionSimulation:
    """Every pair asked about for one explanation, and the ROC AUC of the predictions against the labels."""

    attention_simulations: list[AttentionSimulation]
    roc_auc_score: float | None = None
    """The chance that a strong pair is predicted above a weak one (ties count half); None where undefined."""


@dataclass
class ScoredAttentionExplanation:
    explanation: str
    scored_attention_simulation: ScoredAttentionSimulation


@dataclass
class AttentionSimulationResults:
    """One line of a published attention-head explanations `.jsonl` file."""

    attention_head_id: NeuronId
    scored_explanations: list[ScoredAttentionExplanation]

    @property
    def neuron_id(self) -> NeuronId:
        """The head's id under the name every other result line uses (layer, index within the layer)."""
        return self.attention_head_id


ResultRecord = NeuronSimulationResults | ExplanationScores | AttentionSimulationResults
"""One line of a run's results file: the published formats for simulation scores (neurons and attention
heads), ours for the others."""
