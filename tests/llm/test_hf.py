"""The in-process transformers backend on the real embedded model (SmolLM2-135M-Instruct, CPU).

Distributions are checked against a direct forward-pass computation written here independently of
the backend's batching, prefix reuse and tree-attention code.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from neuroscribe.errors import CapabilityError, ConfigError
from neuroscribe.llm import BACKENDS, create_backend, hf_schema
from neuroscribe.llm.base import (
    BackendSpec,
    Capability,
    Completion,
    CompletionRequest,
    DistributionRequest,
    Message,
    PromptSegment,
    SamplingParams,
)
from neuroscribe.llm.hf import HFBackend, HFOptions

CANDIDATES = tuple(str(v) for v in range(11))
HEADER = (
    "We score how strongly a neuron fires on each token, from 0 to 10.\n"
    "Neuron: fires on words about animals.\n"
    "<start>\n"
)


def excerpt_request(tokens: Sequence[str], header: str = HEADER) -> DistributionRequest:
    """Simulator-shaped request: `token<TAB>` then a read `unknown` slot per token."""
    segments = []
    for i, token in enumerate(tokens):
        segments.append(PromptSegment(text=f"{header if i == 0 else chr(10)}{token}\t"))
        segments.append(PromptSegment(text="unknown", read_distribution=True))
    segments.append(PromptSegment(text="\n<end>\n"))
    return DistributionRequest(segments=tuple(segments), candidates=CANDIDATES)


EXCERPTS = (["The", " dog", " barked"], ["A", " cat", " sat", " down"], ["Stocks", " fell"], ["My", " horse"])


async def distributions(backend: HFBackend, request: DistributionRequest) -> list[list[float]]:
    completion = await backend.complete(CompletionRequest(distributions=request))
    return [list(row) for row in completion.distributions]


def max_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True))


@pytest.fixture(scope="module")
def reference(embedded_checkpoint: Path) -> tuple[object, object]:
    """A plain transformers model and tokenizer, loaded apart from the backend."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(embedded_checkpoint, local_files_only=True, dtype=torch.float32)
    return tokenizer, model.eval()


def direct_distributions(reference: tuple[object, object], request: DistributionRequest) -> list[list[float]]:
    """Full forward passes, one per context, with no sharing: the definition the backend must match."""
    tokenizer, model = reference
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731

    def next_token_probs(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)  # type: ignore[operator]

    ids: list[int] = []
    rows = []
    for segment in request.segments:
        if segment.read_distribution:
            first = next_token_probs(ids)
            p_ten = float(first[encode("1")[0]] * next_token_probs([*ids, encode("1")[0]])[encode("0")[0]])
            row = [float(first[encode(c)[0]]) for c in CANDIDATES[:10]] + [p_ten]
            row[1] -= p_ten  # "1" means one not followed by "0"
            rows.append(row)
        ids += encode(segment.text)
    return rows


def test_registered_and_built_from_spec(embedded_checkpoint: Path, embedded_backend: HFBackend) -> None:
    assert BACKENDS.get("hf") is HFBackend
    spec = BackendSpec(type="hf", model=str(embedded_checkpoint), context_length=1024)
    backend = HFBackend.from_spec(spec, HFOptions())
    assert backend.context_length == 1024
    assert backend.name == f"hf:{embedded_checkpoint}"
    assert embedded_backend.name.startswith("hf:embedded-")
    assert embedded_backend.context_length == 8192  # SmolLM2's max_position_embeddings
    assert embedded_backend.capabilities == {
        Capability.TEXT_COMPLETION,
        Capability.CHAT,
        Capability.GENERATED_LOGPROBS,
        Capability.PROMPT_DISTRIBUTIONS,
        Capability.SEED,
        Capability.JSON_SCHEMA,  # xgrammar comes with the dev extra
    }


