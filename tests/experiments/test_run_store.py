from __future__ import annotations

import json
import os

import pytest
from experiment_helpers import make_result, ok_outcome

from neuroscribe import serialization
from neuroscribe.errors import DataError
from neuroscribe.experiments.store import RunStore, UnitOutcome
from neuroscribe.records import UnitId


def test_append_and_read_back(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    unit = UnitId(3, 7)
    store.append("m+s", ok_outcome(unit, 0.5, 0.1), make_result(unit, "dogs", 0.5))
    store.append("m+s", UnitOutcome(unit=UnitId(3, 8), status="failed", reason="boom", stage="explain"), None)
    outcomes = store.outcomes("m+s")
    assert outcomes[unit].scores["top_and_random"] == 0.5
    assert outcomes[UnitId(3, 8)].reason == "boom"
    results = store.results("m+s")
    assert list(results) == [unit]
    assert results[unit].scored_explanations[0].explanation == "dogs"


def test_torn_tail_and_orphan_result_are_dropped(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    done, orphan = UnitId(0, 1), UnitId(0, 2)
    store.append("m+s", ok_outcome(done, 0.3), make_result(done, "a", 0.3))
    # a kill between the result line and the outcome line, then a kill mid-line
    with store.results_path("m+s").open("a") as handle:
        handle.write(f"{serialization.dumps(make_result(orphan, 'b', 0.9))}\n")
        handle.write('{"neuron_id": {"layer_ind')
    with store.outcomes_path("m+s").open("a") as handle:
        handle.write('{"unit": {"lay')
    assert list(store.results("m+s")) == [done]
    assert list(store.outcomes("m+s")) == [done]
    # the next append first cuts the torn tails off, so its lines stay whole
    store.append("m+s", ok_outcome(orphan, 0.9), make_result(orphan, "b", 0.9))
    assert sorted(store.outcomes("m+s")) == [done, orphan]
    store.compact()
    lines = store.results_path("m+s").read_text().splitlines()
    assert len(lines) == 2


def test_failed_write_leaves_no_partial_line(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "run")
    store.create()
    first = UnitId(0, 1)
    store.append("m+s", ok_outcome(first, 0.3), make_result(first, "a", 0.3))
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.append("m+s", ok_outcome(UnitId(0, 2), 0.4), make_result(UnitId(0, 2), "b", 0.4))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(store.outcomes("m+s")) == [first]
    assert list(store.results("m+s")) == [first]


def test_manifest_roundtrip_and_errors(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(DataError, match="not a run directory"):
        store.read_manifest()
    store.write_manifest({"methods": ["a+b"], "config_hash": "x"})
    assert store.read_manifest()["methods"] == ["a+b"]
    assert "updated" in store.read_manifest()
    assert store.methods() == ["a+b"]
    with pytest.raises(DataError, match="cannot be a file name"):
        store.results_path("../evil")


def test_a_bad_outcome_line_is_skipped_naming_file_and_line(tmp_path, caplog):
    store = RunStore(tmp_path / "run")
    store.create()
    good = UnitOutcome(unit=UnitId(1, 2), status="failed", stage="explain", reason="x")
    store.outcomes_path("m+s").write_text('{"unit": {"layer": 1}, "status": "ok"}\n{torn\n'
                                          + json.dumps(good.to_json_obj()) + "\n")
    with caplog.at_level("WARNING"):
        assert store.outcomes("m+s") == {UnitId(1, 2): good}  # the damaged units count as not finished
    assert "m+s.jsonl, line 1: not a unit outcome" in caplog.text and "m+s.jsonl, line 2" in caplog.text
