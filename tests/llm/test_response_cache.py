"""The on-disk response cache: exact round trips, keys that change with the answer's inputs only, and many
processes writing to one cache at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from neuroscribe.errors import DataError
from neuroscribe.llm.base import (
    Choice,
    Completion,
    CompletionRequest,
    DistributionRequest,
    PromptSegment,
    SamplingParams,
    TokenLogprob,
    Usage,
)
from neuroscribe.llm.cache import ResponseCache, cache_key, completion_from_json, completion_to_json, is_cacheable

COMPLETION = Completion(
    choices=(
        Choice(
            text="tab\t7\n",
            logprobs=(TokenLogprob("tab", -0.5, (("tab", -0.5), ("t", -1.25))), TokenLogprob("\t", -0.01)),
            finish_reason="stop",
        ),
        Choice(text="é ünïcode", logprobs=None, finish_reason="length"),
    ),
    usage=Usage(12, 3, 4),
    model="m",
)
DISTRIBUTIONS = Completion(distributions=((0.25, 0.75), (1.0, 0.0)), usage=Usage(30, 0), model="m")


def request(prompt: str = "p", **sampling: object) -> CompletionRequest:
    return CompletionRequest(prompt=prompt, sampling=SamplingParams(**sampling))  # type: ignore[arg-type]


def test_completions_round_trip_exactly() -> None:
    for completion in (COMPLETION, DISTRIBUTIONS):
        assert completion_from_json(completion_to_json(completion)) == completion


def test_key_covers_backend_model_prompt_sampling_and_seed() -> None:
    base = cache_key("openai:m", request())
    assert cache_key("openai:m", request()) == base
    assert cache_key("openai:other", request()) != base
    assert cache_key("openai:m", request("q")) != base
    assert cache_key("openai:m", request(max_tokens=3)) != base
    assert cache_key("openai:m", request(seed=1)) != base
    segments = (PromptSegment(text="a"), PromptSegment(text="1", read_distribution=True))
    marked = CompletionRequest(distributions=DistributionRequest(segments=segments, candidates=("1",)))
    unmarked = CompletionRequest(
        distributions=DistributionRequest(
            segments=(PromptSegment(text="a"), PromptSegment(text="1")), candidates=("1",)
        )
    )
    assert cache_key("m", marked) != cache_key("m", unmarked)


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_cacheable(request(temperature=0.0, seed=None))
    assert is_cacheable(request(temperature=0.8, seed=3))
    assert not is_cacheable(request(temperature=0.8, seed=None))


def test_hit_miss_and_corrupt_entries(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    assert cache.get_sync("m", request()) is None
    cache.put_sync("m", request(), COMPLETION)
    assert cache.get_sync("m", request()) == COMPLETION
    assert cache.get_sync("other", request()) is None
    with sqlite3.connect(cache.path) as raw:
        raw.execute("UPDATE responses SET completion = '{not json'")
    assert cache.get_sync("m", request()) is None  # a damaged entry is a miss, never a crash
    cache.put_sync("m", request(), COMPLETION)
    assert cache.get_sync("m", request()) == COMPLETION and len(cache) == 1


def test_a_damaged_page_makes_misses_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = ResponseCache(tmp_path)
    for i in range(400):  # enough rows for many pages
        cache.put_sync("m", request(f"prompt {i}"), Completion(choices=(Choice(text="x" * 200),)))
    cache.close()
    with sqlite3.connect(tmp_path / "responses.sqlite") as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = (tmp_path / "responses.sqlite").stat().st_size
    with (tmp_path / "responses.sqlite").open("r+b") as handle:  # garbage over the middle pages
        handle.seek(size // 2)
        handle.write(b"\xde\xad" * 8192)
    reopened = ResponseCache(tmp_path)
    with caplog.at_level("WARNING", logger="neuroscribe.llm.cache"):
        answers = [reopened.get_sync("m", request(f"prompt {i}")) for i in range(400)]
        reopened.put_sync("m", request("new"), COMPLETION)
    assert None in answers  # the damaged entries are misses, the run goes on
    damage = [r for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damage) == 1 and str(tmp_path / "responses.sqlite") in damage[0].getMessage()


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "responses.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with caplog.at_level("WARNING", logger="neuroscribe.llm.cache"):
        cache = ResponseCache(tmp_path)
    cache.put_sync("m", request(), COMPLETION)
    assert cache.get_sync("m", request()) == COMPLETION
    aside = list(tmp_path.glob("responses.sqlite.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not sqlite")
    assert any("moved it to" in r.getMessage() for r in caplog.records)


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match=r"cannot open the response cache .*file/responses.sqlite"):
        ResponseCache(blocker)


def _write_many(directory: str, writer: int, count: int) -> None:
    cache = ResponseCache(Path(directory))
    for i in range(count):
        cache.put_sync("m", request(f"{writer}-{i}"), Completion(choices=(Choice(text=f"{writer}:{i}"),)))
        cache.get_sync("m", request(f"{(writer + 1) % 4}-{i}"))  # readers interleave with other writers
    cache.close()


@pytest.mark.slow
def test_concurrent_writer_processes_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), w, 40)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    cache = ResponseCache(tmp_path)
    assert len(cache) == 160
    for writer in range(4):
        for i in range(40):
            hit = cache.get_sync("m", request(f"{writer}-{i}"))
            assert hit is not None and hit.text == f"{writer}:{i}"


def _open_at(directory: str, start: float, outcomes: multiprocessing.Queue) -> None:
    while time.time() < start:  # all openers reach SQLite together
        pass
    try:
        ResponseCache(Path(directory)).close()
        outcomes.put("ok")
    except DataError as error:
        outcomes.put(str(error))


@pytest.mark.slow
def test_processes_opening_a_new_cache_together_all_succeed(tmp_path: Path) -> None:
    """Ray workers open the run's cache at the same moment; SQLite refused one of them at random."""
    context = multiprocessing.get_context("fork")
    for trial in range(15):
        outcomes: multiprocessing.Queue = context.Queue()
        start = time.time() + 0.3
        openers = [context.Process(target=_open_at, args=(str(tmp_path / str(trial)), start, outcomes))
                   for _ in range(6)]
        for process in openers:
            process.start()
        for process in openers:
            process.join(120)
        assert [outcomes.get(timeout=5) for _ in openers] == ["ok"] * 6, f"trial {trial}"