def test_count_tokens_is_exact(embedded_backend: HFBackend) -> None:
    # SmolLM2 splits digits and keeps tab/newline as their own tokens
    assert embedded_backend.count_tokens("10 \tunknown\n") == 6
    assert embedded_backend.count_tokens("") == 0


async def test_greedy_generation_is_deterministic(embedded_backend: HFBackend) -> None:
    request = CompletionRequest(prompt="The capital of France is", sampling=SamplingParams(max_tokens=8))
    first, second = await embedded_backend.complete(request), await embedded_backend.complete(request)
    assert first.text == second.text
    assert "Paris" in first.text
    assert first.usage.prompt_tokens == embedded_backend.count_tokens("The capital of France is")
    assert first.usage.completion_tokens == 8
    assert first.choices[0].finish_reason == "length"


async def test_batched_greedy_generation_with_shared_prefix_equals_plain(embedded_backend: HFBackend) -> None:
    header = "Generation test. Answer each question with a short phrase.\n\n"
    questions = ["Q: What is the capital of France?\nA:", "Q: What colour is the sky?\nA:", "Q: Name a fruit.\nA:"]
    requests = [
        CompletionRequest(prompt=header + q, sampling=SamplingParams(max_tokens=5), top_logprobs=2) for q in questions
    ]
    before = embedded_backend.stats.forward_passes
    together = await asyncio.gather(*[embedded_backend.complete(r) for r in requests])
    assert embedded_backend.stats.forward_passes - before <= 6  # shared header once + one batched decode
    assert sorted(c.usage.cached_prompt_tokens for c in together)[1] >= embedded_backend.count_tokens(header) - 2
    alone = [await embedded_backend.complete(r) for r in requests]  # each reuses the cached header
    assert all(c.usage.cached_prompt_tokens >= embedded_backend.count_tokens(header) - 2 for c in alone)
    plain_backend = HFBackend("embedded", prefix_reuse=False)
    plain = [await plain_backend.complete(r) for r in requests]
    await plain_backend.aclose()
    for batched, single, reference in zip(together, alone, plain, strict=True):
        assert batched.text == single.text == reference.text
        assert batched.usage.completion_tokens == reference.usage.completion_tokens
        for a, b in zip(batched.choices[0].logprobs or (), reference.choices[0].logprobs or (), strict=True):
            assert a.token == b.token and abs(a.logprob - b.logprob) < 1e-4
        assert len(batched.choices[0].logprobs or ()) == len(reference.choices[0].logprobs or ()) > 0


async def test_seeded_sampling_repeats_and_seeds_differ(embedded_backend: HFBackend) -> None:
    def request(seed: int) -> CompletionRequest:
        sampling = SamplingParams(temperature=1.0, max_tokens=8, seed=seed, n=2)
        return CompletionRequest(prompt="Once upon a time", sampling=sampling)

    a, b, c = [await embedded_backend.complete(request(seed)) for seed in (1, 1, 2)]
    assert [x.text for x in a.choices] == [x.text for x in b.choices]
    assert len(a.choices) == 2
    assert {x.text for x in a.choices} != {x.text for x in c.choices}


async def test_stop_string_ends_the_text(embedded_backend: HFBackend) -> None:
    request = CompletionRequest(
        prompt="Count: 1, 2, 3, 4,", sampling=SamplingParams(max_tokens=24, stop=(",",)), top_logprobs=2
    )
    completion = await embedded_backend.complete(request)
    assert "," not in completion.text
    assert completion.choices[0].finish_reason == "stop"
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert "".join(entry.token for entry in logprobs) == completion.text


async def test_top_logprobs_are_the_model_distribution(embedded_backend: HFBackend) -> None:
    request = CompletionRequest(
        prompt="The capital of France is", sampling=SamplingParams(max_tokens=4), top_logprobs=5
    )
    completion = await embedded_backend.complete(request)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and len(logprobs) == 4
    for entry in logprobs:
        assert len(entry.top) == 5
        assert entry.top[0] == (entry.token, entry.logprob)  # greedy picks the most likely
        values = [value for _, value in entry.top]
        assert values == sorted(values, reverse=True) and values[0] <= 0.0
        assert sum(pow(2.718281828459045, v) for v in values) <= 1.0 + 1e-6


