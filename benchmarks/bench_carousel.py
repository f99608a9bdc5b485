"""Do our simulators follow explanations? The paper's 12 "carousel" neurons, each simulator against chance.

For each neuron the data holds the paper's explanation and, for 4 scoring excerpts, the true
activations and the expected values of the paper's simulator (GPT-4, all-at-once). Each of our
simulators reads the same explanation and excerpts; per neuron we take the Pearson r of its values with
the true activations (and with the paper simulator's), pooled over that neuron's excerpts. The baseline,
measured in the same run, is chance: the same simulator reading a mismatched explanation (the next
neuron's). A simulator that follows explanations beats it on most neurons. Means over neurons come with
a 95% bootstrap interval over neurons, and the mean difference from the control with its interval and a
sign-flip p-value (`neuroscribe.scoring`). A constant prediction (e.g. the lexical simulator where no
token is named) has no correlation: it is counted as r = 0 in the means, never as beating the control,
and the number of such neurons is shown.

Only 4 of the 10 scoring excerpts are public, so the paper's published scores are not reproducible
here; per-excerpt comparisons are.

    .venv/bin/python benchmarks/bench_carousel.py                      # lexical, embedding, trained, embedded LLM
    .venv/bin/python benchmarks/bench_carousel.py --simulators trained:checkpoint=\"/path/to/checkpoint\"
    .venv/bin/python benchmarks/bench_carousel.py --simulators embedding,lexical
    .venv/bin/python benchmarks/bench_carousel.py --simulators all_at_once --llm all --model <hub id or path>

A simulator is `NAME` or `NAME:OPTION=VALUE` (the value read as JSON), e.g. `embedding:lexical=false`.
`trained` reads the shipped checkpoint by default (trained on synthetic units only: the carousel neurons and
the puzzles are never training data nor used to choose anything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from neuroscribe.errors import NeuroscribeError
from neuroscribe.llm import BackendSpec, TransportSettings, create_backend
from neuroscribe.registry import registered_options
from neuroscribe.scoring import Estimate, bootstrap_mean, correlation, paired_test
from neuroscribe.simulator import SIMULATORS, Simulator, create_simulator

DATA = Path(__file__).parents[1] / "tests" / "data" / "refdata" / "paper" / "carousel_neurons.json"
PER_TOKEN = {"one_at_a_time", "json", "generated_logprobs"}
"""LLM simulators that cost a request per token or generate the whole excerpt (`--slow`)."""


@dataclass(frozen=True)
class Excerpt:
    tokens: list[str]
    true: list[float]
    paper: list[float]


@dataclass(frozen=True)
class Neuron:
    label: str
    explanation: str
    excerpts: list[Excerpt]


def load(path: Path, n_neurons: int, n_excerpts: int, max_tokens: int) -> list[Neuron]:
    neurons = []
    for entry in json.loads(path.read_text())[:n_neurons]:
        excerpts = []
        for sequence in entry["score_sequences"][:n_excerpts]:
            actual, simulated = sequence["actual"][:max_tokens], sequence["simulated"][:max_tokens]
            assert [a["token"] for a in actual] == [s["token"] for s in simulated]
            excerpts.append(Excerpt([a["token"] for a in actual], [a["strength"] for a in actual],
                                    [s["strength"] for s in simulated]))
        neurons.append(Neuron(f"{entry['layer']}/{entry['neuron']}", entry["explanation"].strip(), excerpts))
    return neurons


def pooled(a: list[list[float]], b: list[list[float]]) -> float | None:
    return correlation([x for row in a for x in row], [x for row in b for x in row]).value


async def simulate(simulator: Simulator, explanation: str, neuron: Neuron) -> list[list[float]] | None:
    try:
        simulations = await asyncio.gather(*(simulator.simulate(explanation, e.tokens) for e in neuron.excerpts))
    except NeuroscribeError as exc:  # a failed excerpt is reported, not scored
        print(f"    {neuron.label}: failed ({type(exc).__name__}: {str(exc)[:100]})")
        return None
    return [s.expected_activations for s in simulations]


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def interval(estimate: Estimate) -> str:
    if estimate.mean is None:
        return "n/a"
    return f"{estimate.mean:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}]" if estimate.low is not None else (
        f"{estimate.mean:+.3f}")


def parse_simulator(text: str) -> tuple[str, dict[str, object]]:
    name, _, option = text.partition(":")
    if not option:
        return name, {}
    key, _, value = option.partition("=")
    return name, {key: json.loads(value)}


def subset(spec: str, full: tuple[int, int, int]) -> tuple[int, int, int]:
    """'all' -> `full`; 'N,E,T' -> at most N neurons, E excerpts, T tokens."""
    if spec == "all":
        return full
    n, e, t = (min(a, int(b)) for a, b in zip(full, spec.split(","), strict=True))
    return n, e, t


async def bench(label: str, simulator: Simulator, neurons: list[Neuron]) -> dict[str, object]:
    await simulator.simulate("warm-up", ["a", " b"])  # loads whatever the simulator loads once
    ours: list[float | None] = []
    control: list[float | None] = []
    vs_paper: list[float | None] = []
    truth_vs_paper: list[float | None] = []
    simulated = 0
    start = time.perf_counter()
    print(f"\n## {label}\n\n| neuron | vs truth | vs truth, mismatched explanation | vs paper simulator | "
          "paper simulator vs truth |\n|---|---|---|---|---|")
    for i, neuron in enumerate(neurons):
        other = neurons[(i + 1) % len(neurons)].explanation
        predicted = await simulate(simulator, neuron.explanation, neuron)
        mismatched = await simulate(simulator, other, neuron)
        simulated += 2 * len(neuron.excerpts)
        true, paper = [e.true for e in neuron.excerpts], [e.paper for e in neuron.excerpts]
        row = [None if p is None else pooled(p, true) for p in (predicted, mismatched)]
        ours.append(row[0])
        control.append(row[1])
        vs_paper.append(None if predicted is None else pooled(predicted, paper))
        truth_vs_paper.append(pooled(paper, true))
        print(f"| {neuron.label} | {fmt(row[0])} | {fmt(row[1])} | {fmt(vs_paper[-1])} | {fmt(truth_vs_paper[-1])} |")
    seconds = time.perf_counter() - start
    zeroed = [0.0 if r is None else r for r in ours]
    zeroed_control = [0.0 if r is None else r for r in control]
    difference = paired_test(zeroed, zeroed_control, seed=0)
    summary = {
        "simulator": label,
        "neurons": len(neurons),
        "excerpts x tokens": f"{len(neurons[0].excerpts)} x {max(len(e.tokens) for e in neurons[0].excerpts)}",
        "r vs truth": interval(bootstrap_mean(zeroed, seed=0)),
        "r vs truth, mismatched": interval(bootstrap_mean(zeroed_control, seed=0)),
        "difference": f"{difference.mean_difference:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}] "
                      f"p={difference.p_value:.3f}",
        "beats control": f"{sum(a > b for a, b in zip(zeroed, zeroed_control, strict=True) if a)} / {len(neurons)}",
        "undefined (constant)": f"{sum(r is None for r in ours)} / {sum(r is None for r in control)}",
        "r vs paper simulator": interval(bootstrap_mean([0.0 if r is None else r for r in vs_paper], seed=0)),
        "paper simulator vs truth": interval(bootstrap_mean(truth_vs_paper, seed=0)),
        "ms per excerpt": round(1000 * seconds / simulated, 1),
    }
    print("\n" + "\n".join(f"- {key}: {value}" for key, value in summary.items()))
    return summary


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--base-url", help="for --backend openai: the server's /v1 URL")
    parser.add_argument("--api-key-env", help="for --backend openai: the variable holding the key")
    parser.add_argument("--simulators", default="lexical,embedding,embedding:lexical=false,trained,all_at_once")
    parser.add_argument("--neurons", type=int, default=12)
    parser.add_argument("--excerpts", type=int, default=4, help="scoring excerpts per neuron (at most 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="first N tokens of each excerpt")
    parser.add_argument("--llm", default="12,1,32", metavar="NEURONS,EXCERPTS,TOKENS",
                        help="what all_at_once simulates (the embedded model on a CPU takes seconds per excerpt); "
                             "'all' = the same as the simulators that ask no model")
    parser.add_argument("--slow", default="3,1,8", metavar="NEURONS,EXCERPTS,TOKENS",
                        help="what one_at_a_time, json and generated_logprobs simulate (a request per token or the "
                             "whole excerpt generated); 'all' = the same as the simulators that ask no model")
    args = parser.parse_args()

    # a long timeout: on a busy CPU one 64-token excerpt can take minutes, and a retry would start it over
    backend = create_backend(BackendSpec(type=args.backend, model=args.model, base_url=args.base_url,
                                         api_key_env=args.api_key_env),
                             TransportSettings(timeout_s=3600.0, max_retries=0))
    print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), backend {backend.name}")
    full = (args.neurons, args.excerpts, args.max_tokens)
    rows = []
    for text in args.simulators.split(","):
        name, options = parse_simulator(text)
        if name == "json":
            options.setdefault("max_tokens_per_token", 8)
        cls = SIMULATORS.get(name)
        asks_no_model = cls.estimate(registered_options(SIMULATORS, name, options), args.max_tokens).calls == 0
        shape = full if asks_no_model else subset(args.slow if name in PER_TOKEN else args.llm, full)
        rows.append(await bench(text, create_simulator(name, backend, options), load(DATA, *shape)))
    print("\nsummary:", json.dumps(rows, indent=1))
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
