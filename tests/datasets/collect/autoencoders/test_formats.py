"""Every format's latents, read by the collector's probe from the embedded model, equal that format's own
encoder (SAELens's `encode`; the documented formula for the others) on every latent of 4,096 tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from neuroscribe.datasets.collect.autoencoders import load_autoencoder
from neuroscribe.datasets.collect.subject import AutoencoderProbe, SubjectModel
from neuroscribe.errors import DataError

LAYER = 2
D_SAE = 96


@pytest.fixture(scope="module")
def subject() -> SubjectModel:
    return SubjectModel("embedded")


@pytest.fixture(scope="module")
def hooked(subject: SubjectModel) -> dict[str, torch.Tensor]:
    """Each hook point's activations on 4,096 tokens, read independently of the probe."""
    ids = torch.randint(0, subject.vocab_size, (64, 64), generator=torch.Generator().manual_seed(0))
    seen: dict[str, torch.Tensor] = {}
    layer = subject.layers[LAYER]
    handles = [
        layer.self_attn.register_forward_hook(lambda _m, _i, out: seen.__setitem__("attn_out", out[0])),
        layer.mlp.register_forward_hook(lambda _m, _i, out: seen.__setitem__("mlp_out", out)),
        layer.mlp.down_proj.register_forward_pre_hook(lambda _m, args: seen.__setitem__("mlp_in", args[0])),
    ]
    with torch.no_grad():
        states = subject.model(input_ids=ids, output_hidden_states=True).hidden_states
    for handle in handles:
        handle.remove()
    return {"ids": ids, "resid_pre": states[LAYER], "resid_post": states[LAYER + 1], **seen}


def _collected(subject: SubjectModel, path: Path, hook: str, d_in: int, ids: torch.Tensor) -> torch.Tensor:
    probe = AutoencoderProbe(LAYER, load_autoencoder(path, d_in, subject.device), hook)
    out: list[torch.Tensor] = []
    subject.stream(ids, [probe], LAYER, lambda _n, values: out.append(values))
    return out[0]


def _randomized(sae: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return sae


def _saelens(kind: str, **settings: object) -> Callable[[int], torch.nn.Module]:
    def build(d_in: int) -> torch.nn.Module:
        import sae_lens

        config = getattr(sae_lens, f"{kind}Config")(d_in=d_in, d_sae=D_SAE, **settings)
        sae = _randomized(getattr(sae_lens, kind)(config))
        if kind.startswith("JumpReLU"):
            with torch.no_grad():
                sae.threshold.uniform_(0.0, 0.2)  # type: ignore[operator]
        return sae

    return build


SAELENS_CASES = {
    "standard": ("resid_post", _saelens("StandardSAE")),
    "jumprelu_no_bias_rescaled": ("mlp_out", _saelens("JumpReLUSAE", apply_b_dec_to_input=False,
                                                     normalize_activations="constant_norm_rescale")),
    "topk_layer_norm": ("resid_pre", _saelens("TopKSAE", k=8, normalize_activations="layer_norm")),
    "topk_decoder_norm": ("attn_out", _saelens("TopKSAE", k=5, rescale_acts_by_decoder_norm=True)),
    "gated": ("attn_out", _saelens("GatedSAE")),
    "transcoder": ("mlp_in", _saelens("Transcoder", d_out=576, apply_b_dec_to_input=False)),
    "jumprelu_transcoder": ("mlp_in", _saelens("JumpReLUTranscoder", d_out=576, apply_b_dec_to_input=False)),
}


@pytest.mark.parametrize("case", sorted(SAELENS_CASES))
def test_saelens_folders_encode_as_saelens(case: str, subject: SubjectModel, hooked: dict[str, torch.Tensor],
                                            tmp_path: Path) -> None:
    from sae_lens import SAE

    hook, build = SAELENS_CASES[case]
    x = hooked[hook]
    build(x.shape[-1]).save_model(tmp_path)  # type: ignore[operator]
    with torch.no_grad():
        expected = SAE.load_from_disk(tmp_path, device="cpu").encode(x)
    assert (expected > 0).any() and (expected == 0).any()
    torch.testing.assert_close(_collected(subject, tmp_path, hook, x.shape[-1], hooked["ids"]), expected,
                               atol=1e-5, rtol=0)


def _topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)


