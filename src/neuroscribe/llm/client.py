"""The layers every backend gets, once: response cache -> limits -> retries -> usage ledger.

`LLMClient` is itself a `Backend`, so explainers and simulators never know whether they talk to a bare
backend or to a cached, rate-limited, retrying one. A request is checked against the backend's
capabilities before anything else, so a missing capability fails at once with a message that says what
to use instead, never after minutes of retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import sqlite3
import time
from dataclasses import replace

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from neuroscribe.errors import BackendError, CapabilityError, ConfigError, NeuroscribeError
from neuroscribe.llm.base import Backend, Capability, Completion, CompletionRequest, Preparable, TransportSettings
from neuroscribe.llm.cache import ResponseCache, is_cacheable
from neuroscribe.llm.limits import Limiter, RateLimitedError, shared_limiter
from neuroscribe.llm.usage import Pricing, UsageEntry, UsageLedger

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 600.0
"""A Retry-After longer than this (seconds) is cut to it, so one answer cannot park a run for hours."""

CAPABILITY_ALTERNATIVES: dict[Capability, str] = {
    Capability.TEXT_COMPLETION: "send chat messages instead, or use a server with a /v1/completions endpoint "
    "(vLLM, llama.cpp, Ollama) or the 'hf' backend",
    Capability.CHAT: "send a raw text prompt instead, or use an instruction-tuned model with a chat template",
    Capability.GENERATED_LOGPROBS: "use a server that returns token logprobs (OpenAI, vLLM, llama.cpp) or the "
    "'hf' backend, or a simulator that parses generated text ('json')",
    Capability.PROMPT_DISTRIBUTIONS: "use the 'hf' backend (in-process transformers), the 'llamacpp' backend, "
    "or an OpenAI-compatible server with completions logprobs (vLLM, llama.cpp); or a simulator that needs only "
    "generation ('json')",
    Capability.JSON_SCHEMA: "leave json_schema unset and parse the generated text, or use a server with "
    "structured output (OpenAI, vLLM, llama.cpp)",
    Capability.SEED: "use temperature 0 for deterministic answers",
}


def required_capabilities(request: CompletionRequest) -> frozenset[Capability]:
    needed = {
        "text": Capability.TEXT_COMPLETION,
        "chat": Capability.CHAT,
        "distributions": Capability.PROMPT_DISTRIBUTIONS,
    }[request.kind]
    extra = set()
    if request.top_logprobs > 0:
        extra.add(Capability.GENERATED_LOGPROBS)
    if request.json_schema is not None:
        extra.add(Capability.JSON_SCHEMA)
    return frozenset({needed, *extra})


def capability_error(backend_name: str, capability: Capability, detail: str = "") -> CapabilityError:
    why = f" ({detail})" if detail else ""
    return CapabilityError(
        f"backend {backend_name!r} cannot do {capability.value}{why}. Instead: {CAPABILITY_ALTERNATIVES[capability]}."
    )


def check_capabilities(backend_name: str, capabilities: frozenset[Capability], request: CompletionRequest) -> None:
    for capability in sorted(required_capabilities(request) - capabilities):
        raise capability_error(backend_name, capability)


def estimate_request_tokens(backend: Backend, request: CompletionRequest) -> int:
    """Prompt tokens plus the most the answer can take: what a tokens-per-minute budget must reserve."""
    if request.prompt is not None:
        prompt = backend.count_tokens(request.prompt)
    elif request.messages is not None:
        per_message_overhead = 4  # role markers and separators of chat templates
        prompt = sum(backend.count_tokens(m.content) + per_message_overhead for m in request.messages)
    else:
        assert request.distributions is not None
        return sum(backend.count_tokens(s.text) for s in request.distributions.segments)
    return prompt + request.sampling.max_tokens * request.sampling.n


class _BackoffHonouringRetryAfter(wait_exponential_jitter):
    """Exponential backoff with jitter, except that a 429's Retry-After is obeyed (plus a little jitter,
    so that clients told the same time do not all come back at once)."""

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, MAX_RETRY_AFTER_S) * (1.0 + 0.1 * random.random())
        return float(super().__call__(retry_state))


def _validate_transport(t: TransportSettings) -> None:
    problems = [
        f"{name} must be {rule}, got {value}"
        for name, value, ok, rule in (
            ("timeout_s", t.timeout_s, t.timeout_s > 0, "> 0 seconds"),
            ("max_retries", t.max_retries, t.max_retries >= 0, ">= 0"),
            ("backoff_initial_s", t.backoff_initial_s, t.backoff_initial_s >= 0, ">= 0 seconds"),
            ("backoff_max_s", t.backoff_max_s, t.backoff_max_s >= t.backoff_initial_s, ">= backoff_initial_s"),
        )
        if not ok
    ]
    if problems:
        raise ConfigError(f"invalid TransportSettings: {'; '.join(problems)}")


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, BackendError) and exc.retryable


class LLMClient:
    """A backend wrapped in cache, limits, retries and a usage ledger; itself a Backend.

    The concurrency and rate limits are shared by every client of the same backend name in the process,
    so they hold for a whole run. A failure after the last try raises BackendError with the reason; the
    caller records it as a failure (never as a score).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        transport: TransportSettings | None = None,
        cache: ResponseCache | None = None,
        ledger: UsageLedger | None = None,
        pricing: Pricing | None = None,
        limiter: Limiter | None = None,
        sampling_salt: int = 0,
    ) -> None:
        self.backend = backend
        self.sampling_salt = sampling_salt
        """Mixed into the seed of every sampled request (temperature > 0), e.g. a run's repeat number, so
        repeats draw anew and the cache, keyed by the seed, keeps their answers apart; greedy requests keep
        their seed (their answer does not depend on it) and stay shared."""
        self.transport = transport or TransportSettings()
        _validate_transport(self.transport)
        self.cache = cache
        self.ledger = ledger if ledger is not None else UsageLedger()
        self.pricing = pricing or Pricing()
        private = backend.in_process or getattr(backend, "private_server", False)  # this process's own model
        self.limiter = limiter or shared_limiter(backend.name, self.transport, per_process=private)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.backend.capabilities

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def in_process(self) -> bool:
        return self.backend.in_process

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def _salted(self, request: CompletionRequest) -> CompletionRequest:
        sampling = request.sampling
        if not self.sampling_salt or sampling.temperature == 0:
            return request
        digest = hashlib.sha256(f"{sampling.seed}:{self.sampling_salt}".encode()).digest()
        return replace(request, sampling=replace(sampling, seed=int.from_bytes(digest[:4], "big") & 0x7FFFFFFF))

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self.cache is not None:
            self.cache.close()

    async def complete(self, request: CompletionRequest) -> Completion:
        check_capabilities(self.name, self.capabilities, request)
        request = self._salted(request)
        started = time.monotonic()
        cacheable = self.cache is not None and is_cacheable(request)
        if cacheable:
            assert self.cache is not None
            hit = await self.cache.get(self.name, request)
            if hit is not None:
                self._record(request, started, tries=0, completion=hit, cached=True)
                return replace(hit, cached=True)
        tries = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.transport.max_retries + 1),
                wait=_BackoffHonouringRetryAfter(
                    multiplier=self.transport.backoff_initial_s,
                    max=self.transport.backoff_max_s,
                    jitter=self.transport.backoff_initial_s,
                ),
                retry=retry_if_exception(_is_retryable),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    tries += 1
                    completion = await self._call_once(request)
        except NeuroscribeError as exc:  # BackendError after retries, or a request the backend refused to send
            self._record(request, started, tries=tries, error=str(exc))
            if tries > 1:  # keep the class and its fields (status code, retryable); say how hard we tried
                exc.args = (f"{exc} (gave up after {tries} tries)", *exc.args[1:])
            raise
        self._record(request, started, tries=tries, completion=completion)
        if cacheable:
            assert self.cache is not None
            try:
                await self.cache.put(self.name, request, completion)
            except sqlite3.Error as exc:  # a full disk must not lose an answer we already paid for
                logger.warning("could not store a response in the cache %s: %s", self.cache.path, exc)
        return completion

    async def _call_once(self, request: CompletionRequest) -> Completion:
        # counting tokens can cost a tokenizer pass or a request (llama.cpp): only when a budget needs it
        timeout = None if self.backend.in_process else self.transport.timeout_s
        if isinstance(self.backend, Preparable):
            try:
                async with asyncio.timeout(timeout):
                    await self.backend.prepare()
            except TimeoutError:
                raise BackendError(f"{self.name} did not finish its readiness check within {timeout:g} s "
                                   "(TransportSettings.timeout_s)", retryable=True) from None
        estimate = estimate_request_tokens(self.backend, request) if self.limiter.counts_tokens else 0
        async with self.limiter.slot(estimate) as charge:
            try:
                async with asyncio.timeout(timeout):
                    completion = await self.backend.complete(request)
            except TimeoutError:
                raise BackendError(
                    f"{self.name} gave no answer within {self.transport.timeout_s:g} s (TransportSettings.timeout_s)",
                    retryable=True,
                ) from None
            charge.settle(completion.usage.prompt_tokens + completion.usage.completion_tokens)
        return completion

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning("%s: try %d failed (%s); retrying in %.1f s", self.name, state.attempt_number, exc, wait)

    def _record(
        self,
        request: CompletionRequest,
        started: float,
        *,
        tries: int,
        completion: Completion | None = None,
        cached: bool = False,
        error: str | None = None,
    ) -> None:
        usage = completion.usage if completion is not None and not cached else None
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        self.ledger.record(
            UsageEntry(
                backend=self.name,
                kind=request.kind,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=self.pricing.cost(prompt_tokens, completion_tokens),
                cached=cached,
                ok=error is None,
                error=error,
                tries=tries,
                seconds=time.monotonic() - started,
                finished_at=time.time(),
            )
        )
