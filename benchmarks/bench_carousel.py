"""How close our simulators come to the paper's simulator on the 12 "carousel" neurons of the paper.

For each neuron the data holds the paper's explanation and, for 4 scoring excerpts, the true
activations and the expected values of the paper's simulator (GPT-4, all-at-once). We simulate the
same excerpts from the same explanation with each of our simulators and report, per neuron and
pooled over all excerpts, the correlation of our expected values with the paper simulator's and with
the true activations. The baseline, measured in the same run, is chance: the same simulator reading
a mismatched explanation (the next neuron's). A simulator that follows explanations beats it.

Only 4 of the 10 scoring excerpts are public, so the paper's published score is not reproducible
here; per-excerpt comparisons are.

    .venv/bin/python benchmarks/bench_carousel.py                      # embedded model, all simulators
    .venv/bin/python benchmarks/bench_carousel.py --simulators all_at_once --model HuggingFaceTB/SmolLM2-1.7B-Instruct

With the embedded SmolLM2-135M-Instruct the simulator does not follow explanations (correlations
near 0 and no better than the mismatched baseline): the run proves the path works offline, not that
the scores mean anything.
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
from neuroscribe.scoring import correlation
from neuroscribe.simulator import Simulator, create_simulator

DATA = Path(__file__).parents[1] / "tests" / "data" / "refdata" / "paper" / "carousel_neurons.json"


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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--base-url", help="for --backend openai: the server's /v1 URL")
    parser.add_argument("--api-key-env", help="for --backend openai: the variable holding the key")
    parser.add_argument("--simulators", default="all_at_once,one_at_a_time,json")
    parser.add_argument("--neurons", type=int, default=12)
    parser.add_argument("--excerpts", type=int, default=4, help="scoring excerpts per neuron (at most 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="first N tokens of each excerpt")
    parser.add_argument("--slow", default="3,1,8", metavar="NEURONS,EXCERPTS,TOKENS",
                        help="what one_at_a_time and json simulate (they cost a request per token or generate the "
                             "whole excerpt, too slow for every excerpt on a CPU); 'all' = the same as all_at_once")
    args = parser.parse_args()

    # a long timeout: on a busy CPU one 64-token excerpt can take minutes, and a retry would start it over
    backend = create_backend(BackendSpec(type=args.backend, model=args.model, base_url=args.base_url,
                                         api_key_env=args.api_key_env),
                             TransportSettings(timeout_s=3600.0, max_retries=0))
    print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), backend {backend.name}")
    rows = []
    for name in args.simulators.split(","):
        n_neurons, n_excerpts, max_tokens = args.neurons, args.excerpts, args.max_tokens
        if name != "all_at_once" and args.slow != "all":
            n_neurons, n_excerpts, max_tokens = (min(a, int(b)) for a, b in
                                                 zip((n_neurons, n_excerpts, max_tokens), args.slow.split(","),
                                                     strict=True))
        neurons = load(DATA, n_neurons, n_excerpts, max_tokens)
        options: dict[str, object] = {"max_tokens_per_token": 8} if name == "json" else {}
        simulator = create_simulator(name, backend, options)
        print(f"\n## {name} ({len(neurons)} neurons x {n_excerpts} excerpts x up to {max_tokens} tokens)")
        print("| neuron | vs paper simulator | vs truth | vs truth, mismatched explanation | paper sim vs truth |")
        print("|---|---|---|---|---|")
        ours, mismatched, kept = [], [], []
        start = time.perf_counter()
        for i, neuron in enumerate(neurons):
            other = neurons[(i + 1) % len(neurons)].explanation
            predicted = await simulate(simulator, neuron.explanation, neuron)
            control = await simulate(simulator, other, neuron)
            if predicted is None or control is None:
                continue
            true = [e.true for e in neuron.excerpts]
            paper = [e.paper for e in neuron.excerpts]
            ours.append(predicted)
            mismatched.append(control)
            kept.append(neuron)
            print(f"| {neuron.label} | {fmt(pooled(predicted, paper))} | {fmt(pooled(predicted, true))} | "
                  f"{fmt(pooled(control, true))} | {fmt(pooled(paper, true))} |")
        seconds = time.perf_counter() - start
        all_true = [e.true for n in kept for e in n.excerpts]
        all_paper = [e.paper for n in kept for e in n.excerpts]
        flat = [row for rows_ in ours for row in rows_]
        flat_control = [row for rows_ in mismatched for row in rows_]
        summary = {
            "simulator": name,
            "neurons scored": f"{len(kept)}/{len(neurons)}",
            "vs paper simulator": pooled(flat, all_paper),
            "vs truth": pooled(flat, all_true),
            "vs truth, mismatched (chance)": pooled(flat_control, all_true),
            "paper simulator vs truth": pooled(all_paper, all_true),
            "seconds": round(seconds, 1),
        }
        print(f"| pooled | {fmt(summary['vs paper simulator'])} | {fmt(summary['vs truth'])} | "
              f"{fmt(summary['vs truth, mismatched (chance)'])} | {fmt(summary['paper simulator vs truth'])} |")
        rows.append(summary)
    print("\nsummary:", json.dumps(rows, indent=1))
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
