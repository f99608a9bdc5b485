"""End-to-end collection on tiny random models: values equal a plain full forward pass; resume after SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from neuroscribe.datasets import load_neuron_record, load_token_lookup, load_weight_summary
from neuroscribe.datasets.collect import STATE_FILE, CollectConfig, collect
from neuroscribe.datasets.collect.corpora import open_corpus
from neuroscribe.errors import ConfigError
from neuroscribe.records import NeuronRecord, TokenPairRecord, UnitKind
from neuroscribe.results import TokenLookupTableSummaryOfNeuron, WeightBasedSummaryOfNeuron
from neuroscribe.serialization import load_json_file


def _config(model: Path, corpus: Path, out: Path, **overrides: object) -> CollectConfig:
    options: dict[str, object] = dict(
        out_dir=out, model=str(model), corpus=str(corpus), layers=(0, 2), excerpt_tokens=16, batch_size=4,
        top_k=6, n_random=5, n_quantiles=3, n_per_quantile=2, quantile_pool=12, lookup_tokens=8, progress=False,
    )
    options.update(overrides)
    return CollectConfig(**options)  # type: ignore[arg-type]


def _reference_mlp_values(model_path: Path, tokens: list[str], layer: int) -> torch.Tensor:
    """The MLP neurons of `layer` on one excerpt, from an unmodified full forward pass (no early stop)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokenizer.tokenize("".join(tokens)))])
    captured: list[torch.Tensor] = []
    blocks = model.model.layers if hasattr(model, "model") else model.transformer.h
    projection = blocks[layer].mlp.down_proj if hasattr(blocks[layer].mlp, "down_proj") else blocks[layer].mlp.c_proj
    handle = projection.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return captured[0][0]


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_records_hold_the_true_mlp_activations(architecture: str, tiny_models: dict[str, Path], text_corpus: Path,
                                              tmp_path: Path) -> None:
    out = collect(_config(tiny_models[architecture], text_corpus, tmp_path / "ds", indices=(0, 5, 7),
                          weight_summaries=True))
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["unit_kind"] == "mlp_neuron" and manifest["indices"] == {"0": [0, 5, 7], "2": [0, 5, 7]}
    assert manifest["n_tokens"] == manifest["n_excerpts"] * 16 > 0
    assert not (out / STATE_FILE).exists()
    for layer in (0, 2):
        record = load_json_file(out / "collated-activations" / str(layer) / "5.json", NeuronRecord)
        assert len(record.most_positive_activation_records) == 6 and len(record.random_sample) == 5
        assert record.random_sample_by_quantile is not None and len(record.random_sample_by_quantile) == 3
        assert record.quantile_boundaries is not None and record.quantile_boundaries[0] is None
        maxima = [r.max_activation for r in record.most_positive_activation_records]
        assert maxima == sorted(maxima, reverse=True)
        top = record.most_positive_activation_records[0]
        assert len(top.tokens) == 16
        expected = _reference_mlp_values(tiny_models[architecture], top.tokens, layer)[:, 5]
        torch.testing.assert_close(torch.tensor(top.activations), expected, atol=6e-5, rtol=0)
        table = load_json_file(out / "related-tokens/activation-based" / str(layer) / "5.json",
                               TokenLookupTableSummaryOfNeuron)
        assert len(table.tokens) == 8 and table.average_activations == sorted(table.average_activations, reverse=True)
        by_weight = load_json_file(out / "related-tokens/weight-based" / str(layer) / "5.json",
                                   WeightBasedSummaryOfNeuron)
        assert len(by_weight.input_positive.tokens) == 20
        loaded = load_neuron_record(f"{out}:{layer}/5")  # the dataset loader reads what we wrote, with sources
        assert loaded.excerpt_sources is not None and dataclasses.replace(loaded, excerpt_sources=None) == record
        assert load_token_lookup(f"{out}:{layer}/5") == table
        assert load_weight_summary(f"{out}:{layer}/5") == by_weight
        linked = json.loads((out / "related-neurons/weight-based" / str(layer) / "5.json").read_text())
        assert linked["dataclass_name"] == "WeightBasedConnectionsOfNeuron" and len(linked["upstream_positive"]) == (
            20 if layer else 0)


