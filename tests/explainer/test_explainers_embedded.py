"""Every explainer, and the puzzle check, on the embedded model (no key, no network).

SmolLM2-135M-Instruct writes weak explanations and does not follow them as a simulator; these tests
prove the paths run on a real model and produce parsed explanations or recorded failures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from neuroscribe.explainer import ExplainerInput, ExplainerOutput, create_explainer
from neuroscribe.explainer.puzzles import load_puzzles, run_puzzles
from neuroscribe.formatting import sparse_pair_record
from neuroscribe.llm.base import Backend
from neuroscribe.records import ActivationRecord, NeuronRecord, UnitId, UnitKind
from neuroscribe.results import TokenLookupTableSummaryOfNeuron
from neuroscribe.scoring import score_sequences
from neuroscribe.serialization import load_json_file
from neuroscribe.simulator import create_simulator

pytestmark = pytest.mark.slow

PUZZLES = Path(__file__).parents[1] / "data" / "refdata" / "puzzles" / "puzzles.json"


def assert_explained_or_recorded(output: ExplainerOutput, n_candidates: int) -> None:
    assert len(output.explanations) + len(output.failures) >= 1
    assert len(output.explanations) <= n_candidates
    assert all(e.strip() and e == e.strip() and not e.endswith(".") for e in output.explanations)


def lookup_table(records: Sequence[ActivationRecord], n: int) -> TokenLookupTableSummaryOfNeuron:
    sums: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for token, activation in zip(record.tokens, record.activations, strict=True):
            sums[token].append(activation)
    means = sorted(((sum(v) / len(v), t) for t, v in sums.items()), reverse=True)[:n]
    return TokenLookupTableSummaryOfNeuron(tokens=[t for _, t in means], average_activations=[m for m, _ in means])


async def test_token_lookup_explainer_on_a_real_record(embedded_backend: Backend, real_record_path: Path) -> None:
    record = load_json_file(real_record_path, NeuronRecord)
    table = lookup_table(record.most_positive_activation_records, 15)
    explainer = create_explainer("token_lookup", embedded_backend,
                                 {"max_tokens": 12, "n_worked_examples": 1, "prompt_format": "completion"})
    output = await explainer.explain(ExplainerInput(unit=record.neuron_id.to_unit(), lookup_table=table))
    assert_explained_or_recorded(output, 1)
    assert output.usage.prompt_tokens > 0


async def test_attention_head_explainer_two_candidates(embedded_backend: Backend) -> None:
    record = sparse_pair_record(("When", " Mary", " and", " John", " went", " out", ",", " John", " gave"),
                                {(7, 3): 5.0, (8, 1): 3.0})
    explainer = create_explainer("attention_head", embedded_backend,
                                 {"max_tokens": 12, "n_candidates": 2, "temperature": 0.9, "n_worked_examples": 1})
    output = await explainer.explain(ExplainerInput(unit=UnitId(2, 3, UnitKind.ATTENTION_HEAD),
                                                    token_pair_records=[record]))
    assert_explained_or_recorded(output, 2)


async def test_puzzles_run_as_an_explainer_check(embedded_backend: Backend) -> None:
    puzzles = [p for p in load_puzzles(PUZZLES) if p.name in ("colors", "feet")]
    for puzzle in puzzles:  # short: two sentences, one wrong answer
        puzzle.records[:] = puzzle.records[:2]
        puzzle.false_explanations[:] = puzzle.false_explanations[:1]
    simulator = create_simulator("all_at_once", embedded_backend, {"n_worked_examples": 0})

    async def judge(explanation: str, records: Sequence[ActivationRecord]) -> float | None:
        simulations = [await simulator.simulate(explanation, r.tokens) for r in records]
        return score_sequences([(s, r.activations) for s, r in zip(simulations, records, strict=True)]
                               ).ev_correlation_score

    explainer = create_explainer("token_activation_pair", embedded_backend, {"max_tokens": 12, "n_worked_examples": 0})
    report = await run_puzzles(puzzles, explainer, judge)
    assert [r.name for r in report.results] == ["colors", "feet"]
    for result in report.results:
        assert result.answer_score is not None  # the known answer is always simulated and scored
        assert result.explanations or result.failures
        assert result.recovered == (result.best_score is not None and result.best_score >= result.answer_score - 0.1)
    assert report.summary().startswith(f"recovered {report.n_recovered} of 2 puzzles")
