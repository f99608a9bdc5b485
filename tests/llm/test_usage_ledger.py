"""Usage and cost accounting, and token counting that never hangs when tiktoken cannot load offline."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from neuroscribe.errors import ConfigError
from neuroscribe.llm import usage
from neuroscribe.llm.usage import Pricing, TokenCounter, UsageEntry, UsageLedger


def entry(prompt: int, completion: int, *, cached: bool = False, ok: bool = True, tries: int = 1) -> UsageEntry:
    pricing = Pricing(per_million_prompt_tokens=3.0, per_million_completion_tokens=15.0)
    return UsageEntry(
        backend="b",
        kind="chat",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=pricing.cost(prompt, completion),
        cached=cached,
        ok=ok,
        error=None if ok else "boom",
        tries=0 if cached else tries,
        seconds=0.1,
        finished_at=time.time(),
    )


def test_totals_and_cost() -> None:
    ledger = UsageLedger()
    ledger.record(entry(1000, 200))
    ledger.record(entry(0, 0, cached=True))
    ledger.record(entry(0, 0, ok=False, tries=3))
    totals = ledger.totals
    assert (totals.requests, totals.calls, totals.cache_hits, totals.failures) == (3, 4, 1, 1)
    assert totals.cost_usd == pytest.approx((1000 * 3.0 + 200 * 15.0) / 1e6)
    assert len(ledger.entries) == 3


def test_nested_tracking_blocks() -> None:
    ledger = UsageLedger()
    with ledger.track() as outer:
        ledger.record(entry(10, 1))
        with ledger.track() as inner:
            ledger.record(entry(20, 2))
    ledger.record(entry(40, 4))
    assert (outer.totals.prompt_tokens, inner.totals.prompt_tokens, ledger.totals.prompt_tokens) == (30, 20, 70)


def test_negative_prices_are_rejected() -> None:
    with pytest.raises(ConfigError, match="prices must be >= 0"):
        Pricing(per_million_prompt_tokens=-1.0)


def test_counter_falls_back_quickly_when_the_encoding_never_arrives(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A download that stalls (no network, a black-holed proxy) must not hang a run."""
    import tiktoken

    stall = threading.Event()

    def stalled(name: str) -> object:
        stall.wait(30)
        raise RuntimeError("unreachable")

    monkeypatch.setattr(tiktoken, "encoding_for_model", stalled)
    monkeypatch.setattr(usage, "ENCODING_LOAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(usage, "_ENCODINGS", {})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        counter = TokenCounter("gpt-4o-mini")
        assert counter.count("a" * 40) == 10
    stall.set()
    assert time.monotonic() - started < 2.0
    assert not counter.exact
    assert "estimated as characters / 4" in caplog.text


def test_counter_is_exact_when_tiktoken_has_the_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    class Words:
        def encode(self, text: str, *, disallowed_special: tuple[str, ...] = ()) -> list[int]:
            return [len(w) for w in text.split()]

    import tiktoken

    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: Words())
    monkeypatch.setattr(usage, "_ENCODINGS", {})
    counter = TokenCounter("gpt-4o")
    assert counter.exact and counter.count("three little words") == 3


def test_a_model_tiktoken_does_not_know_is_estimated_without_fetching_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken

    def fetch(*args: object) -> object:
        raise AssertionError("an encoding was fetched for a model tiktoken does not know")

    monkeypatch.setattr(tiktoken, "encoding_for_model", fetch)
    monkeypatch.setattr(tiktoken, "get_encoding", fetch)
    monkeypatch.setattr(usage, "_ENCODINGS", {})
    counter = TokenCounter("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not counter.exact and counter.count("a" * 40) == 10


def test_totals_describe_themselves_in_one_line() -> None:
    ledger = UsageLedger()
    ledger.record(entry(1200, 300))
    ledger.record(entry(0, 0, cached=True))
    assert ledger.totals.describe() == (
        "2 requests (1 model calls, 1 cache hits, 0 failed), 1,200 prompt + 300 completion tokens, $0.0081 estimated"
    )