def test_excerpt_sources_name_each_excerpts_document_and_keep_samples_apart(
        tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path) -> None:
    """Every excerpt is the window its source names; no unit's random or quantile excerpt shares a document
    with one of its top excerpts; units draw different samples; the published file stays as published."""
    path = tiny_models["llama"]
    out = collect(_config(path, text_corpus, tmp_path / "ds", layers=(1,), indices=(0, 3, 9, 20), quantile_pool=40))
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["format_version"] == 2 and manifest["has_excerpt_sources"] is True
    assert manifest["units_with_short_samples"] == {"random_sample": 0, "random_sample_by_quantile": 0}
    tokenizer = AutoTokenizer.from_pretrained(path)
    documents = [tokenizer(text, add_special_tokens=False)["input_ids"]
                 for text in open_corpus(str(text_corpus), seed=0).documents()]
    samples = []
    for index in (0, 3, 9, 20):
        record = load_neuron_record(f"{out}:1/{index}")
        sources = record.excerpt_sources
        assert sources is not None and sources.random_sample_by_quantile is not None
        assert record.random_sample_by_quantile is not None
        pairs = [(record.most_positive_activation_records, sources.most_positive_activation_records),
                 (record.random_sample, sources.random_sample),
                 *zip(record.random_sample_by_quantile, sources.random_sample_by_quantile, strict=True)]
        for excerpts, where in pairs:
            for excerpt, (document, offset) in zip(excerpts, where, strict=True):
                assert "".join(excerpt.tokens) == tokenizer.decode(documents[document][offset:offset + 16])
        top_documents = {document for document, _ in sources.most_positive_activation_records}
        held_out = [*sources.random_sample, *(s for bucket in sources.random_sample_by_quantile for s in bucket)]
        assert len(sources.random_sample) == 5 and top_documents.isdisjoint(d for d, _ in held_out)
        samples.append(tuple(sources.random_sample))
        published = json.loads((out / f"collated-activations/1/{index}.json").read_text())
        assert "excerpt_sources" not in published and load_json_file(
            out / f"collated-activations/1/{index}.json", NeuronRecord).excerpt_sources is None
    assert len(set(samples)) == 4


def test_a_checkpoint_of_another_format_is_refused(tiny_models: dict[str, Path], text_corpus: Path,
                                                    tmp_path: Path) -> None:
    config = _config(tiny_models["llama"], text_corpus, tmp_path / "old", indices=(0,))
    config.out_dir.mkdir()
    torch.save({"fingerprint": config.fingerprint(), "collators": [{}, {}], "finished": False},
               config.out_dir / STATE_FILE)  # a checkpoint from before excerpt sources
    with pytest.raises(ConfigError, match=r"another version of neuroscribe \(checkpoint format 1, this one reads 3\); "
                                          r"delete it to restart"):
        collect(config)


def test_gpt2_attention_heads(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path) -> None:
    """GPT-2 fuses q, k, v in one projection; heads still give one non-negative value per token pair."""
    out = collect(_config(tiny_models["gpt2"], text_corpus, tmp_path / "gpt2-heads", unit_kind=UnitKind.ATTENTION_HEAD,
                          layers=(0,), indices=(1, 3), max_tokens=16 * 8, lookup_tokens=0))
    record = load_neuron_record(f"{out}:0/3")
    top = record.most_positive_activation_records[0]
    assert isinstance(top, TokenPairRecord) and len(top.activations) == 16 * 17 // 2
    assert min(top.activations) >= 0 and top.max_activation > 0


def test_attention_head_pair_values(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path) -> None:
    """Pair (0, 0): the query sees only key 0 with weight 1, so the value is the norm of the head's output there."""
    path = tiny_models["llama"]
    out = collect(_config(path, text_corpus, tmp_path / "heads", unit_kind=UnitKind.ATTENTION_HEAD, layers=(1,),
                          max_tokens=16 * 12, lookup_tokens=0))
    raw = json.loads((out / "collated-activations/1/2.json").read_text())
    top = raw["most_positive_activation_records"][0]
    assert top["dataclass_name"] == "TokenPairRecord"
    record = TokenPairRecord(tokens=top["tokens"], activations=top["activations"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokenizer.tokenize("".join(record.tokens)))])
    captured: list[torch.Tensor] = []
    o_proj = model.model.layers[1].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    head_dim = 32 // 4
    head_slice = slice(2 * head_dim, 3 * head_dim)
    written = o_proj.weight[:, head_slice].detach() @ captured[0][0, 0, head_slice]
    assert record.activation(0, 0) == pytest.approx(float(written.norm()), abs=2e-4)
    assert all(a >= 0 for a in record.activations)


def test_autoencoder_latents(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(5)
    weights = {"W_enc": torch.randn(32, 10, generator=generator), "b_enc": torch.randn(10, generator=generator),
               "b_dec": torch.randn(32, generator=generator)}
    save_file(weights, str(tmp_path / "sae.safetensors"))
    path = tiny_models["llama"]
    out = collect(_config(path, text_corpus, tmp_path / "sae", unit_kind=UnitKind.AUTOENCODER_LATENT, layers=(1,),
                          sae_path=tmp_path / "sae.safetensors", max_tokens=16 * 20))
    record = load_json_file(out / "collated-activations/1/3.json", NeuronRecord)
    top = record.most_positive_activation_records[0]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokenizer.tokenize("".join(top.tokens)))])
    with torch.no_grad():
        residual = model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]  # after layer 1
    # a bare tensor file follows Gemma Scope: b_dec belongs to the decoder and is not subtracted
    expected = torch.relu(residual @ weights["W_enc"] + weights["b_enc"])[:, 3]
    torch.testing.assert_close(torch.tensor(top.activations), expected, atol=6e-5, rtol=0)


