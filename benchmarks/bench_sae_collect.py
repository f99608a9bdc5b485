"""Collecting autoencoder latents: the cost of encoding and collating them, and one pass for several.

Both measurements run on the embedded SmolLM2-135M and the embedded BBC News corpus (64-token excerpts), with
random autoencoders in the SAELens layout (ReLU, b_dec subtracted), and each against a baseline measured in the
same run, batch by batch on the same batch, so load on a shared machine hits both alike:

1. Overhead of one autoencoder (default 16,384 latents, residual stream after `--layer`): the collector's
   per-batch step (forward stopped after the layer, latents encoded and collated with the published defaults)
   against a bare forward of the same truncated model. Target: <= 25% at 100k tokens. The encoding alone (no
   collation) is timed too, to say where the overhead goes.
2. Three autoencoders at three hook points (resid_post, mlp_out and attn_out of `--layer`, or of `--layer`,
   `--layer` - S and `--layer` - 2S with `--layer-step S`) read in one pass against three separate passes,
   one per autoencoder (each stopped after its own layer). Target: >= 2x. The bare forwards of the same
   passes are timed too: their ratio is the ceiling (3x for one layer; with S = 4 and layer 12, 24/12 = 2x),
   which the collation, the same in both ways, pulls down. The collators' token look-up tables are left out
   here by default (`--three-lookup-tokens`): they are vocabulary x latents sums, six of them about 40 GB.

    .venv/bin/python benchmarks/bench_sae_collect.py                     # 100k tokens, 16k latents
    .venv/bin/python benchmarks/bench_sae_collect.py --tokens 4096 --json out/sae-smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from neuroscribe.datasets.collect import CollectConfig, collate_batch
from neuroscribe.datasets.collect.autoencoders import load_autoencoder
from neuroscribe.datasets.collect.collation import CollationSettings, StreamingCollator, unit_id
from neuroscribe.datasets.collect.corpora import ExcerptBatch, excerpts, open_corpus
from neuroscribe.datasets.collect.subject import AutoencoderProbe, Probe, SubjectModel

EXCERPT_TOKENS = 64


def load_batches(subject: SubjectModel, n_tokens: int, batch_size: int) -> list[ExcerptBatch]:
    config = CollectConfig(out_dir=Path("unused"), max_tokens=n_tokens, batch_size=batch_size)
    corpus = open_corpus("embedded", shuffle=True, seed=0)

    def tokenize(texts: list[str]) -> list[list[int]]:
        return subject.tokenizer(texts, add_special_tokens=False)["input_ids"]  # type: ignore[no-any-return]

    return list(excerpts(corpus.documents(), tokenize, excerpt_tokens=EXCERPT_TOKENS, batch_size=batch_size,
                         max_excerpts=config.max_excerpts))


def random_autoencoder(folder: Path, d_in: int, n_latents: int, seed: int) -> Path:
    """A SAELens folder with random weights and biases of -1: on layer 12's residual stream about 43 % of the
    latents fire per token, far denser than a trained autoencoder, so collation weighs more here than there."""
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    save_file({"W_enc": torch.randn(d_in, n_latents, generator=generator) / d_in**0.5,
               "b_enc": torch.full((n_latents,), -1.0), "b_dec": torch.zeros(d_in),
               "W_dec": torch.zeros(n_latents, d_in)}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": d_in, "d_sae": n_latents,
                                                 "dtype": "float32", "apply_b_dec_to_input": True}))
    return folder


def probe(subject: SubjectModel, root: Path, name: str, layer: int, hook: str, n_latents: int, seed: int,
          lookup_tokens: int) -> tuple[AutoencoderProbe, StreamingCollator]:
    """A probe and an empty collator (published defaults but the look-up table) for a fresh random autoencoder."""
    folder = random_autoencoder(root / name, subject.hidden_size, n_latents, seed)
    encoder = load_autoencoder(folder, subject.hidden_size, subject.device)
    collator = StreamingCollator(CollationSettings(lookup_tokens=lookup_tokens), n_units=n_latents,
                                 n_positions=EXCERPT_TOKENS, excerpt_tokens=EXCERPT_TOKENS,
                                 vocab_size=subject.vocab_size,
                                 unit_ids=[unit_id(layer, i, name) for i in range(n_latents)])
    return AutoencoderProbe(layer, encoder, hook), collator


def timed(step: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    step(*args)
    return time.perf_counter() - start


def ignore(_number: int, _values: torch.Tensor) -> None:
    """Consumes a probe's values without collating them (the encoding alone)."""


