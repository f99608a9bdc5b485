"""End-to-end runs with the embedded model: resume after SIGKILL, shards, failures, a full disk.

The embedded model (SmolLM2-135M) does not follow explanations, so scores here are not checked for
quality, only for being computed, committed exactly once, and identical however the run was split.
The runs are tiny (2 units, 8-token excerpts, 1 excerpt per split): CI has 2 cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from experiment_helpers import make_result

from neuroscribe import serialization
from neuroscribe.cli import main
from neuroscribe.errors import BackendError, ConfigError, DataError
from neuroscribe.experiments import RunStore, build_leaderboard, build_report, run_experiment
from neuroscribe.records import SliceParams, UnitId, split_records

pytestmark = pytest.mark.slow

METHODS = ["token_activation_pair+all_at_once", "random_explanation+all_at_once"]


def write_config(path: Path, dataset: Path, cache: Path, *, refs: tuple[str, ...] = ("0/0", "0/1"),
                 backend: str = 'type = "hf"\nmodel = "embedded"', extra: str = "") -> Path:
    refs_toml = ", ".join(f'"{r}"' for r in refs)
    path.write_text(f"""
name = "tiny"
seed = 3

[units]
refs = [{refs_toml}]

[records]
dataset = "{dataset}"
n_per_split = 1

[backends.default]
{backend}

[backends.default.transport]
max_concurrency = 1
timeout_s = 600

[[explainers]]
name = "token_activation_pair"
options = {{ max_tokens = 12 }}

[[simulators]]
name = "all_at_once"

[run]
max_concurrent_units = 1
progress = false
cache_dir = "{cache}"
{extra}
""", encoding="utf-8")
    return path


def final_state(run_dir: Path) -> dict[str, dict[tuple[int, int], tuple[object, ...]]]:
    """Everything a run's results mean (not how long they took or what they cost)."""
    store = RunStore(run_dir)
    state = {}
    for method in store.methods():
        results = store.results(method)
        state[method] = {
            (unit.layer, unit.index): (outcome.status, outcome.explanation, dict(outcome.scores),
                                       serialization.dumps(results[unit]) if unit in results else None)
            for unit, outcome in store.outcomes(method).items()
        }
    return state


def outcome_lines(run_dir: Path, method: str) -> int:
    return len(RunStore(run_dir).outcomes_path(method).read_text().splitlines())


