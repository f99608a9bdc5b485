"""All-position distributions on the local model: batching + shared-prefix reuse vs independent passes.

One explanation is scored on 10 excerpts of 64 tokens (GPT-2 XL layer 1 neuron 1, as published) with
a paper-style all-at-once prompt: instructions, three worked examples (real 64-token excerpts of the
same neuron with their 0-10 values), the explanation, then the excerpt as `token<TAB>unknown` lines
whose `unknown` slots are read. Both ways run in the same process on the same loaded weights:

* straightforward: 10 independent full-prompt forward passes (`prefix_reuse=False, max_batch_size=1`);
* ours: the 10 requests at once (`asyncio.gather`), so the worker computes the shared prompt head
  once and the 10 excerpt tails in one batched pass on its key/value cache.

It checks that the expected values agree (max abs difference <= 1e-4), and prints the speedup and the
bound that token counts set (tokens the straightforward way computes / tokens we compute; both
include the extra token per slot that gives "10", two tokens for SmolLM2, its exact probability).

    .venv/bin/python benchmarks/bench_local_distributions.py [--repeats 3] [--threads 1] [--prompt simulator]

With the paper prompt it also measures a later explanation of the same run: the same requests on a
backend that has just scored another explanation with the same instructions and worked examples, whose
key/values its prefix cache keeps (what every explanation after the first one of a run sees).

`--prompt simulator` uses the all-at-once simulator's own prompt instead (short worked examples, so a
smaller shared head and a lower bound).

SmolLM2-135M does not follow explanations: this measures the machinery, not simulation quality.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from neuroscribe import formatting
from neuroscribe.llm.base import CompletionRequest, DistributionRequest, PromptSegment
from neuroscribe.llm.hf import HFBackend
from neuroscribe.records import normalize_activations

RECORD = Path(__file__).parents[1] / "tests/data/refdata/mirror/neuron-explainer/data/collated-activations/1/1.json"
INSTRUCTIONS = (
    "We study single neurons of a language model. Each neuron picks out some kind of text. Read the summary "
    "of what a neuron picks out, then say how strongly it fires on every token of a short document. Each line "
    "is a token, a tab and the activation, from 0 to 10; most activations are 0. Where the activation is "
    '"unknown", predict it.\n\n'
)
WORKED_EXPLANATIONS = ("numbers in lists", "the start of a quotation", "words that follow a comma")
EXPLANATION = "words and phrases near the start of a sentence"


def example_block(number: int, explanation: str, tokens: Sequence[str], values: Sequence[int | str]) -> str:
    lines = formatting.activation_lines(tokens, values)
    return (
        f"Neuron {number}\nExplanation of neuron {number} behavior: {formatting.NEURON_LEAD_IN} {explanation}.\n"
        f"Activations:\n{formatting.START}\n" + "\n".join(lines) + f"\n{formatting.END}\n\n"
    )


def build_requests(n_excerpts: int, explanation: str = EXPLANATION) -> list[DistributionRequest]:
    records = json.loads(RECORD.read_text())["most_positive_activation_records"]
    head = INSTRUCTIONS
    for number, (record, worked) in enumerate(zip(records, WORKED_EXPLANATIONS, strict=False), start=1):
        values = normalize_activations(record["activations"], max(record["activations"]))
        head += example_block(number, worked, record["tokens"], values)
    number = len(WORKED_EXPLANATIONS) + 1
    head += (
        f"Neuron {number}\nExplanation of neuron {number} behavior: {formatting.NEURON_LEAD_IN} {explanation}.\n"
        f"Activations:\n{formatting.START}\n"
    )
    requests = []
    for record in records[len(WORKED_EXPLANATIONS) : len(WORKED_EXPLANATIONS) + n_excerpts]:
        segments = []
        for i, token in enumerate(record["tokens"]):
            segments.append(PromptSegment(text=f"{head if i == 0 else chr(10)}{formatting.render_token(token)}\t"))
            segments.append(PromptSegment(text=formatting.UNKNOWN, read_distribution=True))
        segments.append(PromptSegment(text=f"\n{formatting.END}\n"))
        requests.append(DistributionRequest(segments=tuple(segments), candidates=formatting.VALUE_CANDIDATES))
    return requests


def simulator_requests(n_excerpts: int) -> list[DistributionRequest]:
    """The same excerpts as the all-at-once simulator of this package prompts them (its short worked examples)."""
    from neuroscribe.simulator.all_at_once import distribution_request

    records = json.loads(RECORD.read_text())["most_positive_activation_records"]
    chosen = records[len(WORKED_EXPLANATIONS) : len(WORKED_EXPLANATIONS) + n_excerpts]
    return [distribution_request(EXPLANATION, record["tokens"], n_worked_examples=2) for record in chosen]


def expected_values(distributions: Sequence[Sequence[float]]) -> list[float]:
    return [sum(v * p for v, p in enumerate(row)) / sum(row) for row in distributions]


async def timed(
    backend: HFBackend, requests: list[DistributionRequest], together: bool
) -> tuple[float, int, list[list[float]], list[int]]:
    """Seconds, tokens computed, per-excerpt expected values and prompt tokens for one way of running."""
    before = backend.stats.computed_tokens
    started = time.perf_counter()
    if together:
        completions = await asyncio.gather(*[backend.complete(CompletionRequest(distributions=r)) for r in requests])
    else:
        completions = [await backend.complete(CompletionRequest(distributions=r)) for r in requests]
    seconds = time.perf_counter() - started
    return (
        seconds,
        backend.stats.computed_tokens - before,
        [expected_values(c.distributions) for c in completions],
        [c.usage.prompt_tokens for c in completions],
    )


def report(label: str, times_base: list[float], tokens_base: int, times: list[float], tokens: int) -> None:
    """Median time, tokens, per-round speedups, speedup of the medians and its ratio to the token bound."""
    speedup = statistics.median(times_base) / statistics.median(times)
    bound = tokens_base / tokens
    rounds = ", ".join(f"{base / ours:.2f}x" for base, ours in zip(times_base, times, strict=True))
    print(f"{label}: {statistics.median(times):.2f} s, {tokens} tokens computed; per round {rounds}")
    print(f"  speedup: {speedup:.2f}x | token-count bound: {bound:.2f}x | speedup / bound: {speedup / bound:.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--excerpts", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--prompt",
        choices=("paper", "simulator"),
        default="paper",
        help="paper: three 64-token worked examples (the target); simulator: the all_at_once simulator's own prompt",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    requests = build_requests(args.excerpts) if args.prompt == "paper" else simulator_requests(args.excerpts)
    ours = HFBackend("embedded")
    straightforward = HFBackend("embedded", prefix_reuse=False, max_batch_size=1)  # same weights
    warmup = DistributionRequest(
        segments=(PromptSegment(text="Warm-up:"), PromptSegment(text="1", read_distribution=True)),
        candidates=formatting.VALUE_CANDIDATES,
    )
    for backend in (ours, straightforward):
        await backend.complete(CompletionRequest(distributions=warmup))

    times_base: list[float] = []
    times_ours: list[float] = []
    times_later: list[float] = []
    diffs: list[float] = []
    prompt_tokens: list[int] = []
    tokens_base = tokens_ours = tokens_later = 0
    for round_number in range(args.repeats):
        if round_number:
            ours = HFBackend("embedded")  # a cold prefix cache each round: nothing carried over
        t_base, tokens_base, ev_base, prompt_tokens = await timed(straightforward, requests, together=False)
        t_ours, tokens_ours, ev_ours, _ = await timed(ours, requests, together=True)
        times_base.append(t_base)
        times_ours.append(t_ours)
        evs = [ev_ours]
        if args.prompt == "paper":
            # A later explanation of the same run: another explanation was scored before with the same
            # instructions and worked examples, so their key/values are in the prefix cache.
            later = HFBackend("embedded")
            await later.complete(CompletionRequest(distributions=build_requests(1, "another explanation")[0]))
            t_later, tokens_later, ev_later, _ = await timed(later, requests, together=True)
            times_later.append(t_later)
            evs.append(ev_later)
            await later.aclose()
        pairs = [(a, b) for ev in evs for xs, ys in zip(ev_base, ev, strict=True) for a, b in zip(xs, ys, strict=True)]
        diffs.append(max(abs(a - b) for a, b in pairs))

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} | {os.cpu_count()} logical CPUs | "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads | load average {os.getloadavg()[0]:.1f}"
    )
    print(f"model: {ours.name} | {args.excerpts} excerpts x 64 tokens | prompt: {args.prompt} | rounds: {args.repeats}")
    print(f"prompt tokens per excerpt: {min(prompt_tokens)}-{max(prompt_tokens)}")
    print(f"straightforward: {statistics.median(times_base):.2f} s, {tokens_base} tokens computed")
    print(f"max |expected value difference|: {max(diffs):.2e} (limit 1e-4)")
    report("ours (first explanation of a run)", times_base, tokens_base, times_ours, tokens_ours)
    if times_later:
        report("ours (later explanation of a run, worked examples cached)", times_base, tokens_base, times_later,
               tokens_later)
    assert max(diffs) <= 1e-4, "distributions differ between the two ways"
    for backend in (ours, straightforward):
        await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
