"""`--repeats N`: the same units and records run again with other sampling seeds, the cache keyed by seed, and
the report and leaderboard showing per-unit spreads and intervals that include the seed noise."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

import explanation_following
from neuroscribe.errors import ConfigError
from neuroscribe.experiments import RunStore, build_leaderboard, build_report, config_from_dict, run_experiment
from neuroscribe.records import UnitId
from word_units import scripted_config

METHOD = "token_activation_pair+all_at_once"


def sampled(dataset: Path) -> dict[str, object]:
    data = scripted_config(dataset, score_split="valid")
    data["explainers"][0]["options"]["n_candidates"] = 1  # type: ignore[index]
    data["controls"] = {"random_explanation": True}
    return data


def test_three_repeats_give_per_unit_spreads(word_dataset: Path, tmp_path: Path) -> None:
    explanation_following.EXPLAINER_SEEDS.clear()
    run = tmp_path / "run"
    summary = run_experiment(config_from_dict(sampled(word_dataset)), run, repeats=3)
    assert summary.repeats == 3 and summary.failed == 0 and summary.completed == 3 * 2 * 2
    stores = [RunStore(run), RunStore(run / "repeats" / "1"), RunStore(run / "repeats" / "2")]
    assert not (run / "repeats" / "1" / "cache").exists()  # one response cache, keyed by the seed
    assert len(set(explanation_following.EXPLAINER_SEEDS)) == 3  # each repeat sampled with its own seed
    manifests = [json.loads(s.manifest_path.read_text()) for s in stores]
    assert [m["config"]["repeat"] for m in manifests] == [0, 1, 2]
    assert len({tuple(m["units"]) for m in manifests}) == 1  # the same units in every repeat
    by_repeat = [s.outcomes(METHOD) for s in stores]
    explanations = {u: [o[u].explanation for o in by_repeat] for u in by_repeat[0]}
    assert any(len(set(e)) > 1 for e in explanations.values())  # the repeats did sample differently

    report = build_report([run])
    spread = next(s for s in report.spreads if s.method_id == METHOD)
    for unit, values in spread.per_unit.items():
        expected = [o[UnitId(unit[0], unit[1])].scores["top_and_random"] for o in by_repeat]
        assert list(values) == expected
        defined = [v for v in expected if v is not None]
        assert spread.spreads[unit] == (pytest.approx(statistics.stdev(defined)) if len(defined) > 1 else None)
    text = report.to_text()
    assert "## Run-to-run spread (3 repeats" in text and "score in each repeat" in text
    board = build_leaderboard([run])
    assert any("mean over 3 repeats" in note for note in board.notes)
    row = next(r for r in board.rows if r.method_id == METHOD)
    assert row.score.mean == pytest.approx(spread.over_repeats.mean)


def test_a_second_call_resumes_every_repeat_and_repeat_is_not_set_by_hand(word_dataset: Path,
                                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_experiment(config_from_dict(sampled(word_dataset)), run, repeats=2)
    again = run_experiment(config_from_dict(sampled(word_dataset)), run, repeats=2)
    assert again.completed == 0 and again.already_done == 2 * 2 * 2
    with pytest.raises(ConfigError, match="repeat"):
        run_experiment(config_from_dict({**sampled(word_dataset), "repeat": 1}), run)


@pytest.mark.slow
def test_repeats_read_the_collection_of_repeat_0(tmp_path: Path) -> None:
    data = sampled(tmp_path)
    data["records"] = {"n_per_split": 1, "collect": {"options": {
        "model": "embedded", "corpus": "embedded", "excerpt_tokens": 8, "max_tokens": 8192, "top_k": 4, "n_random": 3,
        "n_quantiles": 2, "n_per_quantile": 2, "quantile_pool": 16, "lookup_tokens": 0, "progress": False}}}
    data["units"] = {"refs": ["0/3", "0/4"]}
    run = tmp_path / "run"
    run_experiment(config_from_dict(data), run, repeats=2)
    assert (run / "dataset" / "dataset.json").is_file()
    assert not (run / "repeats" / "1" / "dataset").exists()
    manifest = json.loads(RunStore(run / "repeats" / "1").manifest_path.read_text())
    assert manifest["config"]["records"]["collect"]["out"] == str(run / "dataset")
    assert RunStore(run / "repeats" / "1").outcomes(METHOD)
