"""The lexical simulator: the explanation's key terms against the tokens, no model."""

from __future__ import annotations

from neuroscribe.llm.base import CallEstimate
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.results import ActivationScale
from neuroscribe.simulator import SIMULATORS, create_simulator
from neuroscribe.simulator.lexical import key_terms, lexical_matches


def never_called(request: object) -> object:
    raise AssertionError("the lexical simulator asked the backend")


async def test_a_token_the_explanation_names_scores_10_and_the_others_0() -> None:
    tokens = [" The", " Carousel", " turned", ",", " carousels", " turn", " again", "."]
    simulator = create_simulator("lexical", ScriptedBackend(never_called), {})  # type: ignore[arg-type]
    simulation = await simulator.simulate("mentions of carousels and things that turn", tokens)
    assert simulation.tokens == tokens
    assert simulation.expected_activations == [0.0, 10.0, 10.0, 0.0, 10.0, 10.0, 0.0, 0.0]
    assert simulation.activation_scale is ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS


def test_quoted_words_count_whatever_they_are_and_explanation_vocabulary_never_does() -> None:
    assert key_terms('the word "the" in phrases related to sports') == {"the", "sports"}
    assert key_terms("the neuron's favourite tokens: 'of' and `e.g.`") == {"favourite", "of", "e.g"}
    assert lexical_matches('the word "the"', [" the", " The", " them", " word"]) == [True, True, False, False]


def test_inflected_forms_share_a_variant_but_short_stems_do_not() -> None:
    assert lexical_matches("times and plays", [" time", " played", " play", " timer"]) == [True, True, True, False]
    assert lexical_matches("class", [" classes", " Class's", " clash"]) == [True, True, False]
    assert lexical_matches("bus", [" bu", " buses", " b"]) == [False, True, False]
    assert lexical_matches("anything", ["", " ", "\n", "-"]) == [False] * 4


def test_it_is_registered_costs_nothing_and_orders_tokens_only() -> None:
    cls = SIMULATORS.get("lexical")
    assert cls.ordinal_scale and not SIMULATORS.get("all_at_once").ordinal_scale
    assert cls.estimate(cls.options_type(), 64) == CallEstimate()
