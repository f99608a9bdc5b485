"""The embedding simulator with the real all-MiniLM-L6-v2, and its fixed map onto 0-10."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.scoring import correlation
from neuroscribe.simulator import SIMULATORS, Simulator, create_simulator
from neuroscribe.simulator.embedding import WINDOW, sentence_model, to_scale, token_cosines

CAROUSEL = Path(__file__).parents[1] / "data" / "refdata" / "paper" / "carousel_neurons.json"
SENTENCE = [" I", " ate", " a", " banana", " and", " then", " drove", " the", " truck", " home", "."]


def simulator(**options: object) -> Simulator:
    def never_called(request: object) -> object:
        raise AssertionError("the embedding simulator asked the backend")

    return create_simulator("embedding", ScriptedBackend(never_called), options)  # type: ignore[arg-type]


@given(st.floats(-1, 1), st.floats(-1, 1))
def test_the_map_onto_0_to_10_is_monotone_and_bounded(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0.0 <= to_scale(low) <= to_scale(high) <= 10.0
    assert to_scale(-1.0) == to_scale(0.0) == 0.0 and to_scale(1.0) == 10.0


def test_the_token_the_explanation_describes_is_the_closest_in_context() -> None:
    fruit, vehicles = token_cosines("fruit", SENTENCE), token_cosines("vehicles and driving", SENTENCE)
    banana, truck = SENTENCE.index(" banana"), SENTENCE.index(" truck")
    assert max(range(len(SENTENCE)), key=fruit.__getitem__) == banana
    assert fruit[banana] > fruit[truck] and vehicles[truck] > vehicles[banana]
    assert sentence_model() is sentence_model()  # loaded once per process


def test_blanks_read_as_nothing_and_long_excerpts_are_read_in_windows() -> None:
    assert token_cosines("fruit", ["\n", " ", "", " apple", "\t"])[:3] == [0.0, 0.0, 0.0]
    long = [" word"] * (2 * WINDOW) + [" banana"]
    cosines = token_cosines("fruit", long)
    assert len(cosines) == len(long) and all(c != 0.0 for c in cosines)
    assert cosines[-1] == max(cosines)


async def test_values_are_the_mapped_cosines_and_a_named_token_is_10() -> None:
    plain = await simulator(lexical=False).simulate("a truck", SENTENCE)
    assert plain.expected_activations == [to_scale(c) for c in token_cosines("a truck", SENTENCE)]
    assert max(plain.expected_activations) < 10.0
    combined = await simulator().simulate("a truck", SENTENCE)
    named = SENTENCE.index(" truck")
    assert combined.expected_activations[named] == 10.0
    assert [v for i, v in enumerate(combined.expected_activations) if i != named] == [
        v for i, v in enumerate(plain.expected_activations) if i != named]
    assert (await simulator().simulate("a truck", [])).expected_activations == []
    assert SIMULATORS.get("embedding").ordinal_scale


@pytest.mark.slow
@pytest.mark.parametrize("lexical", [True, False])
async def test_on_the_carousel_neurons_it_follows_explanations_better_than_a_mismatched_one(lexical: bool) -> None:
    """Per neuron, Pearson r of the values with the true activations pooled over its 4 scoring excerpts;
    the control reads the next neuron's explanation. Measured: 0.24 vs 0.04 (0.15 vs 0.05 without lexical)."""
    neurons = json.loads(CAROUSEL.read_text(encoding="utf-8"))
    chosen = simulator(lexical=lexical)

    async def r(explanation: str, neuron: dict[str, Any]) -> float:
        excerpts = [s["actual"] for s in neuron["score_sequences"]]
        simulations = [await chosen.simulate(explanation, [a["token"] for a in e]) for e in excerpts]
        value = correlation([a["strength"] for e in excerpts for a in e],
                            [v for s in simulations for v in s.expected_activations]).value
        assert value is not None
        return value

    ours = [await r(n["explanation"], n) for n in neurons]
    control = [await r(neurons[(i + 1) % len(neurons)]["explanation"], n) for i, n in enumerate(neurons)]
    assert sum(ours) / len(ours) > sum(control) / len(control) + 0.05
    assert sum(a > b for a, b in zip(ours, control, strict=True)) >= len(neurons) // 2 + 1
