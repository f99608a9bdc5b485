from __future__ import annotations

from pathlib import Path

import pytest

from neuroscribe.errors import ConfigError
from neuroscribe.experiments.config import config_from_dict, load_config
from neuroscribe.records import UnitId

REPO = Path(__file__).resolve().parents[2]


def minimal(**extra):
    data = {
        "name": "t",
        "units": {"refs": ["1/1", "0/3"]},
        "records": {"dataset": "gpt2-xl"},
        "explainers": [{"name": "token_activation_pair"}],
        "simulators": [{"name": "all_at_once"}],
    }
    data.update(extra)
    return data


def test_minimal_config_resolves_units_and_methods():
    config = config_from_dict(minimal())
    assert config.units.resolve(config.seed) == [UnitId(0, 3), UnitId(1, 1)]
    assert config.method_ids() == ["token_activation_pair+all_at_once", "random_explanation+all_at_once"]
    assert config.backends["default"].spec.model == "embedded"


@pytest.mark.parametrize(("data", "message"), [
    (minimal(unitz={}), "unknown key 'unitz' in the top level (did you mean 'units'?)"),
    (minimal(records={"datset": "x"}), "unknown key 'datset' in [records] (did you mean 'dataset'?)"),
    (minimal(records={"dataset": "x", "n_per_split": "five"}), "records.n_per_split must be int"),
    (minimal(records={"dataset": "x", "score_split": "train"}), "score_split 'train' is not one of valid, test"),
    (minimal(units={"refs": ["1-1"]}), "'1-1' is not 'layer/index'"),
    (minimal(simulators=[{"name": "all_at_once", "backend": "gtp4"}]), "backend 'gtp4' is not defined"),
    (minimal(simulators=[{"name": "all_at_once", "calibration": "linaer"}]), "Did you mean 'linear'?"),
    (minimal(backends={"default": {"modle": "x"}}), "'modle' in [backends.default] (did you mean 'model'?)"),
    (minimal(backends={"default": {"transport": {"timeout": 3}}}), "(did you mean 'timeout_s'?)"),
    (minimal(units={"refs": ["1/1"], "kind": "mlp"}), "'mlp' is not one of mlp_neuron"),
    (minimal(explainers=[{"name": "token_activation_pair"}, {"name": "token_activation_pair"}]), "occur twice"),
    (minimal(explainers=[]), "no [[explainers]]"),
])
def test_config_errors_name_the_key_and_the_fix(data, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    assert message in str(error.value)


def test_overrides_are_toml_values_and_validated():
    config = config_from_dict(minimal(), [
        "units.refs=['2/2']", "records.n_per_split=2", "explainers.0.options.max_tokens=60",
        "backends.default.transport.timeout_s=3", "records.dataset=runs/x",
    ])
    assert config.units.refs == ("2/2",)
    assert config.records.n_per_split == 2
    assert config.explainers[0].options == {"max_tokens": 60}
    assert config.backends["default"].transport.timeout_s == 3.0
    assert config.records.dataset == "runs/x"
    with pytest.raises(ConfigError, match="not key=value"):
        config_from_dict(minimal(), ["records.dataset"])
    with pytest.raises(ConfigError, match="did you mean 'n_per_split'"):
        config_from_dict(minimal(), ["records.n_per_splt=3"])
    with pytest.raises(ConfigError, match="not an index below 1"):
        config_from_dict(minimal(), ["explainers.3.name=x"])


def test_hash_ignores_scheduling_but_not_protocol():
    base = config_from_dict(minimal())
    assert config_from_dict(minimal(), ["run.max_concurrent_units=1"]).config_hash() == base.config_hash()
    assert config_from_dict(minimal(), ["backends.default.transport.max_retries=0"]).config_hash() == base.config_hash()
    assert config_from_dict(minimal(), ["records.n_per_split=3"]).config_hash() != base.config_hash()


def test_seeded_sample_is_stable_and_sorted():
    data = minimal(units={"layers": [0, 1, 2], "units_per_layer": 100, "sample": 5})
    first = config_from_dict(data).units.resolve(0)
    assert first == config_from_dict(data).units.resolve(0) == sorted(first)
    assert len(first) == 5
    assert config_from_dict(data).units.resolve(1) != first


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.method_ids()


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_a_sweep_over_backends_needs_ids_and_crosses_every_explainer_with_every_simulator():
    config = config_from_dict(minimal(
        backends={"small": {"model": "embedded"}, "big": {"type": "openai", "model": "gpt-4",
                                                          "api_key_env": "OPENAI_API_KEY"}},
        explainers=[{"name": "token_activation_pair", "backend": "small", "id": "tap-small"},
                    {"name": "token_activation_pair", "backend": "big", "id": "tap-big"}],
        simulators=[{"name": "all_at_once", "backend": "small"},
                    {"name": "json", "backend": "big", "calibration": "linear"}],
        controls={"random_explanation": True, "token_lookup": True, "token_lookup_backend": "small"},
    ))
    assert config.method_ids() == [
        "tap-small+all_at_once", "tap-small+json", "tap-big+all_at_once", "tap-big+json",
        "random_explanation+all_at_once", "random_explanation+json", "token_lookup+all_at_once", "token_lookup+json",
    ]


def test_attention_heads_refuse_per_token_components_and_name_what_fits():
    heads = minimal(units={"refs": ["1/1"], "kind": "attention_head"}, simulators=[],
                    scorers=[{"name": "attention_simulation"}], controls={"token_lookup": False})
    fits = "use explainers 'attention_head' and scorers 'attention_simulation'"
    with pytest.raises(ConfigError, match=rf"\[\[explainers\]\] 'token_activation_pair' .* needs activation_records, "
                                          rf"which attention_head units cannot provide .*; for \[units\] kind = "
                                          rf"'attention_head' {fits}"):
        config_from_dict(heads)
    heads["explainers"] = [{"name": "attention_head"}]
    assert config_from_dict(heads).method_ids() == ["attention_head+attention_simulation",
                                                    "random_explanation+attention_simulation"]
    with pytest.raises(ConfigError, match=r"\[controls\] token_lookup needs token_lookup_table, .*turn off the "
                                          r"control that needs it"):
        config_from_dict({**heads, "controls": {"token_lookup": True}})
    with pytest.raises(ConfigError, match=r"'attention_simulation' .* needs token_pair_records, which mlp_neuron "
                                          r"units cannot provide"):
        config_from_dict(minimal(scorers=[{"name": "attention_simulation"}]))


def test_enum_options_are_read_from_their_toml_strings(tmp_path):
    from neuroscribe.datasets.collect import CollectConfig
    from neuroscribe.records import UnitKind
    from neuroscribe.registry import build_options

    config = build_options(CollectConfig, {"out_dir": tmp_path, "unit_kind": "attention_head"}, "[records.collect]")
    assert config.unit_kind is UnitKind.ATTENTION_HEAD
    with pytest.raises(ConfigError, match=r"option 'unit_kind' must be one of 'mlp_neuron', 'attention_head', "
                                          r"'autoencoder_latent', got 'heads'"):
        build_options(CollectConfig, {"out_dir": tmp_path, "unit_kind": "heads"}, "[records.collect]")
