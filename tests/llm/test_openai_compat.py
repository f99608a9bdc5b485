"""The 'openai' backend driven over HTTP against a real llama.cpp server, plus the clear errors (missing key,
unreachable server, unknown model, missing capability) and the OpenAI legacy echo format."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import time
from pathlib import Path

import pytest

from loopback_server import MODEL, USAGE, LoopbackServer, Reply, echo_top
from neuroscribe.errors import BackendError, CapabilityError, ConfigError
from neuroscribe.llm import (
    BackendSpec,
    Capability,
    CompletionRequest,
    DistributionRequest,
    Message,
    PromptSegment,
    SamplingParams,
    TransportSettings,
    create_backend,
)
from neuroscribe.llm.llamacpp import LlamaCppBackend, served_model_name
from neuroscribe.llm.openai_compat import OpenAIBackend

pytestmark = pytest.mark.asyncio(loop_scope="session")  # where the session's llama.cpp client lives

CANDIDATES = tuple(str(i) for i in range(11))
SCALE_PROMPT = (
    PromptSegment(text="Rate each word from 0 to 10.\ncat\t3\ndog\t7\nbird\t"),
    PromptSegment(text="5", read_distribution=True),
    PromptSegment(text="\nfish\t"),
    PromptSegment(text="unknown", read_distribution=True),
    PromptSegment(text="\n"),
)


def openai_on(server: LlamaCppBackend, **options: object) -> OpenAIBackend:
    return OpenAIBackend(model=served_model_name(server._key.model_path), base_url=server.base_url, **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_chat_returns_top_k_logprobs_sorted(llamacpp: LlamaCppBackend) -> None:
    backend = openai_on(llamacpp)
    completion = await backend.complete(
        CompletionRequest(
            messages=(Message(role="user", content="Name a colour."),),
            sampling=SamplingParams(max_tokens=4),
            top_logprobs=3,
        )
    )
    assert completion.text
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and len(logprobs) == completion.usage.completion_tokens
    for token in logprobs:
        assert len(token.top) == 3
        assert [lp for _, lp in token.top] == sorted((lp for _, lp in token.top), reverse=True)
        assert token.logprob <= 0.0
    assert completion.usage.prompt_tokens > 0


async def test_text_completion_is_deterministic_at_temperature_zero(llamacpp: LlamaCppBackend) -> None:
    backend = openai_on(llamacpp)
    request = CompletionRequest(prompt="One, two, three,", sampling=SamplingParams(max_tokens=6, stop=("\n",)))
    first, second = await backend.complete(request), await backend.complete(request)
    assert first.text == second.text and first.text.strip()
    assert first.choices[0].finish_reason in ("length", "stop")


async def test_json_schema_output_parses(llamacpp: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
        "required": ["score"],
        "additionalProperties": False,
    }
    completion = await llamacpp.complete(
        CompletionRequest(
            messages=(Message(role="user", content="Give a score as JSON."),),
            sampling=SamplingParams(max_tokens=32),
            json_schema=json.dumps(schema),
        )
    )
    assert isinstance(json.loads(completion.text)["score"], int)


async def test_per_position_distributions_follow_multi_token_candidates(llamacpp: LlamaCppBackend) -> None:
    """SmolLM2 splits "10" into "1", "0": its probability must be P("1") * P("0" | ..."1"), read separately."""
    backend = openai_on(llamacpp, prompt_logprobs="per_position")
    completion = await backend.complete(
        CompletionRequest(distributions=DistributionRequest(segments=SCALE_PROMPT, candidates=CANDIDATES))
    )
    assert len(completion.distributions) == 2
    for row in completion.distributions:
        assert len(row) == len(CANDIDATES)
        assert all(0.0 <= p <= 1.0 for p in row) and sum(row) <= 1.0 + 1e-6
        assert sum(row) > 0.05  # the model does put mass on digits after a tab in a 0-10 table

    prefix = "".join(s.text for s in SCALE_PROMPT[:3])
    first = await backend.complete(
        CompletionRequest(prompt=prefix, sampling=SamplingParams(max_tokens=1), top_logprobs=20)
    )
    second = await backend.complete(
        CompletionRequest(prompt=prefix + "1", sampling=SamplingParams(max_tokens=1), top_logprobs=20)
    )
    assert first.choices[0].logprobs is not None and second.choices[0].logprobs is not None
    p_one = dict(first.choices[0].logprobs[0].top)["1"]
    p_zero_after_one = dict(second.choices[0].logprobs[0].top)["0"]
    assert completion.distributions[1][10] == pytest.approx(math.exp(p_one + p_zero_after_one), rel=1e-5)
    # "1" means "1" not followed by "0": the mass that continues into "10" is not counted twice
    assert completion.distributions[1][1] == pytest.approx(math.exp(p_one) - math.exp(p_one + p_zero_after_one))


async def test_auto_mode_falls_back_to_per_position_on_llamacpp(llamacpp: LlamaCppBackend) -> None:
    explicit = await openai_on(llamacpp, prompt_logprobs="per_position").complete(
        CompletionRequest(distributions=DistributionRequest(segments=SCALE_PROMPT, candidates=CANDIDATES))
    )
    auto_backend = openai_on(llamacpp)
    auto = await auto_backend.complete(
        CompletionRequest(distributions=DistributionRequest(segments=SCALE_PROMPT, candidates=CANDIDATES))
    )
    assert auto_backend._prompt_logprobs == "per_position"  # llama.cpp ignores echo
    for got, want in zip(auto.distributions, explicit.distributions, strict=True):
        assert got == pytest.approx(want, abs=1e-6)


async def test_echo_mode_on_a_server_without_echo_is_a_capability_error(llamacpp: LlamaCppBackend) -> None:
    backend = openai_on(llamacpp, prompt_logprobs="echo")
    with pytest.raises(CapabilityError, match=r"prompt_distributions.*ignored echo.*Instead: use the 'hf' backend"):
        await backend.complete(
            CompletionRequest(distributions=DistributionRequest(segments=SCALE_PROMPT, candidates=CANDIDATES))
        )


async def test_echo_format_reads_every_marked_position_in_one_request(loopback: LoopbackServer) -> None:
    """The OpenAI legacy echo format (tokens, top_logprobs, text_offset), as vLLM also returns it. The server's
    alternatives differ at every position, so reading a neighbouring position would give other numbers."""
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url)
    segments = (  # the server's tokens: "a", "\t", "1" (position 2), "\n", "b", "\t", "unknown" (position 6)
        PromptSegment(text="a\t"),
        PromptSegment(text="1", read_distribution=True),
        PromptSegment(text="\nb\t"),
        PromptSegment(text="unknown", read_distribution=True),
    )
    candidates = ("1", "2", "3", "6", "7", "10")
    completion = await backend.complete(
        CompletionRequest(distributions=DistributionRequest(segments=segments, candidates=candidates))
    )
    assert backend._prompt_logprobs == "echo"

    def expected(position: int) -> tuple[float, ...]:
        top = echo_top(position)
        return tuple(math.exp(top[c]) if c in top else 0.0 for c in candidates)

    assert expected(2) == (0.0, 0.5, 0.25, 0.0, 0.0, 0.0) and expected(6) == (0.0, 0.0, 0.0, 0.5, 0.25, 0.0)
    assert completion.distributions == (pytest.approx(expected(2)), pytest.approx(expected(6)))
    posts = [p for p in loopback.posts() if p.path.endswith("/completions")]
    assert len(posts) == 1 and posts[0].body["echo"] is True


async def test_unknown_model_lists_what_the_server_offers(llamacpp: LlamaCppBackend) -> None:
    backend = OpenAIBackend(model="gpt-17-ultra", base_url=llamacpp.base_url)
    request = CompletionRequest(prompt="hi", sampling=SamplingParams(max_tokens=1))
    for _ in range(2):  # the verdict sticks: llama.cpp itself would answer any model name
        with pytest.raises(BackendError, match=r"unknown model 'gpt-17-ultra'.*offers: SmolLM2-135M-Instruct") as info:
            await backend.complete(request)
        assert not info.value.retryable


async def test_concurrent_first_requests_share_one_model_check(loopback: LoopbackServer) -> None:
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url)
    await asyncio.gather(*(backend.complete(CompletionRequest(prompt=f"{i}")) for i in range(5)))
    assert len(loopback.posts()) == 5
    assert loopback.model_listings == 1


async def test_unreachable_server_fails_fast_and_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = create_backend(BackendSpec(type="openai", model="m", base_url=url), transport=TransportSettings())
    started = time.monotonic()
    with pytest.raises(BackendError, match=rf"cannot reach {url}.*Is the server running") as info:
        await client.complete(CompletionRequest(prompt="hi"))
    assert time.monotonic() - started < 5.0
    assert not info.value.retryable
    assert client.ledger.totals.failures == 1


async def test_chat_only_server_says_text_completion_is_missing(loopback: LoopbackServer) -> None:
    loopback.missing_paths = ("/v1/completions",)
    client = create_backend(BackendSpec(type="openai", model=MODEL, base_url=loopback.base_url))
    with pytest.raises(CapabilityError, match=r"text_completion.*404.*Instead: send chat messages instead"):
        await client.complete(CompletionRequest(prompt="hi"))
    assert Capability.TEXT_COMPLETION not in client.capabilities
    sent = len(loopback.posts())
    with pytest.raises(CapabilityError, match="text_completion"):
        await client.complete(CompletionRequest(prompt="again"))
    assert len(loopback.posts()) == sent  # known now: refused before any request
    chat = await client.complete(CompletionRequest(messages=(Message(role="user", content="hi"),)))
    assert chat.text == "ok"


async def test_rejected_key_names_the_variable(loopback: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUROSCRIBE_TEST_KEY", "wrong")
    loopback.script(Reply(status=401, body={"error": {"message": "Incorrect API key provided"}}))
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url, api_key_env="NEUROSCRIBE_TEST_KEY")
    with pytest.raises(BackendError, match=r"refused the API key \(401: Incorrect API key.*NEUROSCRIBE_TEST_KEY"):
        await backend.complete(CompletionRequest(prompt="hi"))
    assert loopback.posts()[0].body["model"] == MODEL


async def test_sampling_parameters_reach_the_server(loopback: LoopbackServer) -> None:
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url)
    await backend.complete(
        CompletionRequest(
            messages=(Message(role="system", content="s"), Message(role="user", content="u")),
            sampling=SamplingParams(temperature=0.7, max_tokens=33, top_p=0.9, n=2, seed=5, stop=("\n",)),
            top_logprobs=4,
            json_schema='{"type": "object"}',
        )
    )
    body = loopback.posts()[-1].body
    assert body["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["n"], body["seed"]) == (0.7, 33, 0.9, 2, 5)
    assert body["stop"] == ["\n"] and body["logprobs"] is True and body["top_logprobs"] == 4
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}


async def test_a_server_that_cannot_list_models_names_an_unknown_one_on_404(loopback: LoopbackServer) -> None:
    """Some servers have no /models; the 404 of the first real request then says the model is unknown."""
    loopback.script(Reply(status=404, body={"error": {"message": "The model `gpt-x` does not exist"}}))
    backend = OpenAIBackend(model="gpt-x", base_url=loopback.base_url, validate_model=False)
    with pytest.raises(BackendError, match=r"unknown model 'gpt-x'.*404: The model `gpt-x` does not exist") as info:
        await backend.complete(CompletionRequest(messages=(Message(role="user", content="hi"),)))
    assert info.value.status_code == 404 and not info.value.retryable


async def test_a_rejected_schema_marks_json_schema_missing(loopback: LoopbackServer) -> None:
    loopback.script(Reply(status=400, body={"error": {"message": "response_format is not supported by this model"}}))
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url)
    request = CompletionRequest(messages=(Message(role="user", content="hi"),), json_schema='{"type": "object"}')
    with pytest.raises(CapabilityError, match=r"json_schema.*400: response_format is not supported"):
        await backend.complete(request)
    assert Capability.JSON_SCHEMA not in backend.capabilities


async def test_a_marked_segment_cannot_open_the_prompt(loopback: LoopbackServer) -> None:
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url)
    segments = (PromptSegment(text=""), PromptSegment(text="1", read_distribution=True))
    request = CompletionRequest(distributions=DistributionRequest(segments=segments, candidates=("1",)))
    with pytest.raises(ConfigError, match=r"marked segment 1 \('1'\) opens the prompt"):
        await backend.complete(request)
    assert loopback.posts() == []


async def test_echo_offsets_that_do_not_line_up_are_refused(loopback: LoopbackServer) -> None:
    """A server counting text_offset in raw byte-level tokens drifts after non-ASCII text: refuse, never misread."""
    tokens = ["é", "\t", "1", "\n"]
    skewed = {
        "model": MODEL,
        "usage": USAGE,
        "choices": [
            {
                "index": 0,
                "text": "é\t1\n",
                "finish_reason": "length",
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": [None, -1.0, -1.0, -1.0],
                    "top_logprobs": [None, {"1": -1.0}, {"1": -1.0}, {"1": -1.0}],
                    "text_offset": [0, 2, 3, 4],  # "é" counted as two bytes
                },
            }
        ],
    }
    loopback.script(Reply(body=skewed))
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url, prompt_logprobs="echo")
    segments = (PromptSegment(text="é\t"), PromptSegment(text="1", read_distribution=True), PromptSegment(text="\n"))
    request = CompletionRequest(distributions=DistributionRequest(segments=segments, candidates=("1",)))
    with pytest.raises(
        BackendError, match=r"echoed token at character 2 is '\\t', not the start.*text_offset does not count"
    ):
        await backend.complete(request)


async def test_per_position_keeps_a_tokens_own_mass_where_ten_is_one_token(loopback: LoopbackServer) -> None:
    """Under a tokenizer with a token "10" (Llama 3's), P("10") is that token's and P("1") the token "1"'s: the
    mass of "10" never went through "1", so none is taken from it (as the by-token-id mode reads it)."""
    top = {"1": math.log(0.3), "10": math.log(0.2), "0": math.log(0.1)}
    answer = {"model": MODEL, "usage": USAGE, "choices": [{"index": 0, "text": "1", "finish_reason": "length",
              "logprobs": {"tokens": ["1"], "token_logprobs": [top["1"]], "top_logprobs": [top]}}]}
    loopback.script(Reply(body=answer))
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url, prompt_logprobs="per_position")
    segments = (PromptSegment(text="cat\t"), PromptSegment(text="1", read_distribution=True))
    completion = await backend.complete(
        CompletionRequest(distributions=DistributionRequest(segments=segments, candidates=("0", "1", "10")))
    )
    assert completion.distributions[0] == pytest.approx((0.1, 0.3, 0.2))
    assert len(loopback.posts()) == 1  # every candidate is one token: no follow-up


# -- vLLM's token-id dialect on the loopback server (the real vLLM is in test_vllm.py) ---------------------------

TOKEN_ID_SEGMENTS = (  # the server's ids: BOS, "a", "\t", "1" (position 3), "\n", "b", "\t", "unknown" (position 7)
    PromptSegment(text="a\t"),
    PromptSegment(text="1", read_distribution=True),
    PromptSegment(text="\nb\t"),
    PromptSegment(text="unknown", read_distribution=True),
)
TOKEN_ID_CANDIDATES = ("1", "2", "3", "6", "7", "10")
TOKEN_ID_REQUEST = CompletionRequest(
    distributions=DistributionRequest(segments=TOKEN_ID_SEGMENTS, candidates=TOKEN_ID_CANDIDATES)
)


async def test_prompt_logprobs_mode_reads_every_marked_position_by_token_id() -> None:
    """Auto mode finds /tokenize and prompt_logprobs, sends the prompt as ids (BOS first) and reads each marked
    position's alternatives by token id; the alternatives differ at every position, so an off-by-one fails."""
    with LoopbackServer(token_ids=True) as server:
        backend = OpenAIBackend(model=MODEL, base_url=server.base_url)
        completion = await backend.complete(TOKEN_ID_REQUEST)
        again = await backend.complete(TOKEN_ID_REQUEST)
        posts = server.posts()
    assert backend._prompt_logprobs == "prompt_logprobs"
    assert completion.distributions == again.distributions == (
        pytest.approx((math.exp(-9.0), 0.0, 0.5, 0.0, 0.0, 0.0)),  # position 3: "3" 0.5, "4" 0.25, the prompt's "1"
        pytest.approx((0.0, 0.0, 0.0, 0.0, 0.5, 0.0)),  # position 7: "7" 0.5, "8" 0.25
    )
    completions = [p.body for p in posts if p.path.endswith("/completions")]
    assert len(completions) == 2  # one pass per request; the tokenizations are remembered
    assert completions[0]["prompt_logprobs"] == 20 and len(completions[0]["prompt"]) == 8
    assert completions[0]["prompt"][0] == 0  # the server's BOS, as its /tokenize puts it before text
    assert len([p for p in posts if p.path == "/tokenize"]) == len({*TOKEN_ID_CANDIDATES, "a\t", "1", "\nb\t",
                                                                    "unknown", "x"}) + 1  # + "x" with specials
    assert completion.usage.prompt_tokens == 8


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("few_alternatives", r"3 alternatives at prompt position 3 \(marked segment '1'\), 20 were asked for"),
        ("null_entries", r"the entry at prompt position 3 is None; only the first token may have none\. "
                         r"Expected the log-probability of token \d+ and its top 20 alternatives"),
        ("retokenized", r"returned 5 entries for a prompt of 8 token ids; the server did not read the prompt as the "
                        r"ids sent"),
        ("shifted", r"the entry at prompt position 1 does not hold the prompt's token \d+ \(it holds .*\); the "
                    r"server's tokenization differs from the prompt's"),
        ("ignored", r"cannot do prompt_distributions \(.*ignored prompt_logprobs: its answer has no "
                    r"choices\[0\]\.prompt_logprobs, expected one entry per prompt token \(8\)"),
    ],
)
async def test_a_bad_prompt_logprobs_endpoint_is_an_error_naming_server_and_position(fault: str, message: str) -> None:
    with LoopbackServer(token_ids=True, fault=fault) as server:  # type: ignore[arg-type]
        backend = OpenAIBackend(model=MODEL, base_url=server.base_url, prompt_logprobs="prompt_logprobs")
        with pytest.raises(BackendError, match=message) as raised:
            await backend.complete(TOKEN_ID_REQUEST)
    assert server.base_url in str(raised.value)


