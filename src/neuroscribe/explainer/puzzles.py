"""Neuron puzzles: made-up units with a known answer, as a check that an explainer finds what is there.

A puzzle file (the format of the reference `puzzles.json`) maps names to an `explanation` (the
answer), `sentences` (lists of tokens, where a token with an activation is a `[token, value]` pair
and a bare string is 0) and `false_explanations` (plausible wrong answers).

An explanation counts as recovering the answer when a simulator, reading it, predicts the puzzle's
activations about as well as it does reading the answer itself: wording never matters, only
predictive power. The judge (simulate + score) is passed in, because explainers are independent of
simulators and scoring; `neuroscribe.experiments` and `benchmarks/puzzles.py` build one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from neuroscribe.errors import DataError, describe
from neuroscribe.explainer.base import Explainer, ExplainerInput
from neuroscribe.records import ActivationRecord, UnitId

Judge = Callable[[str, Sequence[ActivationRecord]], Awaitable[float | None]]
"""(explanation, records) -> how well a simulator reading the explanation predicts the records
(e.g. pooled correlation); None when undefined."""


@dataclass(frozen=True, kw_only=True)
class Puzzle:
    name: str
    answer: str
    records: list[ActivationRecord]
    false_explanations: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class PuzzleResult:
    name: str
    answer: str
    explanations: list[str]
    """The explainer's candidates (may be empty: see `failures`)."""
    best_explanation: str | None
    best_score: float | None
    answer_score: float | None
    best_false_score: float | None
    """The best score among the puzzle's false explanations: what a plausible wrong answer gets."""
    recovered: bool
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class PuzzleReport:
    results: list[PuzzleResult]
    margin: float

    @property
    def n_recovered(self) -> int:
        return sum(r.recovered for r in self.results)

    def summary(self) -> str:
        lines = [f"recovered {self.n_recovered} of {len(self.results)} puzzles "
                 f"(score within {self.margin} of the known answer's)"]
        for r in self.results:
            mark = "yes" if r.recovered else "no "
            lines.append(f"  {mark} {r.name}: {r.best_explanation!r} scored {_fmt(r.best_score)}; answer "
                         f"{r.answer!r} {_fmt(r.answer_score)}; best false {_fmt(r.best_false_score)}")
        return "\n".join(lines)


def _fmt(score: float | None) -> str:
    return "undefined" if score is None else f"{score:.2f}"


def _record(sentence: object, where: str) -> ActivationRecord:
    if not isinstance(sentence, list):
        raise DataError(f"{where}: a sentence must be a list of tokens, got {type(sentence).__name__}")
    tokens, activations = [], []
    for i, item in enumerate(sentence):
        if isinstance(item, str):
            tokens.append(item)
            activations.append(0.0)
        elif (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], (int, float)) and not isinstance(item[1], bool)):
            tokens.append(item[0])
            activations.append(float(item[1]))
        else:
            raise DataError(f"{where}[{i}]: expected a token or a [token, activation] pair, got {item!r}")
    return ActivationRecord(tokens=tokens, activations=activations)


def load_puzzles(path: str | Path) -> list[Puzzle]:
    """Read a puzzle file; malformed entries fail naming the file, puzzle and position."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read puzzle file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping puzzle names to puzzles")
    puzzles = []
    for name, entry in data.items():
        where = f"{path}: puzzle {name!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("explanation"), str):
            raise DataError(f"{where}: needs an 'explanation' string")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{where}: needs a non-empty 'sentences' list")
        records = [_record(s, f"{where}.sentences[{i}]") for i, s in enumerate(sentences)]
        false = entry.get("false_explanations", [])
        puzzles.append(Puzzle(name=str(entry.get("name", name)), answer=entry["explanation"], records=records,
                              false_explanations=[str(f) for f in false]))
    return puzzles


async def solve(puzzle: Puzzle, explainer: Explainer, judge: Judge, margin: float) -> PuzzleResult:
    output = await explainer.explain(ExplainerInput(unit=UnitId(0, 0), records=puzzle.records))
    candidates = output.explanations
    scores = await asyncio.gather(*(judge(text, puzzle.records)
                                    for text in [puzzle.answer, *puzzle.false_explanations, *candidates]))
    answer_score = scores[0]
    false_scores = [s for s in scores[1:1 + len(puzzle.false_explanations)] if s is not None]
    scored = [(s, text) for s, text in zip(scores[1 + len(puzzle.false_explanations):], candidates, strict=True)
              if s is not None]
    best_score, best = max(scored, default=(None, candidates[0] if candidates else None))
    recovered = best_score is not None and answer_score is not None and best_score >= answer_score - margin
    return PuzzleResult(name=puzzle.name, answer=puzzle.answer, explanations=candidates, best_explanation=best,
                        best_score=best_score, answer_score=answer_score,
                        best_false_score=max(false_scores, default=None), recovered=recovered,
                        failures=[describe(f) for f in output.failures])


async def run_puzzles(puzzles: Sequence[Puzzle], explainer: Explainer, judge: Judge,
                      margin: float = 0.1) -> PuzzleReport:
    """Explain every puzzle and judge each explanation against the known answer by simulation score."""
    results = [await solve(puzzle, explainer, judge, margin) for puzzle in puzzles]
    return PuzzleReport(results=results, margin=margin)
