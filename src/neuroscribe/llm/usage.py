"""Token usage and estimated cost, per call and per run, plus token counting before a call.

Counts come from the server's `usage` field. Where a count is needed before the call (tokens-per-minute
budgets), `TokenCounter` uses tiktoken for the models tiktoken knows by name (OpenAI's), and a documented
estimate (characters / 4) for every other model, without trying to fetch an encoding. tiktoken downloads
its encoding files on first use, so when that cannot happen (offline, no cached file) it falls back to the
estimate within a few seconds and logs once that it did.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from neuroscribe.errors import ConfigError

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN_ESTIMATE = 4.0
"""English text averages about four characters per BPE token; used only when no tokenizer is available."""

ENCODING_LOAD_TIMEOUT_S = 5.0


@dataclass(frozen=True, kw_only=True)
class Pricing:
    """USD per million tokens; zero for local models."""

    per_million_prompt_tokens: float = 0.0
    per_million_completion_tokens: float = 0.0

    def __post_init__(self) -> None:
        if self.per_million_prompt_tokens < 0 or self.per_million_completion_tokens < 0:
            raise ConfigError(f"prices must be >= 0 USD per million tokens, got {self}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.per_million_prompt_tokens + completion_tokens * self.per_million_completion_tokens
        ) / 1e6


@dataclass(frozen=True, kw_only=True)
class UsageEntry:
    """One request as the client saw it."""

    backend: str
    kind: str
    """'text', 'chat' or 'distributions'."""
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    """Served from the response cache: no model call, no cost."""
    ok: bool
    error: str | None
    tries: int
    """Model calls made for this request (0 for a cache hit, > 1 after retries)."""
    seconds: float
    finished_at: float
    """Unix time."""


@dataclass(frozen=True)
class UsageTotals:
    requests: int = 0
    calls: int = 0
    """Model calls actually made (retries included, cache hits excluded)."""
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def describe(self) -> str:
        """One line for logs and reports, e.g. '120 requests (118 model calls, 4 cache hits, 2 failed), ...'."""
        return (
            f"{self.requests} requests ({self.calls} model calls, {self.cache_hits} cache hits, "
            f"{self.failures} failed), {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion "
            f"tokens, ${self.cost_usd:.4f} estimated"
        )

    def add(self, entry: UsageEntry) -> UsageTotals:
        return UsageTotals(
            requests=self.requests + 1,
            calls=self.calls + entry.tries,
            cache_hits=self.cache_hits + entry.cached,
            failures=self.failures + (not entry.ok),
            prompt_tokens=self.prompt_tokens + entry.prompt_tokens,
            completion_tokens=self.completion_tokens + entry.completion_tokens,
            cost_usd=self.cost_usd + entry.cost_usd,
        )


@dataclass
class UsageTracker:
    """Totals of the requests made inside one `UsageLedger.track()` block (e.g. one unit of a run)."""

    totals: UsageTotals = field(default_factory=UsageTotals)


_ACTIVE_TRACKERS: contextvars.ContextVar[tuple[UsageTracker, ...]] = contextvars.ContextVar(
    "neuroscribe_usage_trackers", default=()
)


class UsageLedger:
    """Every request of a run, with totals; thread-safe, and shared by all clients of a run."""

    def __init__(self) -> None:
        self._entries: list[UsageEntry] = []
        self._totals = UsageTotals()
        self._lock = threading.Lock()

    def record(self, entry: UsageEntry) -> None:
        with self._lock:
            self._entries.append(entry)
            self._totals = self._totals.add(entry)
        for tracker in _ACTIVE_TRACKERS.get():
            tracker.totals = tracker.totals.add(entry)

    @property
    def totals(self) -> UsageTotals:
        return self._totals

    @property
    def entries(self) -> tuple[UsageEntry, ...]:
        with self._lock:
            return tuple(self._entries)

    def totals_by_backend(self) -> dict[str, UsageTotals]:
        by_backend: dict[str, UsageTotals] = {}
        for entry in self.entries:
            by_backend[entry.backend] = by_backend.get(entry.backend, UsageTotals()).add(entry)
        return by_backend

    @staticmethod
    @contextmanager
    def track() -> Iterator[UsageTracker]:
        """Count the requests made in this block and in the tasks it starts (contextvars follow asyncio
        tasks), whichever ledger records them; blocks nest, and concurrent blocks stay separate."""
        tracker = UsageTracker()
        token = _ACTIVE_TRACKERS.set((*_ACTIVE_TRACKERS.get(), tracker))
        try:
            yield tracker
        finally:
            _ACTIVE_TRACKERS.reset(token)


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: tuple[str, ...] = ()) -> list[int]: ...


_ENCODINGS: dict[str, _Encoding | None] = {}
_ENCODINGS_LOCK = threading.Lock()


def tiktoken_knows(model: str) -> bool:
    """Whether tiktoken maps `model` to an encoding by name (a lookup, no file and no network)."""
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return False
    try:
        encoding_name_for_model(model)
    except KeyError:
        return False
    return True


def _load_encoding(model: str) -> _Encoding | None:
    """tiktoken's encoding for `model`, or None: for a model tiktoken does not know (any open model) at once,
    so counting never reaches for the network; for one it knows, if the encoding cannot be loaded within
    ENCODING_LOAD_TIMEOUT_S (the load runs in a daemon thread so a stalled download never hangs the run)."""
    if not tiktoken_knows(model):
        logger.info("token counts for %r before a call are estimated as characters / %.0f (tiktoken has no "
                    "encoding for it); counts after a call are the server's", model, CHARS_PER_TOKEN_ESTIMATE)
        return None
    result: list[_Encoding] = []
    failure: list[BaseException] = []

    def load() -> None:
        try:
            import tiktoken

            result.append(tiktoken.encoding_for_model(model))
        except Exception as exc:  # network, file system, or a missing package: all mean "estimate instead"
            failure.append(exc)

    thread = threading.Thread(target=load, name="tiktoken-load", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(ENCODING_LOAD_TIMEOUT_S)
    if result:
        return result[0]
    reason = repr(failure[0]) if failure else f"no answer within {time.monotonic() - started:.1f} s"
    logger.warning(
        "tiktoken could not load an encoding for %r (%s); token counts before a call are estimated as "
        "characters / %.0f. Set TIKTOKEN_CACHE_DIR to a directory holding the encoding file for exact counts.",
        model,
        reason,
        CHARS_PER_TOKEN_ESTIMATE,
    )
    return None


class TokenCounter:
    """Counts tokens for a model before a call: exact with tiktoken, an estimate without it."""

    def __init__(self, model: str) -> None:
        self.model = model

    def _encoding(self) -> _Encoding | None:
        with _ENCODINGS_LOCK:
            if self.model not in _ENCODINGS:
                _ENCODINGS[self.model] = _load_encoding(self.model)
            return _ENCODINGS[self.model]

    @property
    def exact(self) -> bool:
        return self._encoding() is not None

    def count(self, text: str) -> int:
        encoding = self._encoding()
        if encoding is None:
            return max(1, round(len(text) / CHARS_PER_TOKEN_ESTIMATE)) if text else 0
        return len(encoding.encode(text, disallowed_special=()))
