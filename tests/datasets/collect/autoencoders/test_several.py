"""Several autoencoders in one forward pass (`saes`): each written as its own dataset, equal to collecting it
alone; bad lists fail before the corpus is read, naming the entry and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from neuroscribe.datasets import get_dataset, load_neuron_record, parse_ref
from neuroscribe.datasets.collect import AUTOENCODERS_INDEX, STATE_FILE, AutoencoderSpec, CollectConfig, collect
from neuroscribe.datasets.collect.autoencoders import load_autoencoder
from neuroscribe.errors import ConfigError, DataError
from neuroscribe.records import UnitKind


def _params(path: Path, d_in: int, n_latents: int, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    save_file({"W_enc": torch.randn(d_in, n_latents, generator=generator),
               "b_enc": torch.randn(n_latents, generator=generator)}, str(path))
    return path


@pytest.fixture
def saes(tmp_path: Path) -> list[dict[str, object]]:
    """Three autoencoders of the tiny Llama (d_model 32, MLP 48), two of them on layer 1."""
    return [
        {"id": "resid1", "path": str(_params(tmp_path / "a.safetensors", 32, 10, 1)),
         "hook": "blocks.1.hook_resid_post"},
        {"id": "mlp1", "path": str(_params(tmp_path / "b.safetensors", 48, 7, 2)), "hook": "mlp_in", "layer": 1},
        {"id": "attn0", "path": str(_params(tmp_path / "c.safetensors", 32, 5, 3)), "hook": "attn_out", "layer": 0},
    ]


def _config(model: Path, corpus: Path, out: Path, saes: list[dict[str, object]], **overrides: object) -> CollectConfig:
    options: dict[str, object] = dict(
        out_dir=out, model=str(model), corpus=str(corpus), unit_kind=UnitKind.AUTOENCODER_LATENT, saes=saes,
        excerpt_tokens=16, batch_size=4, top_k=6, n_random=5, n_quantiles=3, n_per_quantile=2, quantile_pool=12,
        lookup_tokens=8, max_tokens=16 * 24, progress=False,
    )
    options.update(overrides)
    return CollectConfig(**options)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))
            if p.name != "dataset.json"}


def test_one_pass_equals_each_autoencoder_alone(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path,
                                                saes: list[dict[str, object]]) -> None:
    model = tiny_models["llama"]
    out = collect(_config(model, text_corpus, tmp_path / "all", saes))
    index = json.loads((out / AUTOENCODERS_INDEX).read_text())
    assert sorted(index["autoencoders"]) == ["attn0", "mlp1", "resid1"]
    assert not (out / "dataset.json").exists() and not (out / STATE_FILE).exists()
    for sae in saes:
        sae_id = str(sae["id"])
        manifest = json.loads((out / sae_id / "dataset.json").read_text())
        assert manifest["autoencoder"]["id"] == sae_id and manifest["unit_kind"] == "autoencoder_latent"
        alone = collect(_config(model, text_corpus, tmp_path / f"alone-{sae_id}", [sae]))
        assert _files(out / sae_id) == _files(alone / sae_id)  # records, sources, look-ups: byte for byte
    spec = get_dataset(str(out / "mlp1"))
    assert spec.unit_kind is UnitKind.AUTOENCODER_LATENT and list(spec.layers or ()) == [1]
    record = load_neuron_record(parse_ref(f"{out / 'mlp1'}:1/6"))
    assert len(record.most_positive_activation_records) == 6
    # two autoencoders on one layer draw their random samples apart (their unit ids differ)
    samples = {sae_id: load_neuron_record(parse_ref(f"{out / sae_id}:1/3")).random_sample
               for sae_id in ("resid1", "mlp1")}
    assert [r.tokens for r in samples["resid1"]] != [r.tokens for r in samples["mlp1"]]


def test_the_list_enters_the_fingerprint_and_sets_the_layers(saes: list[dict[str, object]]) -> None:
    base = _config(Path("m"), Path("c"), Path("o"), saes)
    assert base.layers == (0, 1)
    assert [s.layer for s in base.saes] == [1, 1, 0]
    assert isinstance(base.saes[0], AutoencoderSpec)
    assert _config(Path("m"), Path("c"), Path("o"), list(base.saes)).fingerprint() == base.fingerprint()
    changed = [dict(saes[0], hook="blocks.1.hook_resid_pre"), *saes[1:]]
    assert _config(Path("m"), Path("c"), Path("o"), changed).fingerprint() != base.fingerprint()
    assert _config(Path("m"), Path("c"), Path("o"), saes[:2]).fingerprint() != base.fingerprint()
    single = CollectConfig(out_dir=Path("o"), unit_kind=UnitKind.AUTOENCODER_LATENT, layers=(1,), sae_path=Path("s"))
    assert "saes" not in single.to_json_obj()  # collections made before `saes` existed keep their fingerprint


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: [s[0], dict(s[1], id="resid1"), s[2]], r"ids must be distinct, \['resid1'\] occur more than once"),
    (lambda s: [dict(s[0], id="../up"), *s[1:]], r"`saes\[0\].id` '../up' must be letters"),
    (lambda s: [dict(s[0], layer=2), *s[1:]], r"`saes\[0\]` \('resid1'\): `hook` 'blocks.1.hook_resid_post' names "
                                              "layer 1 but `layer` is 2"),
    (lambda s: [dict(s[1], layer=None), *s[2:]], r"`saes\[0\]` \('mlp1'\) names no layer"),
    (lambda s: [dict(s[0], hook="blocks.1.hook_z"), *s[1:]], r"unknown `sae_hook` .*\(in `saes\[0\].hook`\)"),
    (lambda s: [dict(s[0], size=3)], r"`saes\[0\]` needs `id` and `path`"),
    (lambda s: [], "autoencoder latents need `sae_path`"),
])
def test_bad_lists_are_config_errors(change: object, message: str, saes: list[dict[str, object]]) -> None:
    assert callable(change)
    with pytest.raises(ConfigError, match=message):
        _config(Path("m"), Path("c"), Path("o"), change(saes), layers=(0, 1))
    with pytest.raises(ConfigError, match="not both"):
        _config(Path("m"), Path("c"), Path("o"), saes, sae_path=Path("s"))


def test_a_mismatched_width_fails_naming_the_entry_and_file_before_the_corpus(
        tiny_models: dict[str, Path], tmp_path: Path, saes: list[dict[str, object]]) -> None:
    wrong = [*saes[:2], dict(saes[2], hook="mlp_in")]  # reads 32 features; the MLP has 48
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"`saes` entry 'attn0' \(mlp_in of layer 0\): .*c\.safetensors: the encoder "
                                        r"reads 32 features \(W_enc\) but the hook point has 48"):
        collect(_config(tiny_models["llama"], tmp_path / "no-corpus", out, wrong))
    assert not (out / STATE_FILE).exists()
    with pytest.raises(ConfigError, match="layer 5 does not exist"):
        collect(_config(tiny_models["llama"], tmp_path / "no-corpus", out, [dict(saes[0], hook="resid_post", layer=5)]))


def test_another_list_in_the_same_directory_is_refused(tiny_models: dict[str, Path], text_corpus: Path,
                                                       tmp_path: Path, saes: list[dict[str, object]]) -> None:
    out = collect(_config(tiny_models["llama"], text_corpus, tmp_path / "ds", saes[2:], max_tokens=16 * 8))
    assert collect(_config(tiny_models["llama"], text_corpus, out, saes[2:], max_tokens=16 * 8)) == out  # done
    with pytest.raises(ConfigError, match="already holds a different collection"):
        collect(_config(tiny_models["llama"], text_corpus, out, saes[1:], max_tokens=16 * 8))


def test_wide_look_up_tables_are_warned_about(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path,
                                              saes: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import neuroscribe.datasets.collect as collector

    monkeypatch.setattr(collector, "LOOKUP_WARN_GIB", 0.0)
    collect(_config(tiny_models["llama"], text_corpus, tmp_path / "ds", saes[2:], max_tokens=16 * 8))
    assert "token look-up tables of 5 units need up to" in caplog.text
    caplog.clear()
    collect(_config(tiny_models["llama"], text_corpus, tmp_path / "off", saes[2:], max_tokens=16 * 8, lookup_tokens=0))
    assert "look-up tables" not in caplog.text


@pytest.mark.parametrize(("hook", "ran"), [("resid_pre", []), ("attn_out", ["attention"]),
                                           ("mlp_in", ["attention"]), ("resid_post", ["attention", "mlp"])])
def test_the_pass_stops_at_the_deepest_hook_point(hook: str, ran: list[str], tiny_models: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """What of the deepest layer runs: nothing for resid_pre, its attention for attn_out, ... (and with a
    probe on an earlier layer's output, the same)."""
    from neuroscribe.datasets.collect.subject import AutoencoderProbe, SubjectModel

    subject = SubjectModel(str(tiny_models["llama"]))
    seen: list[str] = []
    layer = subject.layers[2]
    handles = [layer.self_attn.register_forward_hook(lambda *_: seen.append("attention")),
               layer.mlp.register_forward_hook(lambda *_: seen.append("mlp"))]
    width = 48 if hook == "mlp_in" else 32
    deep = AutoencoderProbe(2, load_autoencoder(_params(tmp_path / "d.safetensors", width, 4, 1), width,
                                                subject.device), hook)
    early = AutoencoderProbe(0, load_autoencoder(_params(tmp_path / "e.safetensors", 32, 4, 2), 32,
                                                 subject.device), "resid_post")
    got: dict[int, torch.Tensor] = {}
    subject.stream(torch.arange(40).reshape(2, 20), [deep, early], 2, got.__setitem__)
    for handle in handles:
        handle.remove()
    assert seen == ran and sorted(got) == [0, 1] and got[0].shape == (2, 20, 4)
