"""Fixtures for experiment tests: run directories filled with synthetic outcomes (no models), a tiny
collection, and the quickstart replayed from its recorded answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from experiment_helpers import make_result, ok_outcome
from quickstart_replay import quickstart_replay_config

from neuroscribe.experiments import RunSummary, run_experiment
from neuroscribe.experiments.store import RunStore, UnitOutcome
from neuroscribe.records import UnitId

SyntheticRun = Callable[..., Path]


@pytest.fixture
def synthetic_run(tmp_path: Path) -> SyntheticRun:
    """Make a run directory whose methods have the given per-unit scores (None = failed unit)."""

    def make(name: str, scores: Mapping[str, list[float | None]], *, controls: tuple[str, ...] = (),
             model: str = "embedded", config_hash: str | None = None,
             records: Mapping[str, str] | None = None) -> Path:
        store = RunStore(tmp_path / name)
        store.create()
        store.write_manifest({
            "config": {"name": name, "records": dict(records or {})}, "config_hash": config_hash or name,
            "methods": list(scores),
            "controls": list(controls), "backends": {"default": {"type": "hf", "model": model}},
        })
        for method_id, values in scores.items():
            for index, value in enumerate(values):
                unit = UnitId(0, index)
                if value is None:
                    store.append(method_id, UnitOutcome(unit=unit, status="failed", reason="backend down",
                                                        stage="explain"), None)
                else:
                    store.append(method_id, ok_outcome(unit, value, value / 2),
                                 make_result(unit, f"explanation {index}", value))
        return store.path

    return make


@pytest.fixture(scope="session")
def collected_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two MLP neurons of the embedded model, collected on a slice of the embedded corpus (8-token excerpts).

    Small on purpose: every end-to-end test explains and simulates these two units. 12,288 tokens span 27
    documents, so each unit's random sample can come from documents other than those of its top excerpts.
    """
    from neuroscribe.datasets.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("experiments") / "dataset"
    return collect(CollectConfig(out_dir=out, layers=(0,), indices=(0, 1), excerpt_tokens=8, max_tokens=12288,
                                 top_k=8, n_random=6, n_quantiles=2, n_per_quantile=2, quantile_pool=16,
                                 lookup_tokens=10, progress=False))


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunSummary]:
    """experiments/quickstart.toml run on the dataset of tests/data/quickstart-before and replayed from its
    response cache (no collection, no model call; see its PROVENANCE.md): the run directory and the summary."""
    base = tmp_path_factory.mktemp("quickstart")
    summary = run_experiment(quickstart_replay_config(base), base / "run", progress=False)
    return base / "run", summary