async def test_chat_goes_through_the_chat_template(embedded_backend: HFBackend, reference: tuple) -> None:
    tokenizer, _ = reference
    messages = (Message(role="system", content="Answer briefly."), Message(role="user", content="Name a color."))
    completion = await embedded_backend.complete(
        CompletionRequest(messages=messages, sampling=SamplingParams(max_tokens=10))
    )
    templated = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True
    )
    assert templated.endswith("<|im_start|>assistant\n")
    assert completion.usage.prompt_tokens == embedded_backend.count_tokens(templated)
    assert completion.text.strip()


PAIRS_SCHEMA = json.dumps({"type": "array", "minItems": 2, "maxItems": 2, "prefixItems": [
    {"type": "array", "minItems": 2, "maxItems": 2, "prefixItems": [{"const": token}, {"enum": list(range(11))}]}
    for token in ("Paris", ' "quoted"\n')]})


async def test_json_schema_holds_the_reply_and_logprobs_stay_the_models(embedded_backend: HFBackend) -> None:
    """The grammar decides what is written; the log-probabilities returned are the unmasked model's: the first
    position's alternatives equal those of the same prompt without a schema."""
    prompt = "Rate each word from 0 to 10:"
    constrained, plain, stopped = await asyncio.gather(
        embedded_backend.complete(CompletionRequest(prompt=prompt, sampling=SamplingParams(max_tokens=40),
                                                    top_logprobs=5, json_schema=PAIRS_SCHEMA)),
        embedded_backend.complete(CompletionRequest(prompt=prompt, sampling=SamplingParams(max_tokens=1),
                                                    top_logprobs=5)),
        # a stop string that ends a row before its grammar does must not fail the batch
        embedded_backend.complete(CompletionRequest(prompt=prompt, sampling=SamplingParams(max_tokens=40, stop=("P",)),
                                                    json_schema=PAIRS_SCHEMA)),
    )
    answer = json.loads(constrained.text)
    assert [token for token, _ in answer] == ["Paris", ' "quoted"\n'] and all(0 <= v <= 10 for _, v in answer)
    assert constrained.choices[0].finish_reason == "stop"
    logprobs, reference = constrained.choices[0].logprobs, plain.choices[0].logprobs
    assert logprobs is not None and reference is not None
    assert "".join(entry.token for entry in logprobs) == constrained.text
    assert logprobs[0].top == reference[0].top
    assert any(math.isfinite(value) and not constrained.text.startswith(token) for token, value in logprobs[0].top)
    assert stopped.text == '[["'


async def test_json_schema_refusals(embedded_backend: HFBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="json_schema cannot be compiled"):
        await embedded_backend.complete(CompletionRequest(prompt="{", json_schema='{"type": "no such type"}'))
    monkeypatch.setattr(hf_schema, "available", lambda: False)
    assert Capability.JSON_SCHEMA not in embedded_backend.capabilities
    with pytest.raises(CapabilityError, match=r"neuroscribe\[schema\]"):
        await embedded_backend.complete(CompletionRequest(prompt="{", json_schema='{"type": "object"}'))


async def test_distributions_match_direct_forward_passes(embedded_backend: HFBackend, reference: tuple) -> None:
    request = excerpt_request(EXCERPTS[0])
    got = await distributions(embedded_backend, request)
    assert len(got) == len(EXCERPTS[0])
    assert max_difference(got, direct_distributions(reference, request)) < 1e-5
    assert all(0.0 < sum(row) <= 1.0 + 1e-6 for row in got)
    assert any(row[10] > 0 for row in got)  # "10" is two tokens here and still gets its (chain-rule) mass


