"""Every built-in scorer and simulator in one quickstart-style config (experiments/scorers.toml), run end to
end on the embedded model in process and on a llama.cpp server over HTTP; results, report, leaderboard and
viewer show their numbers.

The embedded model judges badly, so what is checked is that each method either scores a unit with numbers
that add up or fails it with a counted reason, and that every surface shows what the run computed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from neuroscribe.experiments import RunStore, build_leaderboard, build_report, config_from_dict, run_experiment
from neuroscribe.viewer.build import build_site

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCORES = {"detection": "detection_balanced_accuracy", "fuzzing": "fuzzing_balanced_accuracy",
          "intruder": "intruder_accuracy", "all_at_once": "ev_correlation", "generated_logprobs": "ev_correlation"}
BACKENDS = {
    "hf": {"type": "hf", "model": "embedded", "transport": {"max_concurrency": 1}},
    "llamacpp": {"type": "llamacpp", "model": "embedded", "context_length": 2048,
                 "options": {"parallel": 2, "threads": 1}, "transport": {"max_concurrency": 2}},
}


def scorers_config(dataset: Path, cache: Path, backend: dict[str, Any]) -> dict[str, Any]:
    """experiments/scorers.toml on the tiny collected dataset, with fewer, shorter examples (2 cores)."""
    data = tomllib.loads((REPO / "experiments" / "scorers.toml").read_text(encoding="utf-8"))
    del data["records"]["collect"]
    data["units"] = {"refs": ["0/0", "0/1"]}
    data["records"].update(dataset=str(dataset), n_per_split=1)
    data["backends"] = {"default": backend}
    data["explainers"][0]["options"]["max_tokens"] = 16
    for scorer in data["scorers"]:
        # the tiny dataset's excerpts reach little of each unit's max: activating above 5% of it
        scorer["options"].update(n_quantiles=2, n_worked_examples=1, activation_threshold=0.05, allow_fewer=True)
        if scorer["name"] == "intruder":
            scorer["options"].update(n_groups_per_quantile=1, group_size=3)
        else:
            scorer["options"].update(n_per_quantile=1, n_non_activating=2)
    data["run"].update(cache_dir=str(cache), progress=False, max_concurrent_units=1)
    return data


@pytest.mark.parametrize("backend", list(BACKENDS), ids=list(BACKENDS))
def test_every_scorer_runs_end_to_end(backend: str, collected_dataset: Path, tmp_path: Path) -> None:
    config = config_from_dict(scorers_config(collected_dataset, tmp_path / "cache", BACKENDS[backend]))
    run = tmp_path / "run"
    summary = run_experiment(config, run, progress=False)
    store = RunStore(run)
    assert summary.completed + summary.failed == 2 * len(config.method_ids())
    assert "intruder" in config.method_ids()  # explanation-free: one method, not one per explanation source
    ok_scores: dict[str, list[float | None]] = {}
    for method in config.method_ids():
        scorer = method.rpartition("+")[2]
        for unit, outcome in store.outcomes(method).items():
            if outcome.status == "failed":
                assert outcome.stage and outcome.reason  # a failure is counted with its reason, never a score
                assert not outcome.named_scores and unit not in store.results(method)
                continue
            assert outcome.headline == SCORES[scorer], method
            value = outcome.named_scores[SCORES[scorer]]
            assert all(v is None or -1.0 <= v <= 1.0 for v in value.values())
            ok_scores.setdefault(scorer, []).append(next(iter(value.values())))
            assert unit in store.results(method)
    assert set(SCORES) <= set(ok_scores), ok_scores  # each scored a unit
    report = build_report([run]).to_text()
    board_ids = set()
    for scorer in ok_scores:
        assert f"· {SCORES[scorer]}:" in report
        board = build_leaderboard([run], score=SCORES[scorer])
        board_ids |= {row.method_id for row in board.rows}
    assert board_ids == {m for m in config.method_ids() if m.rpartition("+")[2] in ok_scores}
    grid = build_leaderboard([run]).grid  # method x scorer: every scorer a column (or a unit property), scored or not
    assert ({c.scorer for c in grid.columns} | {p.scorer for p in grid.unit_properties}
            == {m.rpartition("+")[2] for m in config.method_ids()})
    site = build_site(run, tmp_path / "site")
    unit_page = (tmp_path / "site" / "units" / "mlp_neuron" / "0" / "0.html").read_text(encoding="utf-8")
    assert site.index_path.is_file()
    for scorer in ok_scores:
        assert SCORES[scorer] in unit_page
