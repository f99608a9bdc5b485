"""The one small interface between the pipeline and every language-model backend.

A request holds everything that changes the answer (so it is the cache key); transport settings
(timeouts, retries, concurrency) live in `TransportSettings` and never enter a cache key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from neuroscribe.errors import ConfigError


class Capability(StrEnum):
    """What a backend can do; a request needing a missing capability fails with CapabilityError."""

    TEXT_COMPLETION = "text_completion"
    CHAT = "chat"
    GENERATED_LOGPROBS = "generated_logprobs"
    """Top-k alternatives with log-probabilities for each generated token."""
    PROMPT_DISTRIBUTIONS = "prompt_distributions"
    """Probabilities of candidate tokens at chosen prompt positions, in one pass (all-at-once simulation)."""
    JSON_SCHEMA = "json_schema"
    SEED = "seed"


@dataclass(frozen=True, kw_only=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    temperature: float = 0.0
    """0 means greedy decoding."""
    max_tokens: int = 256
    """Upper bound on generated tokens per choice."""
    top_p: float = 1.0
    n: int = 1
    """Number of independent choices."""
    seed: int | None = 0
    """Passed to backends that support seeding; part of the cache key."""
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PromptSegment:
    """A piece of a raw-text prompt, tokenized on its own so token positions are known exactly.

    With `read_distribution=True` the backend reports, for the position just before this segment's
    first token, the probability of each candidate (i.e. what the model predicts *in place of* this
    segment). This is how the all-at-once simulator reads a distribution at every `unknown` slot
    without re-tokenizing text to find positions.
    """

    text: str
    read_distribution: bool = False


@dataclass(frozen=True, kw_only=True)
class DistributionRequest:
    """Ask for candidate-token probabilities at marked prompt positions (no generation)."""

    segments: tuple[PromptSegment, ...]
    candidates: tuple[str, ...]
    """E.g. ("0", ..., "10"). Each candidate's probability is the probability of its whole token
    sequence; candidates longer than one token are computed by the backend (see its docs)."""


@dataclass(frozen=True, kw_only=True)
class CompletionRequest:
    """A generation request (text or chat) or a prompt-distribution request; exactly one of
    `prompt`, `messages`, `distributions` is set."""

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    distributions: DistributionRequest | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    top_logprobs: int = 0
    """If > 0, return this many alternatives per generated token."""
    json_schema: str | None = None
    """A JSON schema (as canonical JSON text, so the request stays hashable) for structured output."""

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.prompt, self.messages, self.distributions))
        if given != 1:
            raise ValueError("a CompletionRequest needs exactly one of prompt, messages, distributions")

    @property
    def kind(self) -> Literal["text", "chat", "distributions"]:
        if self.prompt is not None:
            return "text"
        return "chat" if self.messages is not None else "distributions"

    def fingerprint(self) -> str:
        """A stable hash of everything in the request (the backend and model are added by the cache)."""
        payload = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    """(alternative token, its logprob), most likely first."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Prompt tokens whose computation was reused (a shared prefix), where the backend knows."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
        )


@dataclass(frozen=True)
class Choice:
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class Completion:
    """A backend's answer. For a distribution request, `distributions[i][c]` is the probability of
    candidate c at the i-th marked segment, in segment order; `choices` is then empty."""

    choices: tuple[Choice, ...] = ()
    distributions: tuple[tuple[float, ...], ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    cached: bool = False
    """True when served from the response cache (no model call was made)."""

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""


@runtime_checkable
class Backend(Protocol):
    """A language model. Implementations are registered in `neuroscribe.llm.BACKENDS`."""

    @property
    def name(self) -> str:
        """Stable identity of backend + model (enters cache keys), e.g. 'hf:HuggingFaceTB/SmolLM2-135M-Instruct'."""
        ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    @property
    def context_length(self) -> int:
        """Maximum prompt + generated tokens."""
        ...

    @property
    def in_process(self) -> bool:
        """Whether requests are computed in this process. A timeout cannot stop such a computation, only
        abandon it while it goes on, and a retry would then compute it twice: clients set none."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes for this model (exact where the tokenizer is known, else an estimate)."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...


def candidate_token_ids(candidates: Sequence[str], encoded: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Each distribution candidate's token ids (each tokenized on its own), checked: none empty, and no two
    the same, since those could not be told apart."""
    seen: dict[tuple[int, ...], str] = {}
    for candidate, ids in zip(candidates, encoded, strict=True):
        if not ids:
            raise ConfigError(f"distribution candidate {candidate!r} is empty after tokenization")
        if ids in seen:
            raise ConfigError(f"distribution candidates {seen[ids]!r} and {candidate!r} tokenize identically")
        seen[ids] = candidate
    return list(seen)


@runtime_checkable
class Preparable(Protocol):
    """A backend with one-time work before its first answer (e.g. a server's model check): the client runs
    it under its own timeout, so that work never eats into a request's."""

    async def prepare(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class TransportSettings:
    """How to talk to a backend; none of this changes an answer, so none of it enters a cache key."""

    timeout_s: float = 120.0
    """Per request, seconds; not applied to in-process backends (see `Backend.in_process`)."""
    max_retries: int = 4
    """Retries after the first try, for retryable failures only (429, 5xx, connection, timeout)."""
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_concurrency: int = 8
    """Requests in flight at once, shared by everything using the same client."""
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """Which model to talk to and how to reach it; configs name backends with this."""

    type: str = "hf"
    """Registry name of the backend: 'hf' (in-process transformers), 'openai' (any OpenAI-compatible
    server), 'llamacpp' (llama.cpp server in process)."""
    model: str = "embedded"
    """Model id or local path; 'embedded' is the bundled SmolLM2-135M-Instruct."""
    base_url: str | None = None
    """For 'openai': the server's /v1 URL; None means the OpenAI API."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    context_length: int | None = None
    """Override the model's context length (tokens)."""
    price_per_million_prompt_tokens: float = 0.0
    """USD, for cost estimates."""
    price_per_million_completion_tokens: float = 0.0
    """USD, for cost estimates."""


PromptFormat = Literal["auto", "chat", "completion"]
"""How a component renders its prompt: 'chat' messages, one 'completion' text, or 'auto' (chat when
the backend has it)."""


def resolve_format(requested: PromptFormat, backend: Backend) -> Literal["chat", "completion"]:
    if requested != "auto":
        return requested
    return "chat" if Capability.CHAT in backend.capabilities else "completion"


MESSAGE_OVERHEAD_TOKENS = 8
"""Role markers and separators a chat template adds per message (an upper estimate)."""


def prompt_tokens(backend: Backend, request: CompletionRequest) -> int:
    """The tokens a request's prompt takes, for fitting it into the context before it is sent."""
    if request.messages is not None:
        return sum(backend.count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)
    return backend.count_tokens(request.prompt or "")


@dataclass(frozen=True)
class CallEstimate:
    """Model calls and tokens a component expects to spend (for `neuroscribe run --dry-run`)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: CallEstimate) -> CallEstimate:
        return CallEstimate(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                            self.completion_tokens + other.completion_tokens)

    def __mul__(self, times: int) -> CallEstimate:
        return CallEstimate(self.calls * times, self.prompt_tokens * times, self.completion_tokens * times)