async def test_a_local_tokenizer_that_is_not_the_servers_is_refused(embedded_checkpoint: Path) -> None:
    """Ids from SmolLM2's tokenizer mean other tokens to this server: the decoded token at the marked position
    gives it away."""
    with LoopbackServer(token_ids=True) as server:
        backend = OpenAIBackend(model=MODEL, base_url=server.base_url, prompt_logprobs="prompt_logprobs",
                                tokenizer=str(embedded_checkpoint))
        with pytest.raises(BackendError, match=r"reads prompt position 2 as '<\d+>', but the marked segment there "
                                               r"is '1'; the tokenizer that built the prompt \(.*SmolLM2.*\) is not "
                                               r"the server's"):
            await backend.complete(TOKEN_ID_REQUEST)


async def test_auto_mode_falls_back_to_echo_when_prompt_logprobs_is_ignored() -> None:
    with LoopbackServer(token_ids=True, fault="ignored") as server:
        backend = OpenAIBackend(model=MODEL, base_url=server.base_url)
        await backend.complete(TOKEN_ID_REQUEST)
        await backend.complete(TOKEN_ID_REQUEST)
        posts = [p.body for p in server.posts() if p.path.endswith("/completions")]
    assert backend._prompt_logprobs == "echo"
    assert [("prompt_logprobs" in body, bool(body.get("echo"))) for body in posts] == [
        (True, False), (False, True), (False, True)  # probed once, then echo only
    ]