def overhead(subject: SubjectModel, batches: list[ExcerptBatch], layer: int, n_latents: int, root: Path,
             lookup_tokens: int) -> dict[str, float]:
    """Bare truncated forward vs forward + encode vs forward + encode + collate, batch by batch."""
    sae, collator = probe(subject, root, "one", layer, "resid_post", n_latents, 1, lookup_tokens)
    warm_up = torch.from_numpy(batches[0].token_ids)  # the first forward of a process allocates: not timed
    subject.stream(warm_up, [sae], layer, ignore)
    bare = encode = collect = 0.0
    for batch in batches:
        ids = torch.from_numpy(batch.token_ids)
        bare += timed(subject.stream, ids, [], layer, ignore)
        encode += timed(subject.stream, ids, [sae], layer, ignore)
        collect += timed(collate_batch, subject, [sae], [collator], batch, layer)
    finalize = timed(collator.finalize)
    return {"bare_s": bare, "encode_s": encode, "collect_s": collect, "finalize_s": finalize,
            "encode_overhead": encode / bare - 1, "overhead": collect / bare - 1}


def one_pass_vs_three(subject: SubjectModel, batches: list[ExcerptBatch], layer: int, step: int, n_latents: int,
                      root: Path, lookup_tokens: int) -> dict[str, object]:
    """Three autoencoders in one pass (stopped after the deepest) vs one pass each (stopped after its own)."""
    points = [(layer, "resid_post"), (max(layer - step, 0), "mlp_out"), (max(layer - 2 * step, 0), "attn_out")]
    together = [probe(subject, root, f"together-{n}", point_layer, hook, n_latents, 10 + n, lookup_tokens)
                for n, (point_layer, hook) in enumerate(points)]
    apart = [probe(subject, root, f"apart-{n}", point_layer, hook, n_latents, 10 + n, lookup_tokens)
             for n, (point_layer, hook) in enumerate(points)]
    probes: list[Probe] = [p for p, _ in together]
    collators = [c for _, c in together]
    deepest = max(p.layer for p in probes)
    one = three = bare_one = bare_three = 0.0
    for batch in batches:
        ids = torch.from_numpy(batch.token_ids)
        one += timed(collate_batch, subject, probes, collators, batch, deepest)
        for single, collator in apart:
            three += timed(collate_batch, subject, [single], [collator], batch, single.layer)
        bare_one += timed(subject.stream, ids, [], deepest, ignore)
        for point_layer, _hook in points:
            bare_three += timed(subject.stream, ids, [], point_layer, ignore)
    return {"hook_points": [f"{hook}@{point_layer}" for point_layer, hook in points], "one_pass_s": one,
            "three_passes_s": three, "speedup": three / one, "bare_one_pass_s": bare_one,
            "bare_three_passes_s": bare_three, "forward_ceiling": bare_three / bare_one}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100_000, help="tokens of both measurements")
    parser.add_argument("--latents", type=int, default=16_384, help="latents of each autoencoder")
    parser.add_argument("--layer", type=int, default=12, help="layer of the first autoencoder (resid_post)")
    parser.add_argument("--layer-step", type=int, default=0,
                        help="measurement 2: layers of its hook points are layer, layer - S, layer - 2S")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lookup-tokens", type=int, default=50,
                        help="token look-up table of measurement 1 (published default 50; 0 leaves it out)")
    parser.add_argument("--three-lookup-tokens", type=int, default=0,
                        help="the same for measurement 2: its six collators' tables (vocabulary x latents int64 "
                             "sums, 6.4 GB per 16k-latent autoencoder) need about 40 GB, so it is off by default")
    parser.add_argument("--parts", default="overhead,three", help="which measurements to run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    subject = SubjectModel("embedded")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads)")
    print(f"machine: {machine}")
    batches = load_batches(subject, args.tokens, args.batch_size)
    n_tokens = sum(b.token_ids.size for b in batches)
    report: dict[str, object] = {"machine": machine, "tokens": n_tokens, "latents": args.latents,
                                 "layer": args.layer, "batch_size": args.batch_size,
                                 "lookup_tokens": args.lookup_tokens, "three_lookup_tokens": args.three_lookup_tokens}
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        if "overhead" in parts:
            figures = overhead(subject, batches, args.layer, args.latents, Path(scratch), args.lookup_tokens)
            report["overhead"] = figures
            print(f"\n1. one {args.latents}-latent autoencoder, resid_post of layer {args.layer}, {n_tokens} tokens: "
                  f"bare truncated forward {figures['bare_s']:.1f} s, + encode {figures['encode_s']:.1f} s "
                  f"({100 * figures['encode_overhead']:.1f}%), + encode and collate {figures['collect_s']:.1f} s "
                  f"-> overhead {100 * figures['overhead']:.1f}% (target <= 25%); "
                  f"finalize {figures['finalize_s']:.1f} s")
        if "three" in parts:
            three = one_pass_vs_three(subject, batches, args.layer, args.layer_step, args.latents, Path(scratch),
                                      args.three_lookup_tokens)
            report["three"] = three
            print(f"2. three {args.latents}-latent autoencoders ({', '.join(three['hook_points'])}), "  # type: ignore[arg-type]
                  f"{n_tokens} tokens: one pass {three['one_pass_s']:.1f} s, three passes "
                  f"{three['three_passes_s']:.1f} s -> {three['speedup']:.2f}x (target >= 2x); bare forwards "
                  f"{three['bare_one_pass_s']:.1f} s vs {three['bare_three_passes_s']:.1f} s: ceiling "
                  f"{three['forward_ceiling']:.2f}x")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