@pytest.mark.parametrize(("activation", "transcode"), [("topk", False), ("topk", True), ("groupmax", False)])
def test_sparsify_folders_encode_as_sparsify(activation: str, transcode: bool, subject: SubjectModel,
                                             hooked: dict[str, torch.Tensor], tmp_path: Path) -> None:
    """Saved by EleutherAI's sparsify (`eai-sparsify`) itself; its own `encode` is the reference, to 1e-5 or one
    part in a million: the first token's latents reach 128, where float32 steps by 1.5e-5, and sparsify's
    one matrix product over every token rounds differently from the collector's batches."""
    from sparsify import SparseCoder, SparseCoderConfig

    x = hooked["resid_post"]
    coder = _randomized(SparseCoder(576, SparseCoderConfig(activation=activation, num_latents=D_SAE, k=8,
                                                           transcode=transcode)))
    coder.save_to_disk(tmp_path)  # type: ignore[operator]
    flat = x.reshape(-1, 576)
    with torch.no_grad():
        top = coder.encode(flat)  # type: ignore[operator]
    expected = torch.zeros(flat.shape[0], D_SAE).scatter_(-1, top.top_indices, top.top_acts).reshape(*x.shape[:-1], -1)
    assert (expected > 0).any() and (expected == 0).any()
    torch.testing.assert_close(_collected(subject, tmp_path, "resid_post", 576, hooked["ids"]), expected,
                               atol=1e-5, rtol=1e-6)


def test_gemma_scope_params_are_jumprelu_without_bias_subtraction(subject: SubjectModel,
                                                                  hooked: dict[str, torch.Tensor],
                                                                  tmp_path: Path) -> None:
    x = hooked["resid_post"]
    rng = np.random.default_rng(3)
    params = {"W_enc": rng.normal(0, 0.1, (576, D_SAE)), "W_dec": rng.normal(0, 0.1, (D_SAE, 576)),
              "b_enc": rng.normal(0, 0.1, D_SAE), "b_dec": rng.normal(0, 1, 576),
              "threshold": rng.uniform(0, 0.3, D_SAE)}
    np.savez(tmp_path / "params.npz", **{k: v.astype(np.float32) for k, v in params.items()})
    t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in params.items()}
    pre = x @ t["W_enc"] + t["b_enc"]
    expected = (pre > t["threshold"]) * torch.relu(pre)
    assert (expected > 0).any()
    torch.testing.assert_close(_collected(subject, tmp_path / "params.npz", "resid_post", 576, hooked["ids"]),
                               expected, atol=1e-5, rtol=0)


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    return x / (x.std(dim=-1, keepdim=True) + 1e-5)


@pytest.mark.parametrize("activation", ["ReLU", "TopK"])
def test_openai_state_dicts_encode_as_their_model(activation: str, subject: SubjectModel,
                                                  hooked: dict[str, torch.Tensor], tmp_path: Path) -> None:
    """OpenAI sparse_autoencoder: act(W (x - pre_bias) + latent_bias), TopK ones on layer-normed x."""
    x = hooked["mlp_in"]
    d_in = x.shape[-1]
    g = torch.Generator().manual_seed(4)
    state: dict[str, object] = {"pre_bias": torch.randn(d_in, generator=g) * 0.1,
                                "encoder.weight": torch.randn(D_SAE, d_in, generator=g) * 0.1,
                                "latent_bias": torch.randn(D_SAE, generator=g) * 0.1,
                                "decoder.weight": torch.randn(d_in, D_SAE, generator=g), "activation": activation}
    if activation == "TopK":
        state["activation_state_dict"] = {"k": 6, "postact_fn": "ReLU"}
    torch.save(state, tmp_path / "ae.pt")
    w, b, pre_bias = state["encoder.weight"], state["latent_bias"], state["pre_bias"]
    assert isinstance(w, torch.Tensor) and isinstance(b, torch.Tensor) and isinstance(pre_bias, torch.Tensor)
    if activation == "TopK":
        expected = _topk(torch.relu((_layer_norm(x) - pre_bias) @ w.T + b), 6)
    else:
        expected = torch.relu((x - pre_bias) @ w.T + b)
    torch.testing.assert_close(_collected(subject, tmp_path / "ae.pt", "mlp_in", d_in, hooked["ids"]), expected,
                               atol=1e-5, rtol=0)


def _saelens_folder(path: Path, **cfg: object) -> Path:
    path.mkdir()
    save_file({"W_enc": torch.zeros(576, 8), "b_enc": torch.zeros(8), "b_dec": torch.zeros(576),
               "W_dec": torch.zeros(8, 576)}, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 576, "d_sae": 8,
                                               "dtype": "float32", **cfg}))
    return path


