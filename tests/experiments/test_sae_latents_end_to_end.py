"""Latents of three autoencoders end to end: one config collects a SAELens SAE on the residual stream, a Gemma
Scope JumpReLU SAE on the MLP output of the same layer and an OpenAI TopK autoencoder on an attention output,
in one forward pass of the embedded model; their latents are explained (the embedded model) and simulated and
scored (the lexical simulator, no LLM), and the store, the report's collection and the viewer keep the two
latents with the same layer and index apart by their autoencoder's id.

The autoencoders have random weights: what is checked is that every latent arrives where its id says, not
that the explanations are good.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from neuroscribe.datasets import UnitRef, load_neuron_record
from neuroscribe.errors import ConfigError
from neuroscribe.experiments import RunStore, load_config, run_experiment
from neuroscribe.experiments.collection import load_runs
from neuroscribe.experiments.plan import check_units_exist
from neuroscribe.records import UnitId, UnitKind
from neuroscribe.results import NeuronSimulationResults
from neuroscribe.viewer.build import build_site

D_MODEL, D_SAE = 576, 16
UNITS = [UnitId(1, 2, UnitKind.AUTOENCODER_LATENT, "attn1"), UnitId(3, 5, UnitKind.AUTOENCODER_LATENT, "mlp3"),
         UnitId(3, 5, UnitKind.AUTOENCODER_LATENT, "res3")]
METHODS = ["token_activation_pair+lexical", "random_explanation+lexical"]


def _autoencoders(root: Path) -> dict[str, Path]:
    """Random autoencoders of the embedded model in three formats, their latents mostly active."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.05

    saelens = root / "res3"
    saelens.mkdir(parents=True)
    save_file({"W_enc": randn(D_MODEL, D_SAE), "b_enc": randn(D_SAE), "b_dec": randn(D_MODEL),
               "W_dec": randn(D_SAE, D_MODEL)}, str(saelens / "sae_weights.safetensors"))
    (saelens / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": D_MODEL, "d_sae": D_SAE,
                                                  "dtype": "float32", "apply_b_dec_to_input": True}))
    np.savez(root / "params.npz", W_enc=randn(D_MODEL, D_SAE).numpy(), b_enc=randn(D_SAE).numpy(),
             threshold=np.full(D_SAE, 0.01, dtype=np.float32), b_dec=randn(D_MODEL).numpy())
    torch.save({"encoder.weight": randn(D_SAE, D_MODEL), "latent_bias": randn(D_SAE), "pre_bias": randn(D_MODEL),
                "activation": "TopK", "activation_state_dict": {"k": 8, "postact_fn": "ReLU"}}, root / "ae.pt")
    return {"res3": saelens, "mlp3": root / "params.npz", "attn1": root / "ae.pt"}


def _config(tmp_path: Path) -> Path:
    saes = _autoencoders(tmp_path / "saes")
    path = tmp_path / "sae-latents.toml"
    path.write_text(f"""
name = "sae-latents"
description = "Latents of three autoencoders at three hook points of the embedded model, collected in one pass"

[units]
kind = "sae_latent"
refs = {json.dumps([u.ref for u in UNITS])}

[records]
n_per_split = 2

[records.collect.options]
model = "embedded"
corpus = "embedded"
excerpt_tokens = 16
max_tokens = 2048
top_k = 8
n_random = 6
n_quantiles = 2
n_per_quantile = 2
quantile_pool = 32
progress = false

[[records.collect.options.saes]]
id = "res3"
path = "{saes['res3']}"
hook = "blocks.3.hook_resid_post"

[[records.collect.options.saes]]
id = "mlp3"
path = "{saes['mlp3']}"
hook = "mlp_out"
layer = 3

[[records.collect.options.saes]]
id = "attn1"
path = "{saes['attn1']}"
hook = "attn_out"
layer = 1

[backends.default]
type = "hf"
model = "embedded"

[backends.default.transport]
max_concurrency = 1

[[explainers]]
name = "token_activation_pair"
options = {{ max_tokens = 20 }}

[[simulators]]
name = "lexical"

[controls]
random_explanation = true
token_lookup = false

[run]
max_concurrent_units = 2
cache_dir = "{tmp_path / 'cache'}"
progress = false
""")
    return path


def _page_data(page: Path) -> Any:
    match = re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>',
                      page.read_text(encoding="utf-8"), re.S)
    assert match is not None, f"{page} has no embedded data"
    return json.loads(match.group(1))


