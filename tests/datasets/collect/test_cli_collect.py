"""`neuroscribe collect` with a TOML config plus flag overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuroscribe.cli import main
from neuroscribe.cli.collect import parse_ranges


def test_parse_ranges() -> None:
    assert parse_ranges("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_ranges("5") == (5,)


def test_collect_command_with_config_and_flags(tiny_models: dict[str, Path], text_corpus: Path,
                                               tmp_path: Path) -> None:
    config = tmp_path / "collect.toml"
    config.write_text(f"""
[collect]
model = "{tiny_models['gpt2']}"
corpus = "{text_corpus}"
out_dir = "dataset"
layers = "0-1"
indices = [2, 3]
excerpt_tokens = 16
top_k = 4
n_random = 4
n_quantiles = 2
n_per_quantile = 2
quantile_pool = 8
""")
    assert main(["collect", "--config", str(config), "--max-tokens", "320", "--seed", "3", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    assert manifest["layers"] == [0, 1] and manifest["n_tokens"] == 320 and manifest["seed"] == 3
    assert (tmp_path / "dataset" / "collated-activations" / "1" / "3.json").is_file()


@pytest.mark.parametrize(("body", "message"), [
    ("top_kk = 3", "did you mean 'top_k'"),
    ("top_k = 'many'", "`top_k` must be int"),
    ("layers = 'x'", "cannot read 'x' as indices"),
])
def test_bad_config_is_reported(body: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(body + "\nout_dir = 'x'\n")
    assert main(["collect", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_config_accepts_plain_python_types() -> None:
    from neuroscribe.datasets.collect import CollectConfig
    from neuroscribe.errors import ConfigError
    from neuroscribe.records import UnitKind

    config = CollectConfig(out_dir="ds", layers=[0, 2], indices=[1], unit_kind="attention_head")  # type: ignore[arg-type]
    assert config.out_dir == Path("ds") and config.layers == (0, 2) and config.unit_kind is UnitKind.ATTENTION_HEAD
    with pytest.raises(ConfigError, match="unknown unit_kind 'neuron'"):
        CollectConfig(out_dir=Path("ds"), unit_kind="neuron")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="`layers` must be a list of integers"):
        CollectConfig(out_dir=Path("ds"), layers=["0"])  # type: ignore[list-item]


@pytest.mark.slow
def test_collect_embedded_model_and_corpus(embedded_checkpoint: Path, tmp_path: Path) -> None:
    """The offline default path: SmolLM2-135M (30 layers x 1536 neurons) on BBC News, via the command."""
    from neuroscribe.datasets import load_neuron_record

    out = tmp_path / "smollm2"
    assert main(["collect", "--out", str(out), "--layers", "0,29", "--indices", "7,1535", "--max-tokens", "2048",
                 "--batch-size", "16", "--top-k", "8", "--n-random", "5", "--no-progress"]) == 0
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["subject_model"] == "embedded" and manifest["n_tokens"] == 2048
    assert manifest["corpus"].startswith("embedded:bbc-news")
    record = load_neuron_record(f"{out}:29/1535")
    assert len(record.most_positive_activation_records) == 8 and len(record.random_sample) == 5
    assert all(len(r.tokens) == 64 for r in record.random_sample)
    assert record.max_activation > 0 and record.variance is not None and record.variance > 0


def test_several_autoencoders_from_toml_tables(tmp_path: Path) -> None:
    from neuroscribe.cli.collect import load_config_values
    from neuroscribe.datasets.collect import CollectConfig
    from neuroscribe.records import UnitKind

    config = tmp_path / "collect.toml"
    config.write_text("""
[collect]
out_dir = "dataset"
unit_kind = "sae_latent"

[[collect.saes]]
id = "res3"
path = "saes/res3"
hook = "blocks.3.hook_resid_post"

[[collect.saes]]
id = "mlp5"
path = "saes/mlp5.npz"
hook = "mlp_out"
layer = 5
""")
    built = CollectConfig(**load_config_values(config))  # type: ignore[arg-type]
    assert built.unit_kind is UnitKind.AUTOENCODER_LATENT and built.layers == (3, 5)
    assert [(s.id, s.point, s.layer) for s in built.saes] == [("res3", "resid_post", 3), ("mlp5", "mlp_out", 5)]


def test_collect_command_with_several_autoencoders(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"W_enc": torch.ones(32, 3), "b_enc": torch.zeros(3)}, str(tmp_path / "sae.safetensors"))
    config = tmp_path / "collect.toml"
    config.write_text(f"""
[collect]
model = "{tiny_models['llama']}"
corpus = "{text_corpus}"
out_dir = "saes"
unit_kind = "sae_latent"
excerpt_tokens = 16
top_k = 4
n_random = 4
n_quantiles = 2
n_per_quantile = 2
quantile_pool = 8

[[collect.saes]]
id = "a"
path = "{tmp_path / 'sae.safetensors'}"
hook = "blocks.0.hook_resid_post"

[[collect.saes]]
id = "b"
path = "{tmp_path / 'sae.safetensors'}"
hook = "blocks.1.hook_resid_pre"
""")
    assert main(["collect", "--config", str(config), "--max-tokens", "160", "--no-progress"]) == 0
    index = json.loads((tmp_path / "saes" / "autoencoders.json").read_text())
    assert sorted(index["autoencoders"]) == ["a", "b"]
    assert (tmp_path / "saes" / "b" / "collated-activations" / "1" / "2.json").is_file()
    assert "autoencoders.json" in capsys.readouterr().err