@pytest.mark.parametrize(("cfg", "d_in", "message"), [
    ({}, 1536, "sae: the encoder reads 576 features (W_enc) but the hook point has 1536"),
    ({"architecture": "magic"}, 576, "cfg.json: unknown `architecture` 'magic'"),
    ({"dtype": "bfloat16"}, 576, "sae_weights.safetensors: tensor 'W_enc' is torch.float32 but the config's"),
    ({"normalize_activations": "whatever"}, 576, "cfg.json: unknown `normalize_activations` 'whatever'"),
    ({"architecture": "jumprelu"}, 576, "sae_weights.safetensors: tensor 'threshold' is missing"),
    ({"d_in": 512}, 576, "cfg.json: `d_in` is 512 but W_enc"),
])
def test_bad_files_fail_naming_file_and_field(cfg: dict[str, object], d_in: int, message: str,
                                              tmp_path: Path) -> None:
    """Before any forward pass: each message names the file and the field."""
    folder = _saelens_folder(tmp_path / "sae", **cfg)
    with pytest.raises(DataError, match="sae") as caught:
        load_autoencoder(folder, d_in, torch.device("cpu"))
    file, _, text = message.partition(": ")
    assert f"{file}: {text}" in str(caught.value)


def test_collect_refuses_a_mismatched_autoencoder_before_reading_the_corpus(tiny_models: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    from neuroscribe.datasets.collect import STATE_FILE, CollectConfig, collect
    from neuroscribe.records import UnitKind

    folder = _saelens_folder(tmp_path / "sae")  # d_in 576; the tiny model's residual stream has 32
    out = tmp_path / "out"
    config = CollectConfig(out_dir=out, model=str(tiny_models["llama"]), corpus=str(tmp_path / "no-corpus.txt"),
                           unit_kind=UnitKind.AUTOENCODER_LATENT, layers=(1,), sae_path=folder,
                           sae_hook="blocks.1.hook_resid_pre", progress=False)
    with pytest.raises(DataError, match="reads 576 features \\(W_enc\\) but the hook point has 32"):
        collect(config)
    assert not (out / STATE_FILE).exists()


JB_RELEASE, JB_REPO, JB_SAE = "gpt2-small-res-jb", "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre"
"""A release of SAELens's pretrained directory (GPT-2 small, d_in 768) and where SAELens fetches it from."""


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SAELens's downloads answered from a Hugging Face cache in tmp_path only: downloads are off."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hub"
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return cache


def test_a_saelens_release_is_fetched_by_saelens_and_encodes_as_it_does(offline_hub: Path) -> None:
    from sae_lens import SAE

    snapshot = offline_hub / f"models--{JB_REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    _saelens("StandardSAE")(768).save_model(snapshot / JB_SAE)  # type: ignore[operator]
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)  # the cache as a download leaves it
    encoder = load_autoencoder(Path(f"saelens:{JB_RELEASE}:{JB_SAE}"), 768, torch.device("cpu"))
    x = torch.randn(256, 768, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = SAE.from_pretrained(JB_RELEASE, JB_SAE, device="cpu").encode(x)
    assert (expected > 0).any() and (expected == 0).any()
    torch.testing.assert_close(encoder.encode(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("spec", "message"), [
    ("saelens:gpt2-small-res-jb", "name a SAELens release as saelens:RELEASE:SAE_ID"),
    (f"saelens:{JB_RELEASE}:blocks.99.hook_resid_pre", "not found in release gpt2-small-res-jb"),
    (f"saelens:{JB_RELEASE}:{JB_SAE}", "SAELens could not fetch it"),
])
def test_a_release_that_cannot_be_had_is_a_clear_error(spec: str, message: str, offline_hub: Path) -> None:
    with pytest.raises(DataError, match=message) as error:
        load_autoencoder(Path(spec), 768, torch.device("cpu"))
    assert spec in str(error.value)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"activation": "groupmax", "k": 7}, "k must divide them"),
    ({"activation": "softmax", "k": 8}, "unknown `activation` 'softmax'"),
    ({"activation": "topk", "k": 8, "d_in": 512}, "`d_in` is 512 but encoder.weight"),
])
def test_bad_sparsify_configs_fail_naming_file_and_field(cfg: dict[str, object], message: str,
                                                         tmp_path: Path) -> None:
    save_file({"encoder.weight": torch.zeros(D_SAE, 576), "encoder.bias": torch.zeros(D_SAE),
               "b_dec": torch.zeros(576)}, str(tmp_path / "sae.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=message) as error:
        load_autoencoder(tmp_path, 576, torch.device("cpu"))
    assert str(tmp_path / "cfg.json") in str(error.value)
