"""Collection speed and memory: all MLP neurons of the first layers of the embedded SmolLM2-135M.

Three measurements, each against a baseline measured in the same run on the same excerpts:

1. Collation overhead: the collector's forward pass (stopped after the last needed layer, each layer's
   neurons collated as soon as the layer has run), vs a bare forward pass of the same truncated model.
   Both run batch by batch, alternating on the same batch, so load on a shared machine hits both alike.
   Target: <= 15%.
2. Against the naive way: a full-model forward (all layers and the unembedding) with per-unit Python
   top-k heaps, vs the collector on the same excerpts. Target: >= 5x faster.
3. Peak memory (max RSS of a fresh process running `collect()`, records written) for N and 2N tokens.
   Target: roughly flat.

    .venv/bin/python benchmarks/bench_collect.py                       # 100k tokens, 4 layers
    .venv/bin/python benchmarks/bench_collect.py --tokens 20000 --naive-tokens 4000 --memory-tokens 8000
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from neuroscribe.datasets.collect import CollectConfig, collate_batch
from neuroscribe.datasets.collect.collation import CollationSettings, StreamingCollator
from neuroscribe.datasets.collect.corpora import ExcerptBatch, excerpts, open_corpus
from neuroscribe.datasets.collect.subject import MLPNeuronProbe, SubjectModel

MEMORY_CHILD = """
import json, resource, sys, time
from pathlib import Path
from neuroscribe.datasets.collect import CollectConfig, collect
started = time.monotonic()
collect(CollectConfig(out_dir=Path(sys.argv[1]), layers=tuple(range(int(sys.argv[3]))), max_tokens=int(sys.argv[2]),
                      progress=False))
print(json.dumps({"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.monotonic() - started}))
"""


def load_batches(subject: SubjectModel, n_tokens: int, batch_size: int) -> list[ExcerptBatch]:
    config = CollectConfig(out_dir=Path("unused"), max_tokens=n_tokens, batch_size=batch_size)
    corpus = open_corpus("embedded", shuffle=True, seed=0)

    def tokenize(texts: list[str]) -> list[list[int]]:
        return subject.tokenizer(texts, add_special_tokens=False)["input_ids"]  # type: ignore[no-any-return]

    return list(excerpts(corpus.documents(), tokenize, excerpt_tokens=64, batch_size=batch_size,
                         max_excerpts=config.max_excerpts))


def collation_overhead(subject: SubjectModel, batches: list[ExcerptBatch], layers: list[int]) -> dict[str, float]:
    """`collect()`'s per-batch step (forward with one collator per layer) vs the bare truncated forward."""
    collators = [StreamingCollator(CollationSettings(), n_units=subject.mlp_width(layer), n_positions=64,
                                   excerpt_tokens=64, vocab_size=subject.vocab_size) for layer in layers]
    probes = [MLPNeuronProbe(layer) for layer in layers]
    bare = collect = 0.0
    for batch in batches:
        ids = torch.from_numpy(batch.token_ids)
        start = time.perf_counter()
        subject.stream(ids, [], max(layers), lambda _number, _values: None)
        bare += time.perf_counter() - start
        start = time.perf_counter()
        collate_batch(subject, probes, collators, batch, max(layers))
        collect += time.perf_counter() - start
    start = time.perf_counter()
    for collator in collators:
        collator.finalize()
    finalize = time.perf_counter() - start
    return {"bare_s": bare, "collect_s": collect, "finalize_s": finalize, "overhead": collect / bare - 1}


def naive(subject: SubjectModel, batches: list[ExcerptBatch], layers: list[int], k: int = 50) -> float:
    """Full forward pass, then one Python heap of (max, excerpt) per unit, updated excerpt by excerpt."""
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        subject.mlp_output_projection(layer).register_forward_pre_hook(
            lambda _m, inputs, layer=layer: captured.__setitem__(layer, inputs[0]))
        for layer in layers
    ]
    heaps: list[list[tuple[float, int]]] = [[] for _ in range(len(layers) * subject.mlp_width(0))]
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            subject.model(input_ids=torch.from_numpy(batch.token_ids), use_cache=False)
            maxima = torch.cat([captured[layer].amax(dim=1) for layer in layers], dim=-1).tolist()
            for excerpt, row in zip(batch.excerpt_ids.tolist(), maxima, strict=True):
                for unit, value in enumerate(row):
                    heap = heaps[unit]
                    if len(heap) < k:
                        heapq.heappush(heap, (value, excerpt))
                    elif value > heap[0][0]:
                        heapq.heapreplace(heap, (value, excerpt))
    elapsed = time.perf_counter() - start
    for hook in hooks:
        hook.remove()
    return elapsed


def peak_memory(n_tokens: int, n_layers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(Path(scratch) / "ds"), str(n_tokens),
                                 str(n_layers)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000, help="tokens for the overhead measurement")
    parser.add_argument("--naive-tokens", type=int, default=10_000, help="tokens for the naive comparison")
    parser.add_argument("--memory-tokens", type=int, default=25_000, help="N for the memory runs (N and 2N)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--parts", default="overhead,naive,memory", help="which measurements to run")
    args = parser.parse_args()
    layers = list(range(args.layers))
    subject = SubjectModel("embedded")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    units = len(layers) * subject.mlp_width(0)
    print(f"subject: embedded SmolLM2-135M, layers {layers[0]}-{layers[-1]}, {units} MLP neurons")

    parts = set(args.parts.split(","))
    if "overhead" in parts:
        report_overhead(subject, args.tokens, args.batch_size, layers)
    if "naive" in parts:
        report_naive(subject, args.naive_tokens, args.batch_size, layers)
    if "memory" in parts:
        report_memory(args.memory_tokens, args.layers)


def report_overhead(subject: SubjectModel, tokens: int, batch_size: int, layers: list[int]) -> None:
    batches = load_batches(subject, tokens, batch_size)
    n_tokens = sum(b.token_ids.size for b in batches)
    overhead = collation_overhead(subject, batches, layers)
    print(f"\n1. collation overhead over {n_tokens} tokens: bare truncated forward {overhead['bare_s']:.1f} s, "
          f"forward + collation {overhead['collect_s']:.1f} s -> overhead {100 * overhead['overhead']:.1f}% "
          f"(target <= 15%); finalize {overhead['finalize_s']:.1f} s")


def report_naive(subject: SubjectModel, tokens: int, batch_size: int, layers: list[int]) -> None:
    small = load_batches(subject, tokens, batch_size)
    small_tokens = sum(b.token_ids.size for b in small)
    naive_s = naive(subject, small, layers)
    ours = collation_overhead(subject, small, layers)["collect_s"]
    print(f"2. vs naive over {small_tokens} tokens: naive {naive_s:.1f} s, collector {ours:.1f} s -> "
          f"{naive_s / ours:.1f}x faster (target >= 5x)")


def report_memory(tokens: int, n_layers: int) -> None:
    first = peak_memory(tokens, n_layers)
    second = peak_memory(2 * tokens, n_layers)
    print(f"3. peak RSS of collect() incl. model and writing: {tokens} tokens "
          f"{first['max_rss_mib']:.0f} MiB ({first['seconds']:.0f} s), {2 * tokens} tokens "
          f"{second['max_rss_mib']:.0f} MiB ({second['seconds']:.0f} s) -> ratio "
          f"{second['max_rss_mib'] / first['max_rss_mib']:.2f} (target ~1)")


if __name__ == "__main__":
    main()
