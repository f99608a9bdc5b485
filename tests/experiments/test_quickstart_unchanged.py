"""The quickstart before and after scorers became a stage: same requests, same results.

The run of `tests/data/quickstart-before` was made by the code before the change (see its PROVENANCE.md);
it is replayed here from its own response cache, so any change to a prompt shows up as a model call, and
any change to scoring or serialization as a differing results line: the same text, keys in the same order,
floats equal to 1e-12 (a dot product's last bits depend on the CPU and numpy build that computed it:
correlations of this run differ from the recorded ones by up to 1e-16 on numpy 2.4.6). Since then the
quickstart also scores with the `embedding` simulator (asks no model): its methods are new, the recorded
ones must not change.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from quickstart_replay import QUICKSTART_BEFORE as BEFORE
from quickstart_replay import REPO

from neuroscribe.experiments import RunStore, RunSummary, load_config

HASH = "314a41e2613c5350"
"""The config's hash since the `embedding` simulator joined it (it was 7ab87825cda7869c): runs of the
earlier quickstart do not resume into this one."""
ADDED_METHODS = {"token_activation_pair+embedding", "random_explanation+embedding", "token_lookup+embedding"}
ADDED_OUTCOME_FIELDS = {"named_scores", "headline"}
VARYING_OUTCOME_FIELDS = {"usage", "seconds"}
"""Model use and time differ between a cold run and a replay from the cache; they are not results."""


def test_the_quickstart_config_keeps_its_hash_so_old_runs_resume() -> None:
    assert load_config(REPO / "experiments" / "quickstart.toml").config_hash() == HASH


def _same_up_to_rounding(new: object, old: object) -> bool:
    if isinstance(new, float) and isinstance(old, float):
        return math.isclose(new, old, rel_tol=1e-12, abs_tol=1e-15)
    if isinstance(new, list) and isinstance(old, list):
        return len(new) == len(old) and all(_same_up_to_rounding(a, b) for a, b in zip(new, old, strict=True))
    if isinstance(new, dict) and isinstance(old, dict):
        return list(new) == list(old) and all(_same_up_to_rounding(new[k], old[k]) for k in old)
    return type(new) is type(old) and new == old


def _same_lines(new: bytes, old: bytes) -> bool:
    new_lines, old_lines = new.decode().splitlines(keepends=True), old.decode().splitlines(keepends=True)
    return len(new_lines) == len(old_lines) and all(
        _same_up_to_rounding(json.loads(a), json.loads(b)) and a.endswith("\n") == b.endswith("\n")
        for a, b in zip(new_lines, old_lines, strict=True))


def test_float_rounding_is_all_that_is_forgiven() -> None:
    line = b'{"r": 0.25, "n": 3, "tokens": ["a"]}\n'
    assert _same_lines(b'{"r": 0.25000000000000006, "n": 3, "tokens": ["a"]}\n', line)
    assert not _same_lines(b'{"r": 0.2500001, "n": 3, "tokens": ["a"]}\n', line)
    assert not _same_lines(b'{"r": 0.25, "n": 3.0, "tokens": ["a"]}\n', line)
    assert not _same_lines(b'{"n": 3, "r": 0.25, "tokens": ["a"]}\n', line)
    assert not _same_lines(b'{"r": 0.25, "n": 3, "tokens": ["b"]}\n', line)
    assert not _same_lines(line + line, line)


def _outcomes(path: Path) -> dict[tuple[int, int], dict[str, object]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {(o["unit"]["layer"], o["unit"]["index"]): o for o in lines}


@pytest.mark.slow
def test_quickstart_results_are_unchanged(quickstart_run: tuple[Path, RunSummary]) -> None:
    run_dir, summary = quickstart_run  # replayed from the cache of BEFORE on its dataset (see conftest.py)
    assert (summary.completed, summary.failed) == (24, 0)
    assert summary.usage.calls == 0 and summary.usage.cache_hits > 0  # every request is one made before
    store = RunStore(run_dir)
    before_methods = sorted(p.name.removesuffix(".jsonl.gz") for p in (BEFORE / "results").iterdir())
    assert set(store.methods()) == set(before_methods) | ADDED_METHODS
    for method in before_methods:
        expected = gzip.decompress((BEFORE / "results" / f"{method}.jsonl.gz").read_bytes())
        assert _same_lines(store.results_path(method).read_bytes(), expected), method
        before, after = _outcomes(BEFORE / "outcomes" / f"{method}.jsonl"), _outcomes(store.outcomes_path(method))
        assert set(after) == set(before)
        for unit, old in before.items():
            new = after[unit]
            assert set(new) - set(old) == ADDED_OUTCOME_FIELDS
            kept = set(old) - VARYING_OUTCOME_FIELDS
            assert _same_up_to_rounding({k: new[k] for k in kept}, {k: old[k] for k in kept}), (method, unit)
            assert new["headline"] == "ev_correlation"
            assert _same_up_to_rounding(new["named_scores"]["ev_correlation"], old["scores"])
            assert set(new["named_scores"]) == {"ev_correlation", "rsquared", "absolute_dev_explained",
                                                "coefficient_of_determination"}
    for method in ADDED_METHODS:  # correlation only: the embedding simulator's values only order tokens
        outcomes = _outcomes(store.outcomes_path(method)).values()
        assert len(outcomes) == 4 and all(set(o["named_scores"]) == {"ev_correlation"} for o in outcomes)
