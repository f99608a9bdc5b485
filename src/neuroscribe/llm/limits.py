"""Rate and concurrency limits that hold for a whole run, however many objects share a backend.

A `Limiter` is looked up by key (usually the backend's name) in a process-wide table, so two explainers
and a simulator talking to the same server share one concurrency limit and one requests/tokens budget
instead of each getting their own. Asyncio primitives belong to one event loop, so the state is kept
per loop (a run is one loop; tests may use several).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from neuroscribe.errors import BackendError, ConfigError
from neuroscribe.llm.base import TransportSettings

logger = logging.getLogger(__name__)

BURST_SECONDS = 10.0
"""A rate bucket holds this many seconds' worth of its per-minute budget, so a run never bursts a full
minute of requests into a provider's window at once."""


class RateLimitedError(BackendError):
    """The server answered 429; `retry_after_s` is its Retry-After hint (seconds) when it sent one."""

    def __init__(self, message: str, *, retry_after_s: float | None, status_code: int | None = 429) -> None:
        super().__init__(message, retryable=True, status_code=status_code)
        self.retry_after_s = retry_after_s


class TokenBucket:
    """Refills continuously at `per_minute / 60` units per second, holding at most `capacity` units.

    A request larger than the capacity is let through once the bucket is full (it then goes negative and
    later requests wait), so an oversized prompt is slowed down, never blocked forever.
    """

    def __init__(self, per_minute: float, *, capacity: float | None = None) -> None:
        if not per_minute > 0:
            raise ConfigError(f"a per-minute rate limit must be > 0, got {per_minute}")
        self.rate_per_s = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, per_minute * BURST_SECONDS / 60.0)
        self._level = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate_per_s)
        self._updated = now

    async def acquire(self, amount: float) -> None:
        async with self._lock:  # first come, first served: a waiter blocks those behind it
            while True:
                self._refill()
                needed = min(amount, self.capacity)
                if self._level >= needed:
                    self._level -= amount
                    return
                await asyncio.sleep((needed - self._level) / self.rate_per_s)

    def adjust(self, amount: float) -> None:
        """Charge (positive) or refund (negative) the difference between an estimate and the real count."""
        self._refill()
        self._level = min(self.capacity, self._level - amount)


@dataclass
class _LoopState:
    semaphore: asyncio.Semaphore
    in_flight: int
    requests: TokenBucket | None
    tokens: TokenBucket | None


class Limiter:
    """Concurrency, requests-per-minute and tokens-per-minute limits for one backend."""

    def __init__(self, transport: TransportSettings) -> None:
        if transport.max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {transport.max_concurrency}")
        self.transport = transport
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    @property
    def counts_tokens(self) -> bool:
        """Whether requests must be charged an estimated token count (only with a tokens-per-minute budget)."""
        return self.transport.tokens_per_minute is not None

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            t = self.transport
            state = _LoopState(
                semaphore=asyncio.Semaphore(t.max_concurrency),
                in_flight=0,
                requests=TokenBucket(t.requests_per_minute) if t.requests_per_minute else None,
                tokens=TokenBucket(t.tokens_per_minute) if t.tokens_per_minute else None,
            )
            self._states[loop] = state
        return state

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[TokenCharge]:
        """Wait for budget and a free slot; yields a handle to correct the token charge afterwards."""
        state = self._state()
        if state.requests is not None:
            await state.requests.acquire(1)
        if state.tokens is not None:
            await state.tokens.acquire(estimated_tokens)
        async with state.semaphore:
            state.in_flight += 1
            try:
                yield TokenCharge(state.tokens, estimated_tokens)
            finally:
                state.in_flight -= 1

    def in_flight(self) -> int:
        """Requests currently holding a slot in the running loop (for tests and progress displays)."""
        return self._state().in_flight


class TokenCharge:
    """What a request was charged against the tokens-per-minute budget, corrected once usage is known."""

    def __init__(self, bucket: TokenBucket | None, estimated: int) -> None:
        self._bucket = bucket
        self._estimated = estimated

    def settle(self, actual_tokens: int) -> None:
        if self._bucket is not None:
            self._bucket.adjust(actual_tokens - self._estimated)
            self._estimated = actual_tokens


_LIMITERS: dict[tuple[str, int, float | None, float | None], Limiter] = {}
_LIMITERS_LOCK = threading.Lock()
LimiterFactory = Callable[[str, TransportSettings], Limiter]
_beyond_process: LimiterFactory | None = None


def share_limits_beyond_process(factory: LimiterFactory | None) -> None:
    """Have `shared_limiter` make the limiters of servers with `factory` (key, transport), so that their limits
    hold across processes (a worker of a distributed run: see experiments.distributed); None: per process again.
    Limiters made before are forgotten. A model of the process's own (in-process, or a server it started) keeps
    per-process limits (`shared_limiter(per_process=True)`): each process has its own copy."""
    global _beyond_process
    with _LIMITERS_LOCK:
        _beyond_process = factory
        _LIMITERS.clear()


def shared_limiter(key: str, transport: TransportSettings, *, per_process: bool = False) -> Limiter:
    """The process-wide limiter for `key` (usually the backend name); every client with the same key and
    the same limits shares it. A client asking for different limits under the same key gets its own
    limiter and a warning, since two budgets for one server are usually a config mistake. Unless `per_process`
    (the model is this process's own), it is shared beyond the process when `share_limits_beyond_process` says so."""
    limits = (transport.max_concurrency, transport.requests_per_minute, transport.tokens_per_minute)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get((key, *limits))
        if limiter is None:
            others = [k for k in _LIMITERS if k[0] == key]
            if others:
                logger.warning(
                    "backend %r gets a second, separate limiter (%s) next to %s; clients share limits only "
                    "when their TransportSettings agree",
                    key,
                    _describe(transport),
                    _describe(_LIMITERS[others[0]].transport),
                )
            beyond = None if per_process else _beyond_process
            limiter = _LIMITERS[(key, *limits)] = beyond(key, transport) if beyond else Limiter(transport)
        return limiter


def _describe(t: TransportSettings) -> str:
    rpm = "unlimited" if t.requests_per_minute is None else f"{t.requests_per_minute:g}"
    tpm = "unlimited" if t.tokens_per_minute is None else f"{t.tokens_per_minute:g}"
    return f"max_concurrency={t.max_concurrency}, requests_per_minute={rpm}, tokens_per_minute={tpm}"


def reset_shared_limiters() -> None:
    """Forget every shared limiter (tests and benchmarks that try several limits in one process)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: seconds, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