async def test_batched_and_shared_prefix_equal_independent_passes(embedded_backend: HFBackend) -> None:
    independent = HFBackend("embedded", prefix_reuse=False, max_batch_size=1)  # shares the loaded weights
    header = "Batch test. " + HEADER  # no cached request shares its first tokens
    requests = [excerpt_request(tokens, header) for tokens in EXCERPTS]
    before = embedded_backend.stats
    batched = await asyncio.gather(*[embedded_backend.complete(CompletionRequest(distributions=r)) for r in requests])
    after = embedded_backend.stats
    alone = [await distributions(independent, r) for r in requests]
    for completion, expected in zip(batched, alone, strict=True):
        assert max_difference(completion.distributions, expected) < 1e-5
    # one pass for the shared header, one batched pass for the four excerpts
    assert after.forward_passes - before.forward_passes == 2
    assert after.computed_tokens - before.computed_tokens < independent.stats.computed_tokens
    cached = [c.usage.cached_prompt_tokens for c in batched]
    assert sorted(cached)[0] == 0  # one request pays for the shared header, the other three reuse it
    assert sorted(cached)[1:] == [max(cached)] * 3 and max(cached) >= embedded_backend.count_tokens(header) - 2
    await independent.aclose()


@pytest.mark.parametrize("query_length", [1, 7])
def test_cpu_grouped_attention_equals_transformers_sdpa(reference: tuple, query_length: int) -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from neuroscribe.llm.hf import _cpu_grouped_sdpa

    _, model = reference
    attention = model.model.layers[0].self_attn  # type: ignore[attr-defined]
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads  # type: ignore[attr-defined]
    assert heads > kv_heads  # grouped: the case the function exists for
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, heads, query_length, 64, generator=generator)
    key, value = (torch.randn(2, kv_heads, 12, 64, generator=generator) for _ in range(2))
    allowed = torch.rand(2, 1, query_length, 12, generator=generator) > 0.4
    allowed[..., 0] = True
    additive = torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    for mask in (allowed, additive, None):
        ours, _ = _cpu_grouped_sdpa(attention, query, key, value, mask, scaling=0.125)
        stock, _ = sdpa_attention_forward(attention, query, key, value, mask, scaling=0.125)
        torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-6)


async def test_client_sets_no_timeout_on_in_process_work(embedded_backend: HFBackend) -> None:
    """Giving up on an in-process request would not stop its computation, and a retry would repeat it."""
    from neuroscribe.llm.base import TransportSettings
    from neuroscribe.llm.client import LLMClient

    client = LLMClient(embedded_backend, transport=TransportSettings(timeout_s=0.001, max_retries=0))
    assert client.in_process
    completion = await client.complete(CompletionRequest(distributions=excerpt_request(["A", " slow", " pass"])))
    assert len(completion.distributions) == 3
    assert (client.ledger.totals.calls, client.ledger.totals.failures) == (1, 0)


async def test_prefix_cache_serves_later_requests(embedded_backend: HFBackend) -> None:
    header = "Cache test. " + HEADER  # no cached request shares its first tokens
    first = await embedded_backend.complete(CompletionRequest(distributions=excerpt_request(["Rain"], header)))
    later_request = excerpt_request(["Snow", " fell"], header)
    later = await embedded_backend.complete(CompletionRequest(distributions=later_request))
    assert first.usage.cached_prompt_tokens == 0
    assert later.usage.cached_prompt_tokens >= embedded_backend.count_tokens(header) - 2
    independent = HFBackend("embedded", prefix_reuse=False)
    assert max_difference(later.distributions, await distributions(independent, later_request)) < 1e-5
    await independent.aclose()


async def test_factory_wraps_it_in_the_client_layers(embedded_backend: HFBackend, tmp_path: Path) -> None:
    client = create_backend(BackendSpec(type="hf", model="embedded"), cache_dir=tmp_path / "responses")
    request = CompletionRequest(distributions=excerpt_request(["Fish"]))
    first, again = await client.complete(request), await client.complete(request)
    assert isinstance(client.backend, HFBackend) and client.name == embedded_backend.name
    assert not first.cached and again.cached and again.distributions == first.distributions
    totals = client.ledger.totals
    assert (totals.calls, totals.cache_hits, totals.prompt_tokens) == (1, 1, first.usage.prompt_tokens)
    await client.aclose()


