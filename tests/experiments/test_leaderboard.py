from __future__ import annotations

import numpy as np
import pytest

from neuroscribe.errors import ConfigError
from neuroscribe.experiments.collection import EMBEDDED_MODEL_WARNING
from neuroscribe.experiments.leaderboard import build_leaderboard
from neuroscribe.experiments.store import RunStore, UnitOutcome
from neuroscribe.records import NeuronId, UnitId
from neuroscribe.results import ExplanationScores


def test_identical_methods_tie(synthetic_run):
    scores = list(np.linspace(-0.2, 0.8, 12))
    run = synthetic_run("tie", {"a+all_at_once": scores, "b+all_at_once": list(scores)})
    board = build_leaderboard([run])
    first, second = board.rows
    assert first.score.mean == second.score.mean
    assert second.vs_best is not None
    assert second.vs_best.mean_difference == 0.0
    assert second.vs_best.p_value == 1.0


def test_a_clearly_better_method_wins_with_small_p(synthetic_run):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.5, size=30)
    better = base + 0.15 + rng.normal(0, 0.03, size=30)
    run = synthetic_run("win", {"weak+all_at_once": list(base), "strong+all_at_once": list(better),
                                "random_explanation+all_at_once": list(rng.uniform(-0.1, 0.1, size=30))},
                        controls=("random_explanation+all_at_once",))
    board = build_leaderboard([run])
    assert board.best == "strong+all_at_once"
    ranked = [row.method_id for row in board.rows]
    assert ranked[0] == "strong+all_at_once"
    weak = next(row for row in board.rows if row.method_id == "weak+all_at_once")
    assert weak.vs_best is not None and weak.vs_best.p_value is not None
    assert weak.vs_best.p_value < 0.05
    assert weak.vs_best.high is not None and weak.vs_best.high < 0
    control = next(row for row in board.rows if row.is_control)
    assert control.method_id == "random_explanation+all_at_once"


def test_failures_are_missing_not_zero_and_coverage_is_shown(synthetic_run):
    run = synthetic_run("cov", {"a+x": [0.5, None, 0.7], "b+x": [0.1, 0.2, 0.3]})
    board = build_leaderboard([run])
    a = next(row for row in board.rows if row.method_id == "a+x")
    assert a.score.mean == 0.6 and a.score.n == 2 and a.n_planned == 3 and a.n_failed == 1
    markdown = board.to_markdown()
    assert "2 / 3 (67%), 1 failed" in markdown
    assert EMBEDDED_MODEL_WARNING in markdown
    html = board.to_html()
    assert "<table>" in html and "a+x" in html and "SmolLM2-135M" in html


def test_shards_of_one_config_merge(synthetic_run):
    one = synthetic_run("shard0", {"a+x": [0.5, 0.1]}, config_hash="same")
    two = synthetic_run("shard1", {"a+x": [None, 0.3, 0.9]}, config_hash="same")
    board = build_leaderboard([one, two])
    (row,) = board.rows
    # unit 0: ok in shard0 wins over failed in shard1; units 1, 2 from shard1 (unit 1 present in both: ok kept)
    assert row.n_planned == 3
    assert row.n_failed == 0


def test_a_method_that_fails_on_the_hard_units_does_not_outrank_one_that_does_not(synthetic_run):
    # 12 units, hardest last: both methods score the same on the easy two thirds; A fails on the hard third,
    # so its mean over its own units (0.65) beats B's over all units (0.47), but not on the units both scored
    easy = list(np.linspace(0.5, 0.8, 8))
    hard = [0.1, 0.12, 0.15, 0.08]
    run = synthetic_run("hard", {"A+sim": [*easy, None, None, None, None], "B+sim": [*easy, *hard]})
    board = build_leaderboard([run])
    rows = {row.method_id: row for row in board.rows}
    assert [row.method_id for row in board.rows] == ["B+sim", "A+sim"]
    assert rows["A+sim"].own.mean is not None and rows["B+sim"].own.mean is not None
    assert rows["A+sim"].own.mean > rows["B+sim"].own.mean  # the naive ranking would put A first
    assert rows["A+sim"].below_coverage and not rows["B+sim"].below_coverage
    assert board.n_common == 12 and rows["A+sim"].score.n == 8
    markdown = board.to_markdown()
    assert "on the 12 units that every ranked method scored" in markdown
    assert "8 / 12 (67%), 4 failed — below 90%, flagged" in markdown
    # with the threshold lowered, both are ranked on the 8 units both scored, where they tie: still not A first
    lenient = build_leaderboard([run], min_coverage=0.5)
    assert lenient.n_common == 8
    first, second = lenient.rows
    assert first.score.mean == second.score.mean and first.method_id == "B+sim"
    assert second.vs_best is not None and second.vs_best.n == 8 and second.vs_best.mean_difference == 0.0


