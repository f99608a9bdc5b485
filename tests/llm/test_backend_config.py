"""Building backends from specs and options: keys from the environment (never needed at import), options checked
against each backend's options dataclass, clear config errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopback_server import MODEL, LoopbackServer
from neuroscribe.errors import CapabilityError, ConfigError
from neuroscribe.llm import (
    BACKENDS,
    BackendSpec,
    Capability,
    CompletionRequest,
    DistributionRequest,
    Message,
    PromptSegment,
    SamplingParams,
    backend_options_type,
    create_backend,
)
from neuroscribe.llm.hf import HFOptions
from neuroscribe.llm.llamacpp import LlamaCppOptions
from neuroscribe.llm.openai_compat import OpenAIBackend, OpenAIOptions
from neuroscribe.llm.scripted import ScriptedBackend, ScriptedOptions
from neuroscribe.registry import build_options


def test_missing_key_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEUROSCRIBE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"NEUROSCRIBE_TEST_KEY is not set.*export NEUROSCRIBE_TEST_KEY"):
        OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="NEUROSCRIBE_TEST_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"OPENAI_API_KEY is not set.*the OpenAI API"):
        create_backend(BackendSpec(type="openai", model="gpt-4o-mini"))


def test_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUROSCRIBE_TEST_KEY", "sk-test")
    backend = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="NEUROSCRIBE_TEST_KEY")
    assert backend._client.api_key == "sk-test"
    local = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1")  # local servers need no key
    assert local.name == "openai:http://127.0.0.1:9/v1:m"


def test_import_is_lazy_and_never_needs_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    code = (
        "import sys, neuroscribe.llm\n"
        "heavy = lambda: [m for m in ('openai', 'xllamacpp', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy(), heavy()\n"
        "for name in ('hf', 'openai', 'llamacpp', 'scripted'):\n"
        "    neuroscribe.llm.backend_options_type(name)\n"
        "assert not heavy(), heavy()  # checking a config's backend options stays fast\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_openai_api_chat_models_do_not_claim_text_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    chat = OpenAIBackend(model="gpt-4o-mini")
    assert Capability.CHAT in chat.capabilities
    assert Capability.TEXT_COMPLETION not in chat.capabilities
    assert Capability.PROMPT_DISTRIBUTIONS not in chat.capabilities
    legacy = OpenAIBackend(model="gpt-3.5-turbo-instruct")
    assert Capability.PROMPT_DISTRIBUTIONS in legacy.capabilities


def test_unknown_backend_type_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown backend 'opneai'.*Did you mean 'openai'"):
        create_backend(BackendSpec(type="opneai", model="m"))


def test_llamacpp_needs_a_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs a local \.gguf file or 'embedded'.*no such file"):
        create_backend(BackendSpec(type="llamacpp", model=str(tmp_path / "missing.gguf")))
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"x")
    with pytest.raises(ConfigError, match="use the 'hf' backend for Hugging Face model ids"):
        create_backend(BackendSpec(type="llamacpp", model=str(not_gguf)))


def test_openai_api_chat_asks_for_max_completion_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    request = CompletionRequest(messages=(Message(role="user", content="hi"),), sampling=SamplingParams(max_tokens=7))
    api_body = OpenAIBackend(model="gpt-4o-mini")._sampling_body(request)
    assert api_body["max_completion_tokens"] == 7 and "max_tokens" not in api_body and "n" not in api_body
    server_body = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1")._sampling_body(request)
    assert server_body["max_tokens"] == 7


def test_each_backend_type_has_its_options_dataclass() -> None:
    expected = {"hf": HFOptions, "openai": OpenAIOptions, "llamacpp": LlamaCppOptions, "scripted": ScriptedOptions}
    assert {name: backend_options_type(name) for name in expected} == expected
    assert BACKENDS.get("scripted") is ScriptedBackend
    with pytest.raises(ConfigError, match=r"unknown backend 'llamacp'.*Did you mean 'llamacpp'"):
        backend_options_type("llamacp")


@pytest.mark.parametrize(
    ("backend", "typo", "closest"),
    [
        ("hf", "max_batch_sise", "max_batch_size"),
        ("openai", "distribution_topk", "distribution_top_k"),
        ("llamacpp", "thread", "threads"),
        ("scripted", "responer", "responder"),
    ],
)
def test_a_misspelt_option_names_the_closest_valid_one(backend: str, typo: str, closest: str) -> None:
    where = rf"\[backends\] {backend} options: unknown option '{typo}'\. Did you mean '{closest}'\?"
    with pytest.raises(ConfigError, match=where):
        create_backend(BackendSpec(type=backend), options={typo: 1})  # refused before any model or server


@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        ("hf", {"max_batch_size": "2"}, r"option 'max_batch_size' must be int, got '2'"),
        ("hf", {"prefix_reuse": "yes"}, r"option 'prefix_reuse' must be bool"),
        ("hf", {"batch_window_s": -0.1}, r"batch_window_s must be >= 0, got -0.1"),
        ("hf", {"dtype": "float64"}, r"option 'dtype' must be"),
        ("openai", {"distribution_top_k": 2.5}, r"option 'distribution_top_k' must be int"),
        ("openai", {"distribution_top_k": 0}, r"distribution_top_k must be >= 1, got 0"),
        ("openai", {"prompt_logprobs": "echos"}, r"option 'prompt_logprobs' must be"),
        ("llamacpp", {"threads": True}, r"option 'threads' must be"),
        ("llamacpp", {"parallel": 0}, r"parallel must be >= 1, got 0"),
        ("scripted", {"responder": "no_colon"}, r"responder must be 'package.module:function'"),
        ("scripted", {"responder": "m:f", "capabilities": ["chatt"]}, r"capabilities: unknown capability 'chatt'"),
    ],
)
def test_wrong_types_and_values_are_refused_naming_the_option(
    backend: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=rf"\[backends\] {backend} options: {message}"):
        build_options(backend_options_type(backend), options, f"[backends] {backend} options")


def test_options_are_validated_from_python_too() -> None:
    with pytest.raises(ValueError, match="distribution_top_k must be >= 1"):
        OpenAIOptions(distribution_top_k=0)
    with pytest.raises(ConfigError, match="openai backend: distribution_top_k must be >= 1, got 0"):
        OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", distribution_top_k=0)


async def test_openai_options_reach_the_server(loopback: LoopbackServer) -> None:
    spec = BackendSpec(type="openai", model=MODEL, base_url=loopback.base_url)
    assert create_backend(spec).name == f"openai:{loopback.base_url}:{MODEL}"  # default keys are unchanged
    client = create_backend(
        spec, options={"distribution_top_k": 5, "prompt_logprobs": "echo", "text_schema_field": "json_schema"}
    )
    assert client.name == f"openai:{loopback.base_url}:{MODEL}[prompt_logprobs=echo,distribution_top_k=5]"
    segments = (PromptSegment(text="a\t"), PromptSegment(text="1", read_distribution=True))
    await client.complete(CompletionRequest(distributions=DistributionRequest(segments=segments, candidates=("1",))))
    await client.complete(CompletionRequest(prompt="n:", json_schema='{"type": "object"}'))
    distribution, text = loopback.posts()
    assert (distribution.body["logprobs"], distribution.body["echo"]) == (5, True)
    assert text.body["json_schema"] == {"type": "object"} and "response_format" not in text.body
    await client.aclose()


def test_the_openai_api_reads_the_five_alternatives_it_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its completions endpoint returns at most 5 per token: that is the default there, said in the name (so in the
    run's manifest), and more is refused when the backend is built, not on every simulation."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    legacy = OpenAIBackend(model="gpt-3.5-turbo-instruct", validate_model=False)
    assert legacy.distribution_top_k == 5 and legacy.name == "openai:gpt-3.5-turbo-instruct[distribution_top_k=5]"
    with pytest.raises(ConfigError, match=r"distribution_top_k = 6, but the OpenAI API returns at most 5"):
        OpenAIBackend(model="gpt-3.5-turbo-instruct", distribution_top_k=6)
    chat = OpenAIBackend(model="gpt-4o-mini", distribution_top_k=20)  # no prompt distributions there: no limit
    assert chat.distribution_top_k == 20 and chat.name == "openai:gpt-4o-mini"


async def test_a_scripted_backend_from_a_config_answers() -> None:
    client = create_backend(BackendSpec(type="scripted"), options={"responder": "scripted_responders:echo"})
    answer = await client.complete(CompletionRequest(prompt="hello"))
    assert answer.text == "HELLO"
    backend = client.backend
    assert isinstance(backend, ScriptedBackend) and backend.requests == [CompletionRequest(prompt="hello")]
    assert client.name == "scripted:scripted_responders:echo" and backend.capabilities == frozenset(Capability)

    chat_only = create_backend(
        BackendSpec(type="scripted", context_length=100),
        options={"responder": "scripted_responders:echo_later", "capabilities": ["chat"], "in_process": True},
    )
    assert (chat_only.context_length, chat_only.in_process) == (100, True)
    reply = await chat_only.complete(CompletionRequest(messages=(Message(role="user", content="hi"),)))
    assert reply.text == "HI"
    with pytest.raises(CapabilityError, match="text_completion"):
        await chat_only.complete(CompletionRequest(prompt="hi"))


@pytest.mark.parametrize(
    ("responder", "message"),
    [
        ("no_such_module:echo", r"responder 'no_such_module:echo': cannot import module 'no_such_module'"),
        ("scripted_responders:ehco", r"responder 'scripted_responders:ehco': .* no attribute 'ehco'.*'echo'"),
        ("scripted_responders:NOT_A_FUNCTION", r"NOT_A_FUNCTION' is not callable \(it is of type 'int'\)"),
    ],
)
def test_a_bad_responder_is_a_config_error_naming_it(responder: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_backend(BackendSpec(type="scripted"), options={"responder": responder})
