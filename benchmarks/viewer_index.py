"""Viewer: build time per unit, and how fast the index of 10,000 units loads in headless Chromium.

Writes two synthetic runs in the run-directory layout (the files RunStore writes, in bulk), builds the
viewer for each, and loads each index several times. The baseline is a 100-unit run in the same browser
in the same process; the target is an index of 10,000 units ready (data parsed, first page of rows
drawn) in under a second. Usage: `.venv/bin/python benchmarks/viewer_index.py [--units 10000]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from neuroscribe import serialization
from neuroscribe.experiments.store import RunStore, UnitOutcome, UnitUsage
from neuroscribe.records import ActivationRecord, NeuronId, NeuronRecord, UnitId
from neuroscribe.results import (
    ActivationScale,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
)
from neuroscribe.viewer.build import build_site
from neuroscribe.viewer.headless import Page, chromium_page

METHODS = ("token_activation_pair+all_at_once", "random_explanation+all_at_once")
WORDS = [" the", " cat", " sat", " on", " a", " mat", ",", ".", " dog", " ran", "\n", " über", " 猫"]
EXCERPT_TOKENS = 32
LOADS = 5


def _excerpt(rng: np.random.Generator) -> ActivationRecord:
    tokens = [WORDS[i] for i in rng.integers(0, len(WORDS), EXCERPT_TOKENS)]
    activations = [round(float(a), 4) for a in rng.gamma(0.5, 0.5, EXCERPT_TOKENS)]
    return ActivationRecord(tokens=tokens, activations=activations)


def write_synthetic_run(path: Path, n_units: int, seed: int = 0) -> None:
    """n_units units (layers of 1,000) with 4 top and 4 random excerpts each, scored on 2 + 2 by 2 methods."""
    rng = np.random.default_rng(seed)
    store = RunStore(path)
    store.create()
    store.write_manifest({"config_hash": "synthetic", "methods": list(METHODS), "units": n_units})
    result_lines: dict[str, list[str]] = {m: [] for m in METHODS}
    outcome_lines: dict[str, list[str]] = {m: [] for m in METHODS}
    for number in range(n_units):
        unit = UnitId(number // 1000, number % 1000)
        record = NeuronRecord(neuron_id=NeuronId.from_unit(unit),
                              most_positive_activation_records=[_excerpt(rng) for _ in range(4)],
                              random_sample=[_excerpt(rng) for _ in range(4)], mean=0.1, variance=0.2)
        record_path = store.record_path(unit)  # bulk: RunStore's own writes fsync each file
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(serialization.dumps(record) + "\n", encoding="utf-8")
        for method in METHODS:
            scored = [
                ScoredSequenceSimulation(
                    simulation=SequenceSimulation(
                        tokens=r.tokens, activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
                        expected_activations=[float(x) for x in rng.uniform(0, 10, EXCERPT_TOKENS)]),
                    true_activations=r.activations, ev_correlation_score=float(rng.uniform(-0.2, 0.9)))
                for r in record.most_positive_activation_records[:2] + record.random_sample[:2]
            ]
            score = float(rng.uniform(-0.2, 0.9))
            explanation = f"mentions of animals, variant {number % 97}"
            result = NeuronSimulationResults(neuron_id=record.neuron_id, scored_explanations=[ScoredExplanation(
                explanation=explanation,
                scored_simulation=ScoredSimulation(scored_sequence_simulations=scored, ev_correlation_score=score))])
            scores = {"top_and_random": score, "top_only": score + 0.1, "random_only": score - 0.1}
            outcome = UnitOutcome(unit=unit, status="ok", explanation=explanation, usage=UnitUsage(calls=2),
                                  scores=scores, named_scores={"ev_correlation": scores}, headline="ev_correlation")
            result_lines[method].append(serialization.dumps(result))
            outcome_lines[method].append(json.dumps(outcome.to_json_obj()))
    for method in METHODS:
        store.results_path(method).write_text("\n".join(result_lines[method]) + "\n", encoding="utf-8")
        store.outcomes_path(method).write_text("\n".join(outcome_lines[method]) + "\n", encoding="utf-8")


REAL_RECORD = (Path(__file__).resolve().parents[1] / "tests" / "data" / "refdata" / "mirror" / "neuron-explainer"
               / "data" / "collated-activations" / "1" / "1.json")


def ready_ms(page: Page, html: Path) -> float:
    """Median over LOADS loads of the time from navigation start to the page being drawn."""
    times = []
    for _ in range(LOADS):
        page.open(html.as_uri())
        if page.problems.all():
            raise RuntimeError(f"{html}: {page.problems.all()}")
        times.append(float(page.evaluate("performance.getEntriesByName('viewer-ready')[0].startTime")))
    return statistics.median(times)


def sort_ms(page: Page) -> float:
    return float(page.evaluate(
        "(() => { const t = performance.now(); document.querySelector('th[data-key=score]').click();"
        " return performance.now() - t; })()"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--baseline-units", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {platform.node()} ({platform.machine()}, {platform.system()}), Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp, chromium_page(timeout=120) as page:
        measured = {}
        for n in (args.baseline_units, args.units):
            run = Path(tmp) / f"run-{n}"
            write_synthetic_run(run, n)
            start = time.perf_counter()
            summary = build_site(run, Path(tmp) / f"site-{n}")
            build_s = time.perf_counter() - start
            index_kib = summary.index_path.stat().st_size / 1024
            ready = ready_ms(page, summary.index_path)
            measured[n] = ready
            print(f"{n:>6} units, {summary.n_rows:>6} index rows: build {build_s:7.1f} s "
                  f"({1000 * build_s / n:5.1f} ms/unit), index.html {index_kib:7.0f} KiB, "
                  f"index ready {ready:6.0f} ms (median of {LOADS}), sort by score {sort_ms(page):5.0f} ms")
        record_site = build_site(REAL_RECORD, Path(tmp) / "site-record")
        unit_page = record_site.unit_page("1/1")
        record_ready = ready_ms(page, unit_page)
        tokens = page.evaluate("document.querySelectorAll('.tok').length")
        print(f"real GPT-2 XL record 1/1 (100 excerpts drawn, 100 folded): unit page ready "
              f"{record_ready:.0f} ms (median of {LOADS}), {tokens} tokens drawn")
        ratio = measured[args.units] / measured[args.baseline_units]
        print(f"index ready: {args.units} units / {args.baseline_units} units = {ratio:.2f}x; "
              f"target < 1000 ms for 10,000 units: {'met' if measured[args.units] < 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