@pytest.mark.slow
def test_three_autoencoders_collected_in_one_pass_are_explained_and_scored(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    assert config.units.resolve(config.seed) == UNITS and config.method_ids() == METHODS
    run = tmp_path / "run"
    summary = run_experiment(config, run, progress=False)
    assert (summary.completed, summary.failed) == (len(UNITS) * len(METHODS), 0), summary.to_text()

    store = RunStore(run)
    assert store.read_manifest()["units"] == ["attn1:1/2", "mlp3:3/5", "res3:3/5"]
    for method in METHODS:
        outcomes, results = store.outcomes(method), store.results(method)
        assert set(outcomes) == set(results) == set(UNITS)
        for unit in UNITS:
            result = results[unit]
            assert isinstance(result, NeuronSimulationResults) and result.neuron_id.sae == unit.sae
            assert outcomes[unit].explanation == result.scored_explanations[0].explanation
            score = result.scored_explanations[0].scored_simulation.ev_correlation_score
            assert outcomes[unit].scores["top_and_random"] == pytest.approx(score)
    lines = [json.loads(line) for line in store.outcomes_path(METHODS[0]).read_text().splitlines()]
    assert sorted(line["unit"]["sae"] for line in lines) == ["attn1", "mlp3", "res3"]

    # each latent's record is its own autoencoder's, from that autoencoder's dataset in the collection
    dataset = run / "dataset"
    records = {unit.sae: store.read_record(unit) for unit in UNITS}
    for unit in UNITS:
        assert records[unit.sae] == load_neuron_record(UnitRef.of(str(dataset), unit))
        manifest = json.loads((dataset / unit.sae / "dataset.json").read_text())
        assert manifest["autoencoder"]["id"] == unit.sae and manifest["indices"] == {str(unit.layer): [2, 5]}
    res3, mlp3 = records["res3"], records["mlp3"]
    assert res3 is not None and mlp3 is not None
    assert res3.most_positive_activation_records != mlp3.most_positive_activation_records

    # a finished collection is a dataset for later runs: its units are checked against each autoencoder's
    finished = dataclasses.replace(config, records=dataclasses.replace(config.records, collect=None,
                                                                       dataset=str(dataset)))
    check_units_exist(finished, str(dataset))
    beyond = dataclasses.replace(finished, units=dataclasses.replace(config.units, refs=("mlp3:3/7",)))
    with pytest.raises(ConfigError, match=r"dataset '.*/mlp3' has no index 7 in layer 3"):
        check_units_exist(beyond, str(dataset))

    (method,) = [m for m in load_runs([run]).methods if m.method_id == METHODS[0]]
    assert sorted(method.outcomes) == [(1, 2, "autoencoder_latent:attn1"), (3, 5, "autoencoder_latent:mlp3"),
                                       (3, 5, "autoencoder_latent:res3")]

    site = build_site(run, tmp_path / "site")
    index = _page_data(site.index_path)
    assert sorted(u[5] for u in index["units"]) == ["attn1", "mlp3", "res3"]
    for unit in UNITS:
        page = _page_data(site.out_dir / "units" / "autoencoder_latent" / unit.sae / str(unit.layer)
                          / f"{unit.index}.html")
        assert page["unit"]["sae"] == unit.sae
        shown = {m["id"]: m for m in page["methods"]}
        assert shown[METHODS[0]]["explanations"][0]["text"] == store.outcomes(METHODS[0])[unit].explanation


@pytest.mark.parametrize(("kind", "ref", "message"), [
    ("mlp_neuron", "res3:3/5", "names an autoencoder, but \\[units\\] kind is 'mlp_neuron'"),
    ("sae_latent", "../up:3/5", "'../up' is not an autoencoder id"),
    ("sae_latent", "res3:3", "is not 'layer/index'"),
])
def test_bad_autoencoder_refs_are_refused(kind: str, ref: str, message: str) -> None:
    from neuroscribe.experiments.config import UnitsConfig

    with pytest.raises(ConfigError, match=message):
        UnitsConfig(kind=UnitKind(kind), refs=(ref,))


def test_merged_keys_and_report_labels_name_the_autoencoder() -> None:
    from neuroscribe.experiments.collection import unit_key, unit_label

    assert unit_key(UNITS[2]) == (3, 5, "autoencoder_latent:res3") != unit_key(UNITS[1])
    assert unit_label(unit_key(UNITS[2])) == "res3:3/5" == UNITS[2].ref
    assert unit_label(unit_key(UnitId(5, 131))) == "5/131"