async def test_distribution_request_without_marks_or_context(embedded_backend: HFBackend) -> None:
    empty = DistributionRequest(segments=(PromptSegment(text="hello"),), candidates=CANDIDATES)
    completion = await embedded_backend.complete(CompletionRequest(distributions=empty))
    assert completion.distributions == () and completion.usage.prompt_tokens == 1
    leading = DistributionRequest(segments=(PromptSegment(text="1", read_distribution=True),), candidates=CANDIDATES)
    good = excerpt_request(["Hi"])
    # gathered into one batch: the malformed request fails alone, its neighbour is answered
    bad_outcome, good_outcome = await asyncio.gather(
        embedded_backend.complete(CompletionRequest(distributions=leading)),
        embedded_backend.complete(CompletionRequest(distributions=good)),
        return_exceptions=True,
    )
    assert isinstance(bad_outcome, ConfigError) and "no text before it" in str(bad_outcome)
    assert isinstance(good_outcome, Completion) and len(good_outcome.distributions) == 1


@pytest.mark.parametrize("option", ["max_batch_size", "max_batch_tokens", "min_shared_prefix"])
def test_batching_options_below_one_are_refused(embedded_checkpoint: Path, option: str) -> None:
    with pytest.raises(ConfigError, match=rf"hf backend: {option} must be >= 1, got 0"):
        HFBackend("embedded", **{option: 0})
    with pytest.raises(ConfigError, match=rf"\[backends\] hf options: {option} must be >= 1, got 0"):
        create_backend(BackendSpec(type="hf"), options={option: 0})


async def test_options_from_a_config_are_in_effect(embedded_backend: HFBackend) -> None:
    """The same four requests, gathered at once: one batch by default, two of two with max_batch_size=2
    (three passes: the shared prefix once, then one pass per batch). Answers and name are unchanged."""
    requests = [CompletionRequest(distributions=excerpt_request(tokens)) for tokens in EXCERPTS]
    answers, passes = [], []
    for options in ({"batch_window_s": 0.2}, {"batch_window_s": 0.2, "max_batch_size": 2}):
        client = create_backend(BackendSpec(type="hf", model="embedded"), options=options)
        assert isinstance(client.backend, HFBackend) and client.name == embedded_backend.name
        assert client.backend.options == HFOptions(**options)  # type: ignore[arg-type]
        completions = await asyncio.gather(*(client.backend.complete(r) for r in requests))
        answers.append([c.distributions for c in completions])
        passes.append(client.backend.stats.forward_passes)
        await client.aclose()
    assert passes == [2, 3]
    for default, small in zip(*answers, strict=True):
        assert max_difference(default, small) < 1e-5


async def test_a_half_precision_dtype_has_its_own_name(embedded_backend: HFBackend) -> None:
    half = HFBackend("embedded", dtype="bfloat16")
    assert half.name == f"{embedded_backend.name}[dtype=bfloat16]"  # answers differ: separate cache entries
    request = excerpt_request(EXCERPTS[0])
    close = max_difference(await distributions(half, request), await distributions(embedded_backend, request))
    assert 0 < close < 0.02
    await half.aclose()


def test_missing_local_path_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match="does not exist"):
        HFBackend(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match=r"no config\.json"):
        HFBackend(str(tmp_path))
    with pytest.raises(ConfigError, match="neither an existing directory nor"):
        HFBackend("not a model id!")
    assert time.monotonic() - started < 5


def test_unknown_hub_id_fails_fast_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    started = time.monotonic()
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        HFBackend("neuroscribe-tests/no-such-model")
    assert time.monotonic() - started < 10
