"""The 'llamacpp' backend: llama.cpp's server in process on 127.0.0.1 with the embedded GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuroscribe.errors import BackendError
from neuroscribe.llm import (
    BackendSpec,
    Capability,
    CompletionRequest,
    DistributionRequest,
    Message,
    PromptSegment,
    SamplingParams,
    create_backend,
)
from neuroscribe.llm import llamacpp as llamacpp_module
from neuroscribe.llm.cache import ResponseCache
from neuroscribe.llm.client import LLMClient
from neuroscribe.llm.llamacpp import _SERVERS, LlamaCppBackend, _ServerKey, _SharedServer, default_threads

pytestmark = pytest.mark.asyncio(loop_scope="session")

RUN = (
    CompletionRequest(messages=(Message(role="user", content="Describe a neuron in five words."),)),
    CompletionRequest(prompt="Tokens that fire:", sampling=SamplingParams(max_tokens=5), top_logprobs=2),
    CompletionRequest(
        distributions=DistributionRequest(
            segments=(PromptSegment(text="a\t2\nb\t"), PromptSegment(text="unknown", read_distribution=True)),
            candidates=("0", "1", "2", "10"),
        )
    ),
)


async def test_server_is_local_and_reports_what_it_can_do(llamacpp: LlamaCppBackend) -> None:
    assert llamacpp.base_url.startswith("http://127.0.0.1:") and llamacpp.base_url.endswith("/v1")
    assert llamacpp.name == "llamacpp:embedded"
    assert llamacpp.capabilities == frozenset(Capability)
    assert llamacpp.context_length == 2048


async def test_options_from_a_config_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel and threads are part of the server's key, distribution_top_k of the name; checked with a
    stand-in for the server start, since every distinct key would start another llama.cpp server."""
    started: list[_ServerKey] = []

    def start(key: _ServerKey) -> _SharedServer:
        started.append(key)
        return _SharedServer(object(), "http://127.0.0.1:9")

    monkeypatch.setattr(llamacpp_module, "_start_server", start)
    spec = BackendSpec(type="llamacpp", model="embedded", context_length=512)
    tuned = create_backend(spec, options={"parallel": 3, "threads": 2, "distribution_top_k": 7})
    plain = create_backend(spec)
    assert [(k.context_length, k.parallel, k.threads) for k in started] == [(512, 3, 2), (512, 2, default_threads())]
    assert isinstance(tuned.backend, LlamaCppBackend) and tuned.backend._client.distribution_top_k == 7
    assert (tuned.name, plain.name) == ("llamacpp:embedded[distribution_top_k=7]", "llamacpp:embedded")
    await tuned.aclose()
    await plain.aclose()
    assert not set(started) & set(_SERVERS)


async def test_count_tokens_uses_the_models_own_tokenizer(llamacpp: LlamaCppBackend) -> None:
    assert llamacpp.count_tokens("10\tunknown\n") == 5  # SmolLM2 splits digits: "1", "0", "\t", "unknown", "\n"
    assert llamacpp.count_tokens("") == 0


async def test_a_warm_rerun_makes_zero_model_calls(llamacpp: LlamaCppBackend, tmp_path: Path) -> None:
    cold = LLMClient(llamacpp, cache=ResponseCache(tmp_path))
    first = [await cold.complete(r) for r in RUN]
    assert cold.ledger.totals.calls == len(RUN) and cold.ledger.totals.cache_hits == 0
    cold.cache.close()  # type: ignore[union-attr]

    warm = LLMClient(llamacpp, cache=ResponseCache(tmp_path))
    second = [await warm.complete(r) for r in RUN]
    assert warm.ledger.totals.calls == 0 and warm.ledger.totals.cache_hits == len(RUN)
    for a, b in zip(first, second, strict=True):
        assert (a.choices, a.distributions, a.usage) == (b.choices, b.distributions, b.usage) and b.cached


async def test_structured_text_completion_uses_llamacpps_schema_field(llamacpp: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10}},
        "required": ["n"],
        "additionalProperties": False,
    }
    completion = await llamacpp.complete(
        CompletionRequest(
            prompt="A number as JSON:", sampling=SamplingParams(max_tokens=32), json_schema=json.dumps(schema)
        )
    )
    assert isinstance(json.loads(completion.text)["n"], int)


@pytest.mark.slow
async def test_backends_for_one_model_share_one_server() -> None:
    spec = BackendSpec(type="llamacpp", model="embedded")
    first, second = create_backend(spec), create_backend(spec)
    assert isinstance(first.backend, LlamaCppBackend) and isinstance(second.backend, LlamaCppBackend)
    assert first.backend.base_url == second.backend.base_url
    reply = await second.complete(CompletionRequest(prompt="Hello", sampling=SamplingParams(max_tokens=2)))
    assert reply.usage.completion_tokens >= 1
    servers = len(_SERVERS)
    await first.aclose()
    assert len(_SERVERS) == servers  # still used by the second
    await second.aclose()
    assert len(_SERVERS) == servers - 1
    with pytest.raises(BackendError, match="is closed"):
        await second.backend.complete(CompletionRequest(prompt="again"))