@pytest.fixture(scope="module")
def reference(collected_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted run (its own cache) and its config."""
    base = tmp_path_factory.mktemp("reference")
    config = write_config(base / "tiny.toml", collected_dataset, base / "cache")
    summary = run_experiment(config, base / "run")
    assert summary.completed == 4 and summary.failed == 0
    # 2 explanations + 2 units x 2 methods x 2 excerpts simulated, each request counted exactly once
    assert summary.usage.calls + summary.usage.cache_hits == 10
    return base / "run", config


def test_uninterrupted_run_is_complete_and_reportable(reference):
    run_dir, _ = reference
    state = final_state(run_dir)
    assert sorted(state) == sorted(METHODS)
    for method in METHODS:
        assert set(state[method]) == {(0, 0), (0, 1)}
        for status, explanation, scores, result in state[method].values():
            assert status == "ok" and explanation and result is not None
            assert set(scores) == {"top_and_random", "top_only", "random_only"}
    # the random control scores another unit's explanation with the same simulator
    main_explanations = {u: s[1] for u, s in state[METHODS[0]].items()}
    assert state[METHODS[1]][(0, 0)][1] == main_explanations[(0, 1)]
    manifest = RunStore(run_dir).read_manifest()
    assert manifest["config_hash"] and manifest["packages"]["numpy"] and manifest["methods"] == METHODS
    assert manifest["backends"]["default"]["id"].startswith("hf:")
    assert (run_dir / "records" / "0" / "1.json").is_file()
    text = build_report([run_dir]).to_text()
    assert "SmolLM2-135M" in text and "2 / 2" in text
    assert build_leaderboard([run_dir]).rows[0].score.n == 2
    assert manifest["disjointness"] == "documents" and "Splits disjoint by: documents" in text


def test_no_document_of_a_units_top_excerpts_is_in_its_random_sample_or_two_splits(reference):
    """On the collected dataset the run used: each unit's random sample is its own and avoids the documents of its
    top excerpts, and the splits the run cut share no document."""
    run_dir, _ = reference
    samples = []
    for unit in (UnitId(0, 0), UnitId(0, 1)):
        record = RunStore(run_dir).read_record(unit)  # what the run split, sources kept beside the excerpts
        assert record is not None and record.excerpt_sources is not None
        sources = record.excerpt_sources
        top_documents = {document for document, _ in sources.most_positive_activation_records}
        assert top_documents.isdisjoint(document for document, _ in sources.random_sample)
        samples.append(sources.random_sample)
        listed = ((record.most_positive_activation_records, sources.most_positive_activation_records),
                  (record.random_sample, sources.random_sample))
        document_of = {id(excerpt): document for excerpts, known in listed
                       for excerpt, (document, _) in zip(excerpts, known, strict=True)}
        splits = split_records(record, SliceParams(n_examples_per_split=1))
        documents = [{document_of[id(r)] for r in splits.train}] + [
            {document_of[id(r)] for r in part.all} for part in (splits.calibration, splits.valid, splits.test)]
        assert sum(map(len, documents)) == len(set().union(*documents)) and splits.n_dropped == 0
    assert samples[0] != samples[1]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_results(reference, collected_dataset, tmp_path):
    reference_dir, _ = reference
    config = write_config(tmp_path / "tiny.toml", collected_dataset, tmp_path / "cache")  # a cold cache of its own
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "neuroscribe", "run", str(config), "--out", str(run_dir), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    outcomes = RunStore(run_dir).outcomes_path(METHODS[0])
    deadline = time.monotonic() + 600
    while not (outcomes.exists() and outcomes.read_text().count("\n") >= 1):
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "no unit finished in 10 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = sum(len(RunStore(run_dir).outcomes(m)) for m in METHODS)
    assert 1 <= committed < 4, "the kill should land mid-run"

    assert main(["run", str(config), "--out", str(run_dir), "--no-progress"]) == 0
    assert final_state(run_dir) == final_state(reference_dir)
    for method in METHODS:  # nothing was done twice
        assert outcome_lines(run_dir, method) == 2
    assert main(["run", str(config), "--out", str(run_dir), "--no-progress"]) == 0  # a finished run: no-op
    assert all(outcome_lines(run_dir, m) == 2 for m in METHODS)


def test_shards_in_one_directory_merge_to_the_same_results(reference, tmp_path):
    reference_dir, config = reference  # the reference's warm cache makes the shards quick
    run_dir = tmp_path / "sharded"
    command = [sys.executable, "-m", "neuroscribe", "run", str(config), "--out", str(run_dir), "--no-progress"]
    shards = [subprocess.Popen([*command, "--shard", f"{i}/2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
              for i in range(2)]
    for shard in shards:
        assert shard.wait(timeout=600) == 0, shard.stderr.read().decode() if shard.stderr else ""
    assert final_state(run_dir) == final_state(reference_dir)
    assert set(RunStore(run_dir).read_manifest()["shards"]) == {"0/2", "1/2"}


def test_shards_in_separate_directories_merge_in_reports(reference, tmp_path):
    reference_dir, config = reference
    dirs = [tmp_path / f"shard{i}" for i in range(2)]
    for i, out in enumerate(dirs):
        summary = run_experiment(config, out, shard=f"{i}/2", progress=False)
        assert summary.units == 1 and summary.completed == 2
    merged = build_leaderboard(dirs)
    single = build_leaderboard([reference_dir])
    assert [(r.method_id, r.score.mean, r.score.n) for r in merged.rows] == \
        [(r.method_id, r.score.mean, r.score.n) for r in single.rows]


def test_full_disk_stops_with_a_clear_message_and_keeps_finished_units(reference, tmp_path, monkeypatch):
    reference_dir, config = reference
    run_dir = tmp_path / "run"
    real_append = RunStore.append
    calls = []

    def append_then_fill_disk(self, method_id, outcome, result):
        calls.append(method_id)
        if len(calls) >= 3:
            raise OSError(28, "No space left on device")
        real_append(self, method_id, outcome, result)

    monkeypatch.setattr(RunStore, "append", append_then_fill_disk)
    with pytest.raises(DataError, match=r"No space left on device.*finished before this one is saved"):
        run_experiment(config, run_dir, progress=False)
    monkeypatch.setattr(RunStore, "append", real_append)
    committed = {m: len(RunStore(run_dir).outcomes(m)) for m in METHODS}
    assert sum(committed.values()) == 2
    run_experiment(config, run_dir, progress=False)
    assert final_state(run_dir) == final_state(reference_dir)


def test_missing_record_fails_that_unit_with_the_reason(reference, collected_dataset, tmp_path):
    """A unit the dataset lists but whose record file is gone fails alone, at 'records' (a unit the dataset
    does not list at all is refused before the run: tests/cli/test_run.py)."""
    cache = reference[0].parent / "cache"
    calibrated = '[[simulators]]\nname = "all_at_once"\nid = "linear"\ncalibration = "linear"'
    damaged = shutil.copytree(collected_dataset, tmp_path / "dataset")
    (damaged / "collated-activations" / "0" / "1.json").unlink()
    bad = write_config(tmp_path / "missing.toml", damaged, cache, refs=("0/0", "0/1"),
                       extra=f"[controls]\ntoken_lookup = true\n{calibrated}")
    summary = run_experiment(bad, tmp_path / "run", progress=False)
    assert summary.completed == 4 and summary.failed == 8
    lookup = RunStore(tmp_path / "run").outcomes("token_lookup+all_at_once")
    assert lookup[UnitId(0, 0)].status == "ok" and lookup[UnitId(0, 0)].explanation
    assert lookup[UnitId(0, 1)].stage == "records"
    linear = RunStore(tmp_path / "run").outcomes("token_activation_pair+linear")[UnitId(0, 0)]
    assert linear.status == "ok" and linear.calibrated
    result = RunStore(tmp_path / "run").results("token_activation_pair+linear")[UnitId(0, 0)]
    simulation = result.scored_explanations[0].scored_simulation.scored_sequence_simulations[0].simulation
    assert simulation.activation_scale == "neuron_activations"
    outcomes = RunStore(tmp_path / "run").outcomes(METHODS[0])
    failed = [o for o in outcomes.values() if o.status == "failed"]
    assert len(failed) == 1 and failed[0].stage == "records" and "1.json" in (failed[0].reason or "")
    control = RunStore(tmp_path / "run").outcomes(METHODS[1])
    assert all(o.status == "failed" for o in control.values())
    report = build_report([tmp_path / "run"]).to_text()
    assert "records:" in report and "1 / 2 (1 failed)" in report and "token_activation_pair+linear" in report


def test_failing_backend_records_reasons_then_stops(collected_dataset, tmp_path, monkeypatch):
    import socket

    import tiktoken

    def no_download(*args, **kwargs):
        raise OSError("tests never download tokenizer files")

    monkeypatch.setattr(tiktoken, "encoding_for_model", no_download)
    monkeypatch.setattr(tiktoken, "get_encoding", no_download)
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = f'type = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:{port}/v1"'
    dataset = tmp_path / "dataset"  # the collected dataset plus a published explanation of unit 0/0
    shutil.copytree(collected_dataset, dataset)
    (dataset / "explanations" / "0").mkdir(parents=True)
    (dataset / "explanations" / "0" / "0.jsonl").write_text(
        serialization.dumps(make_result(UnitId(0, 0), "words about money", 0.5)) + "\n")
    config = write_config(tmp_path / "down.toml", dataset, tmp_path / "cache", backend=backend,
                          extra="max_consecutive_backend_failures = 0\n[controls]\npublished = true")
    text = config.read_text().replace("timeout_s = 600", "timeout_s = 10\nmax_retries = 0")
    config.write_text(text)
    summary = run_experiment(config, tmp_path / "run", progress=False)
    assert summary.completed == 0 and summary.failed == 6
    store = RunStore(tmp_path / "run")
    outcome = store.outcomes(METHODS[0])[UnitId(0, 0)]
    assert outcome.stage == "explain" and str(port) in (outcome.reason or "")
    published = store.outcomes("published+all_at_once")
    assert published[UnitId(0, 0)].explanation == "words about money"
    assert published[UnitId(0, 0)].stage == "simulate" and str(port) in (published[UnitId(0, 0)].reason or "")
    assert published[UnitId(0, 1)].stage == "explain" and "0/1.jsonl" in (published[UnitId(0, 1)].reason or "")

    stopping = tmp_path / "stop.toml"
    stopping.write_text(text.replace("max_consecutive_backend_failures = 0", "max_consecutive_backend_failures = 2")
                        .replace("published = true", "published = false"))
    with pytest.raises(BackendError, match="stopped after 2 backend failures in a row"):
        run_experiment(stopping, tmp_path / "run2", progress=False)
    assert sum(len(RunStore(tmp_path / "run2").outcomes(m)) for m in METHODS) >= 2


def test_config_errors_and_a_changed_config(reference, tmp_path, capsys):
    run_dir, config = reference
    assert main(["run", str(config), "--out", str(run_dir), "--set", "records.n_per_splt=2"]) == 2
    assert "did you mean 'n_per_split'" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(config, copy, ["records.n_per_split=2"])
    assert main(["run", str(config), "--out", str(copy), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "token_activation_pair+all_at_once: 0" in plan and "estimated cost" in plan


def test_cli_report_and_leaderboard_write_files(reference, tmp_path, capsys):
    run_dir, _ = reference
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "scores.png").stat().st_size > 1000
    assert "plumbing check" in (tmp_path / "report" / "report.md").read_text()
    assert main(["leaderboard", str(run_dir), "--html", str(tmp_path / "board.html")]) == 0
    assert "<table>" in (tmp_path / "board.html").read_text()
    assert os.path.getsize(tmp_path / "board.html") > 500
