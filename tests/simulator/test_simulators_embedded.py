"""Explain, simulate and score a real published record with the embedded model only (no key, no network).

SmolLM2-135M-Instruct does not follow explanations (its simulations correlate ~0 with the truth), so
these tests prove that every path runs and lines up on a real model, not that the scores are good.
Excerpts are cut short to keep the suite fast on two CPU cores.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest
from generated_logprobs_checks import check_reading_on_a_pattern, check_real_model

from neuroscribe.errors import ParseError
from neuroscribe.explainer import ExplainerInput, create_explainer
from neuroscribe.explainer.token_activation_pair import truncate_around_peak
from neuroscribe.llm import BackendSpec, create_backend
from neuroscribe.llm.base import Backend, CompletionRequest, DistributionRequest
from neuroscribe.records import ActivationRecord, NeuronRecord, SliceParams, random_split, top_split
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.scoring import score_sequences
from neuroscribe.serialization import load_json_file
from neuroscribe.simulator import calibrate, create_simulator
from neuroscribe.simulator.all_at_once import distribution_request

pytestmark = pytest.mark.slow

ADVERSARIAL = ["\t", "\n", " \t\n", "\ufffd", "\xf0\x9f", "😀", "<start>", "unknown", "", " Paris", "10"]


async def test_all_at_once_slots_line_up_on_adversarial_tokens(embedded_backend: Backend) -> None:
    """The distribution read at slot i must equal the one read from a prompt that stops right after slot i:
    a causal model sees the same text there, so any shift in alignment would show up as a mismatch."""
    simulation = await create_simulator("all_at_once", embedded_backend, {"n_worked_examples": 0}).simulate(
        "names of cities", ADVERSARIAL
    )
    assert len(simulation.expected_activations) == len(ADVERSARIAL)
    for row, ev in zip(simulation.distribution_probabilities, simulation.expected_activations, strict=True):
        assert math.isclose(sum(row), 1.0, rel_tol=1e-6) and 0.0 <= ev <= 10.0
    full = distribution_request("names of cities", ADVERSARIAL, 0)
    reads = [i for i, s in enumerate(full.segments) if s.read_distribution]
    cut = [DistributionRequest(segments=full.segments[: i + 1], candidates=full.candidates) for i in reads]
    alone = await asyncio.gather(*(embedded_backend.complete(CompletionRequest(distributions=r)) for r in cut))
    for slot, completion in enumerate(alone):
        total = sum(completion.distributions[-1])
        expected = [p / total for p in completion.distributions[-1]]
        assert simulation.distribution_probabilities[slot] == pytest.approx(expected, abs=2e-3), ADVERSARIAL[slot]


def short(records: list[ActivationRecord], n_tokens: int) -> list[ActivationRecord]:
    return [truncate_around_peak(r, n_tokens) for r in records]


@pytest.fixture(scope="module")
def real_record(real_record_path: Path) -> NeuronRecord:
    return load_json_file(real_record_path, NeuronRecord)


async def test_explain_simulate_and_score_a_real_record_with_every_method(
    embedded_backend: Backend, real_record: NeuronRecord
) -> None:
    params = SliceParams(n_examples_per_split=2)
    train = short(top_split(real_record, "train", params), 12)
    explainer = create_explainer("token_activation_pair", embedded_backend, {"max_tokens": 12, "n_worked_examples": 1})
    explained = await explainer.explain(ExplainerInput(unit=real_record.neuron_id.to_unit(), records=train))
    assert explained.explanations, explained.failures
    explanation = explained.explanations[0]
    assert explanation.strip() and explained.usage.prompt_tokens > 0

    scoring = short(top_split(real_record, "valid", params)[:1] + random_split(real_record, "valid", params)[:1], 3)
    calibration = short(top_split(real_record, "calibration", params)[:1], 3)
    methods = {
        "all_at_once": {},
        "one_at_a_time": {"n_worked_examples": 0},
        "json": {"prompt_format": "completion", "n_worked_examples": 1, "max_tokens_per_token": 6},
    }
    for name, options in methods.items():
        simulator = create_simulator(name, embedded_backend, options)
        try:
            simulations = [await simulator.simulate(explanation, r.tokens) for r in scoring]
        except ParseError as exc:  # the tiny model may not write usable JSON; that must surface, never score as 0
            assert name == "json" and exc.raw_text, exc
            continue
        for simulation, record in zip(simulations, scoring, strict=True):
            assert simulation.tokens == record.tokens
            assert len(simulation.expected_activations) == len(record.tokens)
            assert all(0.0 <= v <= 10.0 for v in simulation.expected_activations)
            assert simulation.activation_scale is ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
        scored = score_sequences([(s, r.activations) for s, r in zip(simulations, scoring, strict=True)])
        assert len(scored.scored_sequence_simulations) == len(scoring)
        predicted = [v for s in simulations for v in s.expected_activations]
        true = [a for r in scoring for a in r.activations]
        if len(set(predicted)) > 1:  # the pooled score is the plain correlation of what was predicted
            assert scored.ev_correlation_score == pytest.approx(float(np.corrcoef(predicted, true)[0, 1]))
        else:  # a constant prediction has no correlation: undefined, never 0
            assert scored.ev_correlation_score is None
        if name != "all_at_once":
            continue  # calibration wraps any simulator the same way; once on the real model is enough

        calibrated = await calibrate(simulator, "linear", explanation, calibration)
        on_scale: SequenceSimulation = await calibrated.simulate(explanation, scoring[0].tokens)
        assert on_scale.activation_scale is ActivationScale.NEURON_ACTIVATIONS
        rescored = score_sequences([(on_scale, scoring[0].activations)])
        assert rescored.rsquared_score is None or rescored.rsquared_score <= 1.0


async def test_generated_logprobs_simulator_in_process_on_the_embedded_model(real_record: NeuronRecord) -> None:
    """Through the client layers (`create_backend`), two 8-token excerpts of a real record, one request each."""

    params = SliceParams(n_examples_per_split=2)
    excerpts = [r.tokens for r in short(top_split(real_record, "valid", params)[:1]
                                        + random_split(real_record, "valid", params)[:1], 8)]
    assert all(len(tokens) == 8 for tokens in excerpts)
    backend = create_backend(BackendSpec(type="hf", model="embedded"))
    try:
        results = await check_real_model(backend, {"n_worked_examples": 1, "max_tokens_per_token": 6},
                                         "names of cities", excerpts)
        await check_reading_on_a_pattern(backend)
        constrained = await check_real_model(backend, {"n_worked_examples": 1, "constrained": True},
                                             "names of cities", excerpts)
    finally:
        await backend.aclose()
    assert len(results) == 2
    assert all(isinstance(r, SequenceSimulation) for r in constrained), constrained