def test_rank_by_any_named_score_and_variant(synthetic_run):
    run = synthetic_run("named", {"a+x": [0.1, 0.2, 0.3], "b+x": [0.3, 0.4, 0.5]})
    by_random_only = build_leaderboard([run], score="ev_correlation.random_only")
    assert str(by_random_only.score) == "ev_correlation.random_only"
    assert by_random_only.rows[0].method_id == "b+x"
    assert by_random_only.rows[0].score.mean == pytest.approx(0.2)  # the helpers' random-only is half the main
    with pytest.raises(ConfigError, match="has a score 'detection'; scores found: ev_correlation"):
        build_leaderboard([run], score="detection.auc")


def test_every_source_under_every_scorer_on_each_columns_common_units(tmp_path):
    def outcome(index: int, name: str, value: float | None, **more: float) -> UnitOutcome:
        unit = UnitId(0, index)
        if value is None:
            return UnitOutcome(unit=unit, status="failed", stage="parse", reason="prose")
        variants = {"all": value, **more}
        return UnitOutcome(unit=unit, status="ok", explanation="x", scores=variants, named_scores={name: variants},
                           headline=name)

    table = {  # method -> (score name, per-unit values); b fails detection on unit 2, so detection rests on 0, 1
        "a+detection": ("detection_balanced_accuracy", [0.9, 0.7, 0.2]),
        "b+detection": ("detection_balanced_accuracy", [0.5, 0.5, None]),
        "a+fuzzing": ("fuzzing_balanced_accuracy", [0.6, 0.6, 0.6]),
        "intruder": ("intruder_accuracy", [1.0, 0.0, 0.5]),
    }
    store = RunStore(tmp_path / "run")
    store.create()
    store.write_manifest({"config": {"name": "grid", "records": {}}, "config_hash": "grid", "methods": list(table),
                          "controls": ["b+detection"], "backends": {"default": {"type": "openai", "model": "m"}}})
    for method, (name, values) in table.items():
        for index, value in enumerate(values):
            more = {"chance": 0.25} if method == "intruder" else {}
            done = outcome(index, name, value, **more)
            result = None if value is None else ExplanationScores(
                neuron_id=NeuronId.from_unit(done.unit), explanation="x", scorer=method.rpartition("+")[2],
                scores=dict(done.named_scores), examples=[])
            store.append(method, done, result)
    board = build_leaderboard([store.path], score="detection_balanced_accuracy")
    grid = board.grid
    assert grid.sources == ("a", "b") and grid.controls == {"b"}
    detection, fuzzing = grid.columns
    assert (detection.scorer, detection.score) == ("detection", "detection_balanced_accuracy.all")
    assert detection.n_common == 2
    assert detection.cells["a"].estimate.mean == pytest.approx(0.8)  # units 0 and 1 only (0.6 over all three)
    assert detection.cells["a"].n_scored == 3 and detection.cells["b"].n_scored == 2
    assert fuzzing.n_common == 3 and "b" not in fuzzing.cells
    (intruder,) = grid.unit_properties
    assert intruder.variants["all"].mean == pytest.approx(0.5) and intruder.variants["chance"].mean == 0.25
    markdown = board.to_markdown()
    assert "| source | detection: detection_balanced_accuracy.all (on 2 common units) | fuzzing:" in markdown
    assert "| b (control) | 0.500 [0.500, 0.500] (scored 2 / 3) | not run |" in markdown
    assert "intruder: intruder_accuracy over 3 / 3 units: all 0.500" in markdown and "chance 0.250" in markdown
    assert "Every source under every scorer" in board.to_html()