async def test_concurrent_first_requests_share_one_probe(loopback: LoopbackServer) -> None:
    backend = OpenAIBackend(model=MODEL, base_url=loopback.base_url)  # no /tokenize: probes fall through to echo
    await asyncio.gather(*(backend.complete(TOKEN_ID_REQUEST) for _ in range(4)))
    assert len([p for p in loopback.posts() if p.path == "/tokenize"]) == 1


@pytest.mark.parametrize("path", ["/chat/completions", "/models"])
async def test_a_body_that_is_not_json_is_a_backend_error_naming_the_server(path: str) -> None:
    with LoopbackServer() as server:
        backend = OpenAIBackend(model=MODEL, base_url=server.base_url)
        if path == "/models":
            server.models_raw = b'{"object": "list", "data": [{"id": '
        else:
            server.script(Reply(raw=b'{"choices": [{"message": {"content": "hi"'))
        expected = re.escape(f"{server.base_url}{path} answered with a body that is not JSON")
        with pytest.raises(BackendError, match=expected) as info:
            await backend.complete(CompletionRequest(messages=(Message(role="user", content="hi"),)))
        assert info.value.retryable


async def test_a_slow_model_check_does_not_eat_into_the_first_requests_timeout() -> None:
    with LoopbackServer(models_delay_s=0.8, delay_s=0.5) as server:
        client = create_backend(BackendSpec(type="openai", model=MODEL, base_url=server.base_url),
                                transport=TransportSettings(timeout_s=1.0, max_retries=0))
        answer = await client.complete(CompletionRequest(messages=(Message(role="user", content="hi"),)))
        assert answer.choices and server.model_listings == 1  # 0.8 s + 0.5 s > 1 s, yet nothing timed out
        await client.aclose()
