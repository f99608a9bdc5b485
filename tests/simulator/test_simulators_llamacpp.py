"""Every simulator over a real llama.cpp server (in process, 127.0.0.1, the embedded GGUF).

This is the path for chat servers: one-at-a-time reads generated-token logprobs over HTTP, and the
JSON simulator gets a schema the server enforces. The tiny model's predictions mean nothing; the
test proves they arrive whole and line up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from generated_logprobs_checks import check_reading_on_a_pattern, check_real_model

from neuroscribe.llm.llamacpp import LlamaCppBackend
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator import create_simulator

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]  # where the server's client lives

TOKENS = ["I", " moved", " to", " Paris", "\n"]


@pytest.fixture(scope="session")
async def llamacpp_server() -> AsyncIterator[LlamaCppBackend]:
    """One thread: llama.cpp's spinning workers slow to a crawl when other processes share the cores."""
    backend = LlamaCppBackend(model="embedded", context_length=2048, parallel=2, threads=1)
    yield backend
    await backend.aclose()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("one_at_a_time", {"n_worked_examples": 0}),
        ("json", {}),
        ("all_at_once", {}),
    ],
)
async def test_simulators_over_a_llamacpp_server(llamacpp_server: LlamaCppBackend, name: str,
                                                 options: dict[str, object]) -> None:
    simulation = await create_simulator(name, llamacpp_server, options).simulate("names of cities", TOKENS)
    assert simulation.tokens == TOKENS
    assert len(simulation.expected_activations) == len(TOKENS)
    assert all(0.0 <= v <= 10.0 for v in simulation.expected_activations)
    assert simulation.activation_scale is ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
    if name != "json":
        assert all(sum(row) == pytest.approx(1.0) for row in simulation.distribution_probabilities)


async def test_generated_logprobs_simulator_over_a_llamacpp_server(llamacpp_server: LlamaCppBackend) -> None:
    """Generated-token logprobs over HTTP, two excerpts sharing one request; each read or an honest ParseError."""
    excerpts = [TOKENS, ["She", " flew", " to", " Oslo", "."]]
    results = await check_real_model(llamacpp_server, {"excerpts_per_request": 2, "n_worked_examples": 1},
                                     "names of cities", excerpts)
    assert len(results) == 2
    await check_reading_on_a_pattern(llamacpp_server)


@pytest.mark.parametrize(("prompt_format", "per_request"), [("chat", 2), ("completion", 1)])
async def test_constrained_generated_logprobs_simulate_every_excerpt_over_a_llamacpp_server(
        llamacpp_server: LlamaCppBackend, prompt_format: str, per_request: int) -> None:
    """The server's grammar copies the tokens (JSON schema over HTTP): the tiny model only chooses values.
    (As a completion, the tiny model idles in the whitespace the grammar allows after a first excerpt's
    list instead of starting the next, so that layout asks one excerpt at a time.)"""
    excerpts = [TOKENS, ["She", " said", " \"Oslo\"", "\t", "."]]
    options = {"constrained": True, "excerpts_per_request": per_request, "n_worked_examples": 1,
               "prompt_format": prompt_format}
    results = await check_real_model(llamacpp_server, options, "names of cities", excerpts)
    assert all(isinstance(r, SequenceSimulation) for r in results), results
