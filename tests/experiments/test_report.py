from __future__ import annotations

import dataclasses

from experiment_helpers import make_result, ok_outcome

from neuroscribe import serialization
from neuroscribe.experiments.collection import EMBEDDED_MODEL_WARNING
from neuroscribe.experiments.report import build_report
from neuroscribe.experiments.store import RunStore
from neuroscribe.records import UnitId


def test_report_shows_means_coverage_histograms_failures_and_the_model(synthetic_run, tmp_path):
    run = synthetic_run("r", {"a+all_at_once": [0.8, 0.4, None, 0.1],
                              "random_explanation+all_at_once": [0.0, 0.1, -0.1, 0.05]},
                        controls=("random_explanation+all_at_once",))
    report = build_report([run])
    a = next(m for m in report.methods if m.method_id == "a+all_at_once")
    assert a.top_and_random.n == 3 and a.n_units == 4 and a.n_failed == 1
    assert abs(a.top_and_random.mean - (0.8 + 0.4 + 0.1) / 3) < 1e-12
    assert a.above_good.mean == 1 / 3
    assert a.failures == [("explain: backend down", 1)]
    text = report.to_text()
    assert EMBEDDED_MODEL_WARNING in text
    assert "3 / 4 (1 failed)" in text
    assert "random_explanation+all_at_once (control)" in text
    assert "layer   0  n=3" in text
    assert "1 x explain: backend down" in text
    assert "hf embedded" in text
    png = report.plot(tmp_path / "scores.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_method_not_above_its_control_under_the_same_scorer_is_said_plainly(synthetic_run):
    run = synthetic_run("n", {"a+embedding": [0.1, 0.2, None], "random_explanation+embedding": [0.3, 0.2, 0.9],
                              "a+all_at_once": [0.5, 0.5, 0.5], "random_explanation+all_at_once": [0.1, 0.1, 0.1]},
                        controls=("random_explanation+embedding", "random_explanation+all_at_once"))
    notes = [n for n in build_report([run]).notes if "does not score above" in n]
    assert notes == ["a+embedding does not score above the control random_explanation+embedding on the 2 units both "
                     "scored (mean 0.150 vs 0.250): on these units its scores do not tell its explanations from the "
                     "control's."]


def test_compare_published_reads_the_published_explanation_files(synthetic_run, tmp_path):
    mirror = tmp_path / "mirror"
    published = {0: 0.5, 1: 0.2, 2: 0.9}
    for index, score in published.items():
        path = mirror / "neuron-explainer" / "data" / "explanations" / "0" / f"{index}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(serialization.dumps(make_result(UnitId(0, index), f"published {index}", score)) + "\n")
    run = synthetic_run("p", {"a+all_at_once": [0.4, 0.1, 0.7, 0.3]}, model="gpt-4",
                        records={"dataset": "gpt2-xl", "data_root": str(mirror)})
    report = build_report([run], compare_with_published=True)
    (comparison,) = report.comparisons
    assert [(r.unit, r.ours, r.published) for r in comparison.rows] == [
        ((0, 0), 0.4, 0.5), ((0, 1), 0.1, 0.2), ((0, 2), 0.7, 0.9)]
    assert comparison.rows[0].published_explanation == "published 0"
    assert [unit for unit, _ in comparison.missing] == [(0, 3)]
    assert comparison.correlation is not None and comparison.correlation > 0.9
    assert abs(comparison.mean_difference - (-0.1 - 0.1 - 0.2) / 3) < 1e-12
    text = report.to_text()
    assert "| 0/2 | 0.700 | 0.900 |" in text
    assert EMBEDDED_MODEL_WARNING not in text


def test_negative_calibration_slopes_are_flagged_and_uncalibrated_means_shown(synthetic_run):
    run = synthetic_run("c", {"a+all_at_once": []})
    store = RunStore(run)
    for index, (calibrated, raw, slope) in enumerate([(0.9, -0.9, -2.0), (0.5, 0.5, 1.5), (0.7, 0.7, 0.8)]):
        unit = UnitId(0, index)
        outcome = ok_outcome(unit, calibrated)
        named = {**outcome.named_scores, "uncalibrated_ev_correlation": {"top_and_random": raw},
                 "calibration_slope": {"all": slope}}
        store.append("a+all_at_once", dataclasses.replace(outcome, named_scores=named),
                     make_result(unit, f"explanation {index}", calibrated))
    report = build_report([run])
    text = report.to_text()
    assert "a+all_at_once: 1 of 3 units were calibrated with a negative slope" in text
    method = report.methods[0]
    assert abs(method.all_scores["uncalibrated_ev_correlation"]["top_and_random"].mean - 0.1) < 1e-12
    assert abs(method.all_scores["ev_correlation"]["top_and_random"].mean - 0.7) < 1e-12


def test_coverage_counts_planned_units_not_only_attempted_ones(word_dataset, tmp_path):
    from neuroscribe.experiments import build_leaderboard, config_from_dict, run_experiment
    from word_units import scripted_config

    data = scripted_config(word_dataset, score_split="valid")
    data["explainers"][0]["options"]["n_candidates"] = 1
    run_experiment(config_from_dict(data), tmp_path / "run", shard="0/2")  # one of the two units attempted
    report = build_report([tmp_path / "run"])
    method = next(m for m in report.methods if m.method_id == "token_activation_pair+all_at_once")
    assert (method.n_units, method.n_attempted) == (2, 1)
    assert f"| {method.top_and_random.n} / 2 (1 not attempted) |" in report.to_text()
    row = next(r for r in build_leaderboard([tmp_path / "run"]).rows
               if r.method_id == "token_activation_pair+all_at_once")
    assert row.n_planned == 2 and row.coverage <= 0.5 and row.below_coverage


def test_an_undefined_score_carries_its_reason_into_outcomes_and_report(word_dataset, tmp_path):
    from neuroscribe.experiments import RunStore, config_from_dict, run_experiment
    from word_units import scripted_config

    data = scripted_config(word_dataset)
    data["backends"]["default"]["options"]["responder"] = "explanation_following:predicts_nothing"
    run_experiment(config_from_dict(data), tmp_path / "run")
    outcomes = RunStore(tmp_path / "run").outcomes("token_activation_pair+all_at_once")
    for outcome in outcomes.values():
        assert outcome.status == "ok" and outcome.scores["top_and_random"] is None
        assert "constant" in outcome.undefined["ev_correlation"]["top_and_random"]
    text = build_report([tmp_path / "run"]).to_text()
    section = text[text.index("## Undefined scores"):text.index("## Model use")]
    assert "token_activation_pair+all_at_once: 2 units" in section and "constant" in section
