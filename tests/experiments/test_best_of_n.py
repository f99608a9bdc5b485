"""Best-of-n the honest way: every candidate scored on the selection split, the best kept, the method's
scores from another split that played no part in the choice, and every candidate kept in the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

import explanation_following
from neuroscribe.errors import ConfigError
from neuroscribe.experiments import RunStore, config_from_dict, make_plan, run_experiment
from neuroscribe.records import SliceParams, UnitId, split_records
from word_units import WORDS, scripted_config, unit_record


def test_every_candidate_is_kept_and_the_pick_is_reported_on_the_test_split_only(word_dataset: Path,
                                                                                tmp_path: Path) -> None:
    explanation_following.SIMULATED.clear()
    summary = run_experiment(config_from_dict(scripted_config(word_dataset)), tmp_path / "run")
    assert summary.failed == 0
    store = RunStore(tmp_path / "run")
    outcomes = store.outcomes("token_activation_pair+all_at_once")
    params = SliceParams(n_examples_per_split=2)
    for index, word in WORDS.items():
        outcome = outcomes[UnitId(0, index)]
        assert len(outcome.candidates) == 4
        assert outcome.selection["split"] == "valid"
        chosen = [c for c in outcome.candidates if c.chosen]
        assert [c.explanation for c in chosen] == [f"the word {word}"] == [outcome.explanation]
        right = chosen[0].selection_score
        assert right is not None and right > 0.5
        assert all(c.selection_score is None or c.selection_score < right for c in outcome.candidates if not c.chosen)
        splits = split_records(unit_record(index), params)
        valid = [tuple(t.strip() for t in r.tokens) for r in splits.valid.all]
        test = [tuple(t.strip() for t in r.tokens) for r in splits.test.all]
        for candidate in outcome.candidates:  # every candidate judged on the selection split, and only there ...
            line = f"Explanation: the main thing this neuron does is respond to {candidate.explanation}."
            judged = explanation_following.SIMULATED[line]
            assert sorted(judged[:len(valid)]) == sorted(valid)
            assert (set(judged) - set(valid)) == (set(test) if candidate.chosen else set())
        result = store.results("token_activation_pair+all_at_once")[UnitId(0, index)]
        scored = result.scored_explanations[0].scored_simulation.scored_sequence_simulations
        assert [tuple(t.strip() for t in s.simulation.tokens) for s in scored] == test  # ... the pick on test


def test_choosing_on_the_scored_split_is_refused(word_dataset: Path) -> None:
    with pytest.raises(ConfigError, match="score_split = 'test'"):
        config_from_dict(scripted_config(word_dataset, score_split="valid"))


def test_the_selection_scorer_must_exist_and_the_plan_counts_its_calls(word_dataset: Path) -> None:
    data = scripted_config(word_dataset)
    data["explainers"][0]["select"] = {"scorer": "all_at_onse"}  # type: ignore[index]
    with pytest.raises(ConfigError, match="did you mean 'all_at_once'"):
        config_from_dict(data)
    single = scripted_config(word_dataset)
    single["explainers"][0]["options"]["n_candidates"] = 1  # type: ignore[index]
    best_of_4, one = make_plan(config_from_dict(scripted_config(word_dataset))), make_plan(config_from_dict(single))
    scoring = one.model_calls - 2  # less 2 units x 1 explanation call
    assert best_of_4.model_calls - one.model_calls == 4 * scoring  # each unit's 4 candidates scored once more


def test_the_report_says_how_explanations_were_chosen(word_dataset: Path, tmp_path: Path) -> None:
    from neuroscribe.experiments import build_report

    run_experiment(config_from_dict(scripted_config(word_dataset)), tmp_path / "run")
    text = build_report([tmp_path / "run"]).to_text()
    assert ("token_activation_pair+all_at_once: each explanation chosen from 4.0 candidates (mean) by all_at_once "
            "ev_correlation top_and_random on the valid split, never used for the scores shown here") in text