def test_transformer_lens_hook_names_are_aliases() -> None:
    from neuroscribe.datasets.collect.config import parse_hook

    assert parse_hook("blocks.6.hook_resid_post") == (6, "resid_post")
    assert parse_hook("blocks.0.mlp.hook_post") == (0, "mlp_in")
    assert parse_hook("attn_out") == (None, "attn_out")
    with pytest.raises(ConfigError, match=r"blocks\.6\.hook_z"):
        parse_hook("blocks.6.hook_z")
    with pytest.raises(ConfigError, match="names layer 6 but `layers` is \\[1\\]"):
        CollectConfig(out_dir=Path("x"), unit_kind=UnitKind.AUTOENCODER_LATENT, layers=(1,), sae_path=Path("s"),
                      sae_hook="blocks.6.hook_resid_post")


def test_same_seed_gives_identical_files(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path) -> None:
    first = collect(_config(tiny_models["gpt2"], text_corpus, tmp_path / "a", indices=(1,), layers=(1,)))
    second = collect(_config(tiny_models["gpt2"], text_corpus, tmp_path / "b", indices=(1,), layers=(1,),
                             batch_size=7))
    name = "collated-activations/1/1.json"
    assert (first / name).read_text() == (second / name).read_text()


def test_bad_requests_fail_clearly(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="layer 9 does not exist"):
        collect(_config(tiny_models["llama"], text_corpus, tmp_path / "x", layers=(9,)))
    with pytest.raises(ConfigError, match="unit index 48 does not exist"):
        collect(_config(tiny_models["llama"], text_corpus, tmp_path / "y", indices=(48,)))
    with pytest.raises(ConfigError, match="quantile_pool"):
        _config(tiny_models["llama"], text_corpus, tmp_path / "z", quantile_pool=3)
    done = collect(_config(tiny_models["llama"], text_corpus, tmp_path / "done", indices=(0,), max_tokens=64))
    with pytest.raises(ConfigError, match="different collection"):
        collect(_config(tiny_models["llama"], text_corpus, done, indices=(1,), max_tokens=64))


RUN_COLLECTION = """
import sys, time
from pathlib import Path
from neuroscribe.datasets.collect import CollectConfig, collect
from neuroscribe.datasets.collect import subject

import torch
torch.set_num_threads(1)
slow = float(sys.argv[4])
stream = subject.SubjectModel.stream
def slowed(self, *args, **kwargs):
    time.sleep(slow)  # leave time to kill the process between checkpoints
    return stream(self, *args, **kwargs)
subject.SubjectModel.stream = slowed
collect(CollectConfig(out_dir=Path(sys.argv[3]), model=sys.argv[1], corpus=sys.argv[2], layers=(0, 2),
                      excerpt_tokens=16, batch_size=2, top_k=6, n_random=5, n_quantiles=3, n_per_quantile=2,
                      quantile_pool=12, lookup_tokens=8, checkpoint_every=4, max_tokens=16 * 40, progress=False))
"""


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_result(tiny_models: dict[str, Path], text_corpus: Path,
                                                             tmp_path: Path) -> None:
    model = str(tiny_models["llama"])
    script = tmp_path / "run.py"
    script.write_text(RUN_COLLECTION)
    reference = collect(CollectConfig(
        out_dir=tmp_path / "reference", model=model, corpus=str(text_corpus), layers=(0, 2), excerpt_tokens=16,
        batch_size=2, top_k=6, n_random=5, n_quantiles=3, n_per_quantile=2, quantile_pool=12, lookup_tokens=8,
        max_tokens=16 * 40, progress=False))  # same settings as the script, checkpoint_every aside
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(script), model, str(text_corpus), str(killed), "0.1"])
    deadline = time.monotonic() + 120
    while not (killed / STATE_FILE).exists():
        assert process.poll() is None, "the collection ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "dataset.json").exists()
    subprocess.run([sys.executable, str(script), model, str(text_corpus), str(killed), "0"], check=True)
    files = sorted(p.relative_to(reference) for p in reference.rglob("*.json") if p.name != "dataset.json")
    assert files == sorted(p.relative_to(killed) for p in killed.rglob("*.json") if p.name != "dataset.json")
    for name in files:
        assert (reference / name).read_text() == (killed / name).read_text(), name
