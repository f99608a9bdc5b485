"""A small real run directory (written through RunStore, scored with the real scoring code), and page reading."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from neuroscribe.experiments.store import RunStore, UnitOutcome, UnitUsage
from neuroscribe.records import ActivationRecord, NeuronId, NeuronRecord, TokenPairRecord, UnitId, pair_index
from neuroscribe.results import (
    ActivationScale,
    AttentionSimulation,
    AttentionSimulationResults,
    ExplanationScores,
    JudgedExample,
    NeuronSimulationResults,
    ScoredAttentionExplanation,
    ScoredAttentionSimulation,
    ScoredExplanation,
    SequenceSimulation,
)
from neuroscribe.scoring import pooled_scores, score_variants

HOSTILE_TOKEN = "<script>window.__pwned = 1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned = 2">'
RTL_TOKEN = " שלום"
EMOJI_TOKEN = "🧠👩‍🔬"
TRICKY_TOKENS = [" The", HOSTILE_TOKEN, "\n", "\t", RTL_TOKEN, EMOJI_TOKEN, HOSTILE_IMG, "  ", "</script>", "&amp;"]
METHODS = ("token_activation_pair+all_at_once", "random_explanation+all_at_once")
UNITS = (UnitId(0, 3), UnitId(0, 7), UnitId(2, 1))
FAILED = (METHODS[1], UnitId(2, 1))
"""This unit failed under the control method, so the run has one failed row."""
PLUGIN_METHOD = "token_activation_pair+keyword"
"""A method whose (plugin) scorer writes ExplanationScores and leads with a score that is no correlation."""
PLUGIN_SCORES: dict[str, dict[str, float | None]] = {
    "keyword_hits": {"top_and_random": 0.8125, "top_only": 0.9, "random_only": None},
    "keyword_precision": {"top_and_random": 0.5},
}


def _excerpt(rng: random.Random, n: int, hot: float) -> ActivationRecord:
    words = [" cat", " dog", " the", ",", " sat", " on", " mat", ".", " a", " ran"]
    tokens = [rng.choice(words) for _ in range(n)]
    activations = [round(rng.uniform(-0.1, 0.3), 4) for _ in range(n)]
    peak = rng.randrange(n)
    tokens[peak], activations[peak] = " dog", hot
    return ActivationRecord(tokens=tokens, activations=activations)


def make_record(unit: UnitId, seed: int) -> NeuronRecord:
    """A record whose first top excerpt carries the tricky tokens (hostile, RTL, emoji, whitespace)."""
    rng = random.Random(seed)
    top = [_excerpt(rng, 16, 4.0 - 0.3 * i) for i in range(8)]
    top[0] = ActivationRecord(tokens=[*TRICKY_TOKENS, *top[0].tokens[len(TRICKY_TOKENS):]],
                              activations=[3.5, 4.0, 0.5, 0.0, 2.0, 1.0, 3.0, 0.0, 1.5, 0.2,
                                           *top[0].activations[len(TRICKY_TOKENS):]])
    random_sample = [_excerpt(rng, 16, 0.5) for _ in range(6)]
    return NeuronRecord(neuron_id=NeuronId.from_unit(unit), most_positive_activation_records=top,
                        random_sample=random_sample, mean=0.05, variance=0.2, skewness=3.0, kurtosis=12.0)


HEAD_TOKENS = ["The", " cat", " saw", " the", " cat"]


def make_head_record() -> NeuronRecord:
    """An attention head that attends from a repeated token to its earlier copy: (4, 1) is the strongest pair."""
    activations = [0.0] * (len(HEAD_TOKENS) * (len(HEAD_TOKENS) + 1) // 2)
    activations[pair_index(4, 1)] = 2.0
    activations[pair_index(3, 0)] = 1.0
    activations[pair_index(2, 2)] = 0.5
    top = [TokenPairRecord(tokens=list(HEAD_TOKENS), activations=activations)]
    return NeuronRecord(neuron_id=NeuronId(layer_index=3, neuron_index=2), most_positive_activation_records=top,
                        random_sample=[TokenPairRecord(tokens=["A", " b"], activations=[0.1, 0.0, 0.2])])


def make_attention_results() -> AttentionSimulationResults:
    """The published attention-head result line for that head: its strong pair (4, 1) and two weak ones asked."""
    asked = [AttentionSimulation(tokens=list(HEAD_TOKENS), token_pair_coords=(4, 1), token_pair_label=1,
                                 simulation_prediction=0.8),
             AttentionSimulation(tokens=list(HEAD_TOKENS), token_pair_coords=(2, 0), token_pair_label=0,
                                 simulation_prediction=0.3),
             AttentionSimulation(tokens=list(HEAD_TOKENS), token_pair_coords=(3, 3), token_pair_label=0,
                                 simulation_prediction=0.85)]
    return AttentionSimulationResults(attention_head_id=NeuronId(layer_index=3, neuron_index=2), scored_explanations=[
        ScoredAttentionExplanation(explanation="a repeated word back to its first copy",
                                   scored_attention_simulation=ScoredAttentionSimulation(attention_simulations=asked,
                                                                                         roc_auc_score=0.5))])


def simulate(record: ActivationRecord, rng: random.Random, scale: ActivationScale) -> SequenceSimulation:
    """Stand-in simulator output: the truth, rescaled, plus noise (the viewer shows it, never judges it)."""
    if scale is ActivationScale.NEURON_ACTIVATIONS:
        expected = [max(0.0, a + rng.gauss(0, 0.5)) for a in record.activations]
        return SequenceSimulation(tokens=list(record.tokens), expected_activations=expected, activation_scale=scale)
    # On the 0-10 scale a simulator also gives a distribution over the values at each token.
    values = [float(v) for v in range(11)]
    probabilities = []
    for a in record.activations:
        centre = min(10.0, max(0.0, a * 10 / 4.0 + rng.gauss(0, 0.5)))
        weights = [2.0 ** -abs(v - centre) for v in values]
        probabilities.append([w / sum(weights) for w in weights])
    expected = [sum(v * p for v, p in zip(values, ps, strict=True)) for ps in probabilities]
    return SequenceSimulation(tokens=list(record.tokens), expected_activations=expected, activation_scale=scale,
                              distribution_values=[values] * len(expected), distribution_probabilities=probabilities)


def _manifest(store: RunStore, methods: list[str]) -> None:
    store.create()
    store.write_manifest({"config_hash": "0123abcd", "created": "2026-11-23T15:00:00+00:00", "methods": methods,
                          "backends": {"default": {"type": "hf", "model": "embedded"}}, "unit_kind": "mlp_neuron",
                          "config": {"units": "three"}, "python": "3.11.7"})


def simulation_line(unit: UnitId, record: NeuronRecord, method: str,
                    seed: int) -> tuple[UnitOutcome, NeuronSimulationResults]:
    """What the simulation scorer commits for a unit: every pooled score per variant, ev_correlation leading."""
    calibrated = method == METHODS[0] and unit == UNITS[1]
    scale = ActivationScale.NEURON_ACTIVATIONS if calibrated else ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
    rng = random.Random(f"{seed}-{method}")
    top = [(simulate(r, rng, scale), r.activations) for r in record.most_positive_activation_records[:3]]
    rand = [(simulate(r, rng, scale), r.activations) for r in record.random_sample[:3]]
    named: dict[str, dict[str, float | None]] = {}
    for variant, pairs in {"top_and_random": [*top, *rand], "top_only": top, "random_only": rand}.items():
        for name, score in pooled_scores(pairs).items():
            named.setdefault(name, {})[variant] = score.value
    explanation = f"the word “dog” {HOSTILE_TOKEN}" if method == METHODS[0] else "words about weather"
    result = NeuronSimulationResults(
        neuron_id=record.neuron_id,
        scored_explanations=[ScoredExplanation(explanation=explanation,
                                               scored_simulation=score_variants(top, rand)["top_and_random"])],
    )
    outcome = UnitOutcome(
        unit=unit, status="ok", explanation=explanation, calibrated=calibrated, scores=named["ev_correlation"],
        named_scores=named, headline="ev_correlation",
        usage=UnitUsage(calls=3, prompt_tokens=1200, completion_tokens=80, cost_usd=0.0), seconds=1.5,
    )
    return outcome, result


def plugin_line(unit: UnitId, record: NeuronRecord) -> tuple[UnitOutcome, ExplanationScores]:
    """What a plugin scorer commits: its own scores and the examples it judged (one answer unreadable)."""
    top, rand = record.most_positive_activation_records[1], record.random_sample[0]
    examples = [JudgedExample(group="top", tokens=list(top.tokens), true_activations=list(top.activations),
                              target=1.0, prediction=0.75),
                JudgedExample(group="random", tokens=list(rand.tokens), true_activations=list(rand.activations),
                              target=0.0, prediction=None)]
    explanation = "mentions of dogs"
    result = ExplanationScores(neuron_id=record.neuron_id, explanation=explanation, scorer="keyword",
                               scores=PLUGIN_SCORES, examples=examples)
    outcome = UnitOutcome(unit=unit, status="ok", explanation=explanation, scores=PLUGIN_SCORES["keyword_hits"],
                          named_scores=PLUGIN_SCORES, headline="keyword_hits", usage=UnitUsage(calls=2))
    return outcome, result


def write_run(path: Path) -> RunStore:
    store = RunStore(path)
    _manifest(store, list(METHODS))
    for seed, unit in enumerate(UNITS):
        record = make_record(unit, seed)
        store.write_record(unit, record)
        for method in METHODS:
            if (method, unit) == FAILED:
                store.append(method, UnitOutcome(unit=unit, status="failed", stage="explain",
                                                 reason="the explainer's answer had no explanation"), None)
                continue
            store.append(method, *simulation_line(unit, record, method, seed))
    return store


def write_scorer_run(path: Path) -> RunStore:
    """Two units, each scored by the simulation scorer and by a plugin scorer."""
    store = RunStore(path)
    _manifest(store, [METHODS[0], PLUGIN_METHOD])
    for seed, unit in enumerate(UNITS[:2]):
        record = make_record(unit, seed)
        store.write_record(unit, record)
        store.append(METHODS[0], *simulation_line(unit, record, METHODS[0], seed))
        store.append(PLUGIN_METHOD, *plugin_line(unit, record))
    return store


def page_data(page_path: Path) -> dict[str, object]:
    """The JSON a built page carries (what its script renders)."""
    text = page_path.read_text(encoding="utf-8")
    match = re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>', text, re.S)
    assert match is not None, f"{page_path} has no embedded data"
    data: dict[str, object] = json.loads(match.group(1))
    return data
