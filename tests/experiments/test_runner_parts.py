"""The runner's model-free parts: shards, random-explanation partners, the dry-run plan, look-up tables."""

from __future__ import annotations

import pytest

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.experiments.config import config_from_dict
from neuroscribe.experiments.evidence import split_disjointness, token_lookup_table
from neuroscribe.experiments.plan import Shard, make_plan
from neuroscribe.experiments.sources import random_partners
from neuroscribe.records import ActivationRecord, TokenPairRecord, UnitId


def test_shards_partition_the_units():
    units = [UnitId(0, i) for i in range(10)]
    parts = [Shard.parse(f"{i}/3").select(units) for i in range(3)]
    assert sorted(u for part in parts for u in part) == units
    assert not set(parts[0]) & set(parts[1])
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="shard"):
            Shard.parse(bad)


def test_random_partners_are_a_seeded_derangement():
    units = [UnitId(layer, index) for layer in range(3) for index in range(5)]
    partners = random_partners(units, seed=1)
    assert set(partners) == set(units) and set(partners.values()) == set(units)
    assert all(partners[u] != u for u in units)
    assert partners == random_partners(list(reversed(units)), seed=1)
    assert random_partners(units, seed=2) != partners
    assert random_partners(units[:1], seed=1) == {}


def test_dry_run_plan_counts_calls_and_cost(tmp_path):
    config = config_from_dict({
        "name": "plan",
        "units": {"refs": ["1/1", "1/2", "2/3"]},
        "records": {"dataset": "gpt2-xl", "n_per_split": 5},
        "backends": {"default": {"type": "openai", "model": "gpt-4", "price_per_million_prompt_tokens": 30.0,
                                 "price_per_million_completion_tokens": 60.0}},
        "explainers": [{"name": "token_activation_pair"}],
        "simulators": [{"name": "all_at_once"}],
    })
    plan = make_plan(config, tmp_path / "new-run")
    assert plan.pending == {"token_activation_pair+all_at_once": 3, "random_explanation+all_at_once": 3}
    # 3 explanations + 3 units x 2 methods x 10 scored excerpts
    assert plan.model_calls == 3 + 60
    assert plan.cost_usd > 0
    text = plan.to_text()
    assert "estimated model calls: 63" in text and "1/1, 1/2, 2/3" in text
    assert make_plan(config, tmp_path / "new-run", Shard(1, 2)).units == (UnitId(1, 2),)
    with_lookup = config_from_dict({**config.to_json_obj(), "backends": {"default": {"model": "embedded"}},
                                    "controls": {"token_lookup": True}})
    assert make_plan(with_lookup).model_calls == 3 + 3 + 3 * 3 * 10


def test_the_manifest_says_how_splits_are_kept_apart(tmp_path):
    def config(dataset, disjoint=False):
        return config_from_dict({"name": "d", "units": {"refs": ["0/0"]},
                                 "records": {"dataset": str(dataset), "disjoint": disjoint},
                                 "backends": {"default": {"model": "embedded"}},
                                 "explainers": [{"name": "token_activation_pair"}],
                                 "simulators": [{"name": "all_at_once"}]})

    collected, older = tmp_path / "collected", tmp_path / "older"
    for directory, manifest in ((collected, '{"has_excerpt_sources": true}'), (older, "{}")):
        directory.mkdir()
        (directory / "dataset.json").write_text(manifest)
    assert split_disjointness(config(collected), str(collected)) == "documents"
    assert split_disjointness(config(collected, True), str(collected)) == "documents"
    assert split_disjointness(config(older), str(older)) == "none (the dataset has no document ids)"
    assert split_disjointness(config("gpt2-xl", True), "gpt2-xl") == "tokens (the dataset has no document ids)"


def test_token_lookup_table_averages_per_token():
    records = [ActivationRecord(tokens=["a", "b", "a"], activations=[1.0, 0.0, 3.0]),
               ActivationRecord(tokens=["b", "c"], activations=[2.0, 9.0])]
    table = token_lookup_table(records, size=5, min_count=2)
    assert table.tokens == ["a", "b"] and table.average_activations == [2.0, 1.0]


def test_token_lookup_table_refuses_token_pairs():
    """An attention head's values are per (query, key) pair: zipped with the tokens they would mean nothing."""
    pairs = TokenPairRecord(tokens=["a", "b"], activations=[1.0, 5.0, 0.0])
    with pytest.raises(DataError, match="attention heads have no look-up table"):
        token_lookup_table([pairs])


def test_what_a_failed_explanation_cost_is_counted_once(word_dataset, tmp_path):
    from neuroscribe.experiments import RunStore, config_from_dict, run_experiment
    from word_units import scripted_config

    data = scripted_config(word_dataset, score_split="valid")
    data["explainers"][0]["options"]["n_candidates"] = 1
    data["backends"]["default"]["options"]["responder"] = "explanation_following:unreadable_explanations"
    data["simulators"].append({"name": "all_at_once", "id": "second", "options": {"n_worked_examples": 0}})
    summary = run_experiment(config_from_dict(data), tmp_path / "run")
    assert summary.completed == 0 and summary.failed == 4  # 2 units x 2 scorers, all at 'explain'
    store = RunStore(tmp_path / "run")
    per_unit = {}
    for method in ("token_activation_pair+all_at_once", "token_activation_pair+second"):
        for unit, outcome in store.outcomes(method).items():
            assert outcome.stage == "explain"
            per_unit[unit] = per_unit.get(unit, 0) + outcome.usage.prompt_tokens
    assert per_unit and all(tokens == 100 for tokens in per_unit.values())  # one explanation call per unit
    assert summary.usage.prompt_tokens == 100 * len(per_unit)


def test_an_infinite_activation_the_explainer_would_see_fails_the_unit_with_where(tmp_path):
    import json

    from neuroscribe.experiments import RunStore, config_from_dict, run_experiment
    from neuroscribe.serialization import to_json_obj
    from word_units import scripted_config, unit_record

    root = tmp_path / "words"
    (root / "collated-activations" / "0").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"subject_model": "synthetic", "unit_kind": "mlp_neuron"}))
    for index in (0, 1):
        record = unit_record(index)
        if index == 0:
            record.most_positive_activation_records[4].activations[1] = float("inf")  # train split: 0, 4, ...
        (root / "collated-activations" / "0" / f"{index}.json").write_text(json.dumps(to_json_obj(record)))
    data = scripted_config(root, score_split="valid")
    data["explainers"][0]["options"]["n_candidates"] = 1
    data["controls"] = {"random_explanation": False}
    run_experiment(config_from_dict(data), tmp_path / "run")
    outcomes = RunStore(tmp_path / "run").outcomes("token_activation_pair+all_at_once")
    failed = outcomes[UnitId(0, 0)]
    assert failed.status == "failed" and failed.stage == "records"
    assert "excerpt 1 of the explaining (train) split has a non-finite activation" in failed.reason
    assert "at position 1" in failed.reason
    assert outcomes[UnitId(0, 1)].status == "ok"
