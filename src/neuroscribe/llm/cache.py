"""A persistent response cache, so a re-run (or a resumed run) makes no model call it already made.

One SQLite file in WAL mode: many processes may read and write it at once (a sharded run), a crash never
leaves a half-written entry, and lookups stay fast with millions of entries. The key is a hash of the
backend's name (backend + model) and the request's fingerprint (prompt, sampling parameters, seed, ...),
i.e. everything that changes the answer and nothing that does not (timeouts, retries, concurrency).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path

from neuroscribe.errors import DataError
from neuroscribe.llm.base import Choice, Completion, CompletionRequest, TokenLogprob, Usage

logger = logging.getLogger(__name__)

CACHE_FILE_NAME = "responses.sqlite"
FORMAT_VERSION = 1
"""Bump when the stored form of a Completion changes; older entries are then ignored, never misread."""

_BUSY_TIMEOUT_MS = 60_000


def cache_key(backend_name: str, request: CompletionRequest) -> str:
    return hashlib.sha256(f"v{FORMAT_VERSION}\0{backend_name}\0{request.fingerprint()}".encode()).hexdigest()


def is_cacheable(request: CompletionRequest) -> bool:
    """Deterministic requests only: greedy decoding, or sampling with a fixed seed. Caching an unseeded
    sample would silently turn n independent samples into n copies of one."""
    return request.sampling.temperature == 0 or request.sampling.seed is not None


def completion_to_json(completion: Completion) -> str:
    return json.dumps(
        {
            "choices": [
                {
                    "text": c.text,
                    "finish_reason": c.finish_reason,
                    "logprobs": None
                    if c.logprobs is None
                    else [[t.token, t.logprob, [list(alt) for alt in t.top]] for t in c.logprobs],
                }
                for c in completion.choices
            ],
            "distributions": [list(d) for d in completion.distributions],
            "usage": [
                completion.usage.prompt_tokens,
                completion.usage.completion_tokens,
                completion.usage.cached_prompt_tokens,
            ],
            "model": completion.model,
        },
        ensure_ascii=False,
        allow_nan=True,
    )


def completion_from_json(text: str) -> Completion:
    data = json.loads(text)
    return Completion(
        choices=tuple(
            Choice(
                text=c["text"],
                finish_reason=c["finish_reason"],
                logprobs=None
                if c["logprobs"] is None
                else tuple(
                    TokenLogprob(token, logprob, tuple((alt, lp) for alt, lp in top))
                    for token, logprob, top in c["logprobs"]
                ),
            )
            for c in data["choices"]
        ),
        distributions=tuple(tuple(d) for d in data["distributions"]),
        usage=Usage(*data["usage"]),
        model=data["model"],
    )


def _is_damage(error: sqlite3.Error) -> bool:
    """A damaged file (not a database, a malformed page), as opposed to one that cannot be opened or is busy."""
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, also in their extended forms (e.g. SQLITE_BUSY_RECOVERY)."""
    return error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class ResponseCache:
    """Completions by (backend name, request) in `<directory>/responses.sqlite`.

    A cache only saves work, so damage never stops a run: a file that is not a database is moved aside
    and a new one started, and a damaged page makes its lookups misses and its writes no-ops; each is
    said once, naming the file.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / CACHE_FILE_NAME
        self._warned = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._connection = self._open()
            except sqlite3.Error as error:
                if not _is_damage(error):
                    raise
                aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
                self.path.replace(aside)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                logger.warning("the response cache %s is damaged (%s); moved it to %s and started a new one",
                               self.path, error, aside)
                self._connection = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise DataError(
                f"cannot open the response cache {self.path}: {exc}. Check that the directory is writable, "
                "or move the cache elsewhere (cache_dir)."
            ) from exc
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        """Retries while another process is opening the same file: SQLite answers "database is locked" at once,
        without waiting on the busy timeout, when two connections switch a new file to WAL together."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return self._connect()
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                                     isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                "key TEXT PRIMARY KEY, backend TEXT NOT NULL, completion TEXT NOT NULL, created REAL NOT NULL)"
            )
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    def _damaged(self, error: sqlite3.Error) -> None:
        if not _is_damage(error):
            raise DataError(f"the response cache {self.path} failed: {error}") from error
        if not self._warned:
            self._warned = True
            logger.warning("the response cache %s is damaged (%s): damaged entries count as misses and are not "
                           "rewritten; delete the file to start a clean cache", self.path, error)

    def get_sync(self, backend_name: str, request: CompletionRequest) -> Completion | None:
        key = cache_key(backend_name, request)
        try:
            with self._lock:
                row = self._connection.execute("SELECT completion FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as error:
            self._damaged(error)
            return None
        if row is None:
            return None
        try:
            return completion_from_json(row[0])
        except (ValueError, KeyError, TypeError):  # a corrupt entry is a miss; the fresh answer replaces it
            return None

    def put_sync(self, backend_name: str, request: CompletionRequest, completion: Completion) -> None:
        key = cache_key(backend_name, request)
        try:
            with self._lock:
                self._connection.execute(
                    "INSERT OR REPLACE INTO responses (key, backend, completion, created) VALUES (?, ?, ?, ?)",
                    (key, backend_name, completion_to_json(completion), time.time()),
                )
        except sqlite3.Error as error:
            self._damaged(error)

    async def get(self, backend_name: str, request: CompletionRequest) -> Completion | None:
        return await asyncio.to_thread(self.get_sync, backend_name, request)

    async def put(self, backend_name: str, request: CompletionRequest, completion: Completion) -> None:
        await asyncio.to_thread(self.put_sync, backend_name, request, completion)

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._connection.execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._connection.close()
