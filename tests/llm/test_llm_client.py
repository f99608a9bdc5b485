"""The client layers over real HTTP: retries on injected 429/500/timeouts, no retry on other 4xx, the
response cache, shared concurrency limits, and cost accounting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from loopback_server import MODEL, USAGE, LoopbackServer, Reply
from neuroscribe.errors import BackendError, CapabilityError, ConfigError
from neuroscribe.llm import (
    Backend,
    BackendSpec,
    Capability,
    CompletionRequest,
    Message,
    SamplingParams,
    TransportSettings,
    create_backend,
)
from neuroscribe.llm.client import LLMClient
from neuroscribe.llm.openai_compat import OpenAIBackend
from neuroscribe.llm.usage import UsageLedger

FAST_RETRIES = TransportSettings(timeout_s=5.0, max_retries=2, backoff_initial_s=0.05, backoff_max_s=0.2)
HELLO = CompletionRequest(messages=(Message(role="user", content="hello"),))


def client_for(server: LoopbackServer, transport: TransportSettings = FAST_RETRIES, **options: object) -> LLMClient:
    spec = BackendSpec(type="openai", model=MODEL, base_url=server.base_url, **options)  # type: ignore[arg-type]
    return create_backend(spec, transport=transport)


def test_the_client_is_itself_a_backend(loopback: LoopbackServer) -> None:
    client = client_for(loopback)
    assert isinstance(client, Backend)
    assert client.name == f"openai:{loopback.base_url}:{MODEL}" and Capability.CHAT in client.capabilities


async def test_429_is_retried_after_the_servers_retry_after(loopback: LoopbackServer) -> None:
    loopback.script(Reply(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "1"}))
    client = client_for(loopback)
    completion = await client.complete(HELLO)
    assert completion.text == "ok"
    first, second = loopback.posts()
    assert second.at - first.at >= 1.0  # Retry-After wins over the 0.05 s backoff
    (entry,) = client.ledger.entries
    assert entry.ok and entry.tries == 2


async def test_5xx_is_retried_with_backoff(loopback: LoopbackServer) -> None:
    loopback.script(Reply(status=500), Reply(status=503))
    client = client_for(loopback)
    assert (await client.complete(HELLO)).text == "ok"
    assert len(loopback.posts()) == 3
    assert client.ledger.totals.calls == 3 and client.ledger.totals.failures == 0


async def test_other_4xx_is_never_retried(loopback: LoopbackServer) -> None:
    loopback.script(Reply(status=400, body={"error": {"message": "max_tokens is too large"}}))
    client = client_for(loopback)
    with pytest.raises(BackendError, match=r"rejected the request \(400\): max_tokens is too large") as info:
        await client.complete(HELLO)
    assert not info.value.retryable and info.value.status_code == 400
    assert len(loopback.posts()) == 1


async def test_persistent_5xx_fails_after_the_last_try_with_the_reason(loopback: LoopbackServer) -> None:
    loopback.script(*[Reply(status=502, body={"error": {"message": "bad gateway"}})] * 3)
    client = client_for(loopback)
    with pytest.raises(BackendError, match=r"failed with 502: bad gateway \(gave up after 3 tries\)") as info:
        await client.complete(HELLO)
    assert info.value.retryable and info.value.status_code == 502
    totals = client.ledger.totals
    assert (totals.requests, totals.calls, totals.failures, totals.cost_usd) == (1, 3, 1, 0.0)


async def test_a_stalled_server_times_out_and_is_retried(loopback: LoopbackServer) -> None:
    loopback.script(Reply(delay_s=3.0), Reply(delay_s=3.0))
    transport = TransportSettings(timeout_s=0.3, max_retries=2, backoff_initial_s=0.05, backoff_max_s=0.1)
    client = client_for(loopback, transport)
    started = time.monotonic()
    assert (await client.complete(HELLO)).text == "ok"  # third try gets the prompt answer
    assert time.monotonic() - started < 5.0  # not the 6 s two stalls would take
    assert len(loopback.posts()) == 3

    loopback.script(*[Reply(delay_s=3.0)] * 3)
    with pytest.raises(BackendError, match=r"no answer within 0.3 s.*gave up after 3 tries") as info:
        await client.complete(CompletionRequest(prompt="stall"))
    assert info.value.retryable


async def test_missing_capability_fails_before_any_request(loopback: LoopbackServer) -> None:
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url, capabilities=frozenset({Capability.CHAT}))
    client = LLMClient(backend, transport=FAST_RETRIES)
    with pytest.raises(CapabilityError, match=r"cannot do generated_logprobs.*Instead: use a server that returns"):
        await client.complete(CompletionRequest(messages=HELLO.messages, top_logprobs=5))
    assert loopback.posts() == []


async def test_cache_hit_makes_no_call_and_costs_nothing(loopback: LoopbackServer, tmp_path: Path) -> None:
    spec = BackendSpec(
        type="openai",
        model=MODEL,
        base_url=loopback.base_url,
        price_per_million_prompt_tokens=2.0,
        price_per_million_completion_tokens=8.0,
    )
    ledger = UsageLedger()
    client = create_backend(spec, transport=FAST_RETRIES, cache_dir=tmp_path, ledger=ledger)
    first = await client.complete(HELLO)
    again = await client.complete(HELLO)
    other = await client.complete(CompletionRequest(messages=HELLO.messages, sampling=SamplingParams(max_tokens=9)))
    assert not first.cached and again.cached and not other.cached
    assert again.choices == first.choices and again.usage == first.usage
    assert len(loopback.posts()) == 2
    expected_cost = 2 * (USAGE["prompt_tokens"] * 2.0 + USAGE["completion_tokens"] * 8.0) / 1e6
    totals = ledger.totals
    assert (totals.requests, totals.calls, totals.cache_hits) == (3, 2, 1)
    assert totals.prompt_tokens == 2 * USAGE["prompt_tokens"]
    assert totals.cost_usd == pytest.approx(expected_cost)
    await client.aclose()

    reopened = create_backend(spec, transport=FAST_RETRIES, cache_dir=tmp_path)  # a later run, same cache
    assert (await reopened.complete(HELLO)).cached
    assert len(loopback.posts()) == 2


async def test_unseeded_sampling_is_never_cached(loopback: LoopbackServer, tmp_path: Path) -> None:
    client = create_backend(
        BackendSpec(type="openai", model=MODEL, base_url=loopback.base_url), transport=FAST_RETRIES, cache_dir=tmp_path
    )
    sampled = CompletionRequest(messages=HELLO.messages, sampling=SamplingParams(temperature=1.0, seed=None))
    await client.complete(sampled)
    assert not (await client.complete(sampled)).cached
    assert len(loopback.posts()) == 2


async def test_concurrency_limit_is_shared_by_every_client_of_a_backend() -> None:
    with LoopbackServer(delay_s=0.2) as server:
        transport = TransportSettings(max_concurrency=3)
        clients = [client_for(server, transport) for _ in range(3)]
        requests = [CompletionRequest(prompt=f"p{i}") for i in range(12)]
        await asyncio.gather(*(clients[i % 3].complete(r) for i, r in enumerate(requests)))
        assert server.max_in_flight == 3
        assert len(server.posts()) == 12


async def test_usage_is_tracked_per_block_across_concurrent_tasks(loopback: LoopbackServer) -> None:
    client = client_for(loopback)

    async def unit(calls: int) -> int:
        with client.ledger.track() as tracker:
            await asyncio.gather(*(client.complete(CompletionRequest(prompt=f"{calls}-{i}")) for i in range(calls)))
        return tracker.totals.calls

    assert await asyncio.gather(unit(1), unit(3), unit(2)) == [1, 3, 2]
    assert client.ledger.totals.calls == 6
    assert client.ledger.totals_by_backend()[client.name].completion_tokens == 6 * USAGE["completion_tokens"]


async def test_transport_settings_never_change_the_cache_key(loopback: LoopbackServer, tmp_path: Path) -> None:
    spec = BackendSpec(type="openai", model=MODEL, base_url=loopback.base_url)
    await create_backend(spec, transport=FAST_RETRIES, cache_dir=tmp_path).complete(HELLO)
    patient = TransportSettings(timeout_s=600.0, max_retries=9, max_concurrency=1)
    assert (await create_backend(spec, transport=patient, cache_dir=tmp_path).complete(HELLO)).cached
    assert len(loopback.posts()) == 1


async def test_missing_usage_is_estimated_not_zero(loopback: LoopbackServer, caplog: pytest.LogCaptureFixture) -> None:
    answer = {"choices": [{"index": 0, "text": " forty two", "finish_reason": "stop"}], "model": MODEL}
    loopback.script(Reply(body=answer))
    spec = BackendSpec(type="openai", model=MODEL, base_url=loopback.base_url, price_per_million_prompt_tokens=1.0)
    client = create_backend(spec, transport=FAST_RETRIES)
    completion = await client.complete(CompletionRequest(prompt="x" * 400))
    assert completion.usage.prompt_tokens > 50 and completion.usage.completion_tokens >= 1
    assert client.ledger.totals.cost_usd > 0
    assert "returns no usage" in caplog.text


def test_invalid_transport_settings_are_config_errors(loopback: LoopbackServer) -> None:
    with pytest.raises(ConfigError, match=r"timeout_s must be > 0 seconds, got 0.*max_retries must be >= 0"):
        client_for(loopback, TransportSettings(timeout_s=0, max_retries=-1))


def test_distribution_candidates_must_tokenize_to_distinct_non_empty_ids() -> None:
    from neuroscribe.llm.base import candidate_token_ids

    assert candidate_token_ids(["0", "10"], [(15,), (16, 15)]) == [(15,), (16, 15)]
    with pytest.raises(ConfigError, match="candidate '' is empty after tokenization"):
        candidate_token_ids(["0", ""], [(15,), ()])
    with pytest.raises(ConfigError, match="candidates '1' and ' 1' tokenize identically"):
        candidate_token_ids(["1", " 1"], [(16,), (16,)])
