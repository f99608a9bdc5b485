"""Sanity checks of scorers: a score that follows explanations must fall when the explanation gets worse.

For every explained method of a finished run (controls, and scorers that judge no explanation, are left
out) and every unit it scored, the explanation is scored again beside three worse versions of it, each
drawn with the run's seed:

- **wrong label**: another unit's explanation from the same method (a seeded derangement of the units);
- **missing label**: a compound explanation ('A and B', 'A, B; C', 'A or B') with half its parts dropped;
  an explanation of one part has nothing to drop: not applicable, neither a pass nor a fail;
- **extra label**: an unrelated concept from our own list appended (', and also dates in the 1800s').

A check *holds* when the worse version scores strictly below the original; a tie does not hold (the
scorer did not notice). A score that is undefined on either side (a constant simulation has no
correlation) leaves the check *undefined*, and a scoring call that fails leaves it *failed*: both are
counted and shown, never decided. Per scorer, the share of held checks among the decided ones comes with a
Wilson interval and a verdict in words. A scorer that ignores the explanation passes at most half of them
by chance (its two scores are draws from the same distribution, and ties do not count), so a share whose
interval reaches 0.5 says nothing in the scorer's favour.

Why the original is scored again instead of read from the run: the comparison must be paired, both sides
scored by the same code, backend, options and response cache in one process, so that a difference comes
from the explanation alone. A stored score may come from older code or another backend state (device,
batching, a changed default) and would put that drift into every check. The original is normally answered
from the run's response cache, so this costs little, and whether it equals the stored score is reported: a
difference is drift worth knowing about, not something to hide by mixing the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neuroscribe.assets import EMBEDDED_MODEL_NAME
from neuroscribe.errors import ConfigError, DataError, NeuroscribeError
from neuroscribe.experiments.config import ExperimentConfig, is_control
from neuroscribe.experiments.evidence import EvidenceBuilder
from neuroscribe.experiments.manifest import run_config, run_dataset
from neuroscribe.experiments.store import RunStore, UnitOutcome, now_iso
from neuroscribe.llm.base import Backend
from neuroscribe.llm.usage import UsageLedger, UsageTotals
from neuroscribe.records import UnitId
from neuroscribe.scorers import Scorer, create_scorer, primary_variant
from neuroscribe.scoring import Estimate, wilson_fraction

CHECKS = ("wrong_label", "missing_label", "extra_label")
CHECK_TITLES = {"wrong_label": "wrong label", "missing_label": "missing label", "extra_label": "extra label"}
ALL = "all"
CHANCE = 0.5
"""The most a scorer that ignores explanations passes on average (ties do not hold)."""
SANITY_FILE = "sanity.json"

UNRELATED_CONCEPTS = (
    "dates in the 1800s",
    "names of chemical elements",
    "chess moves",
    "knitting patterns",
    "volcanic eruptions",
    "Roman numerals",
    "species of deep-sea fish",
    "units of air pressure",
)
"""What the extra-label check appends (one drawn per unit): concepts of our own, far from one another, that
an explanation of a unit seldom names."""

_PARTS = re.compile(r"\s*[;,](?!\d)\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+", re.IGNORECASE)
"""Where a compound explanation splits: commas and semicolons (not inside numbers such as 1,000, and with
any 'and' or 'or' after them), ' and ', ' or '."""

Status = Literal["held", "not_held", "undefined", "failed", "not_applicable"]
DECIDED: tuple[Status, ...] = ("held", "not_held")


# --- the worse explanations (pure) ----------------------------------------------------------------------


def compound_parts(explanation: str) -> list[str]:
    """The parts of a compound explanation, in order (one part: not compound)."""
    return [part for part in (p.strip(" .") for p in _PARTS.split(explanation.strip())) if part]


def drop_half(explanation: str, rng: random.Random) -> str | None:
    """The explanation with half its parts (rounded down, at least one) dropped, the rest kept in order and
    joined by commas; None when it has a single part."""
    parts = compound_parts(explanation)
    if len(parts) < 2:
        return None
    dropped = set(rng.sample(range(len(parts)), len(parts) // 2))
    return ", ".join(part for i, part in enumerate(parts) if i not in dropped)


def with_extra_concept(explanation: str, rng: random.Random) -> str:
    """The explanation with one of UNRELATED_CONCEPTS appended."""
    return f"{explanation.strip().rstrip('.').strip()}, and also {rng.choice(UNRELATED_CONCEPTS)}"


def derangement(n: int, rng: random.Random) -> list[int]:
    """A uniformly drawn permutation of range(n) that moves every element (n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    order = list(range(n))
    while True:  # about e draws on average
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order


def _rng(seed: int, check: str, method: str, unit: UnitId | None = None) -> random.Random:
    return random.Random(f"sanity:{check}:{seed}:{method}:{unit}")


def wrong_partners(units: Sequence[UnitId], seed: int, method: str) -> dict[UnitId, UnitId]:
    """Whose explanation each unit gets in the wrong-label check: a seeded derangement of `units` (none
    with fewer than two units)."""
    if len(units) < 2:
        return {}
    order = derangement(len(units), _rng(seed, "wrong_label", method))
    return {unit: units[j] for unit, j in zip(units, order, strict=True)}


@dataclass(frozen=True, kw_only=True)
class Perturbation:
    check: str
    explanation: str | None
    """The worse explanation; None where the check does not apply."""
    note: str
    """How it was made, or why it does not apply."""


def perturbations(explanation: str, unit: UnitId, partner: tuple[UnitId, str] | None, seed: int,
                  method: str) -> list[Perturbation]:
    """The three worse versions of `explanation` (of `unit` under `method`); `partner` is the other unit
    and its explanation for the wrong-label check (None: the method has no other unit)."""
    if partner is None:
        wrong = Perturbation(check="wrong_label", explanation=None, note="the method has no other unit")
    elif partner[1].strip() == explanation.strip():
        wrong = Perturbation(check="wrong_label", explanation=None,
                             note=f"unit {_ref(partner[0])} has the same explanation")
    else:
        wrong = Perturbation(check="wrong_label", explanation=partner[1],
                             note=f"the explanation of unit {_ref(partner[0])}")
    missing = drop_half(explanation, _rng(seed, "missing_label", method, unit))
    return [
        wrong,
        Perturbation(check="missing_label", explanation=missing,
                     note=("half of its parts dropped" if missing is not None
                           else "not compound: no ' and ', ' or ', comma or semicolon to split at")),
        Perturbation(check="extra_label", explanation=with_extra_concept(explanation,
                                                                         _rng(seed, "extra_label", method, unit)),
                     note="an unrelated concept appended"),
    ]


# --- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """One check of one unit's explanation under one scorer."""

    check: str
    explanation: str | None
    """The worse explanation (None: not applicable)."""
    score: float | None
    """Its score (None: undefined, failed or not applicable)."""
    status: Status
    note: str
    """How the worse explanation was made, or why the check was not decided (the failure's message)."""


@dataclass(frozen=True, kw_only=True)
class UnitSanity:
    """The checks of one unit under one method."""

    method: str
    unit: UnitId
    explanation: str
    compared: str
    """Which score is compared, NAME.VARIANT (the scorer's headline in its primary variant)."""
    score: float | None
    """The original explanation's score, computed now beside the worse ones (None: undefined or failed)."""
    stored_score: float | None
    """What the run recorded for it (same score and variant)."""
    failure: str | None
    """Why the original could not be scored (then every check failed); None when it was."""
    checks: tuple[CheckResult, ...]


@dataclass(frozen=True, kw_only=True)
class Tally:
    """How one check (or all of them) went for one scorer."""

    check: str
    counts: Mapping[Status, int]
    share: Estimate
    """Share of held checks among the decided ones (held or not held), with a Wilson interval."""

    @property
    def held(self) -> int:
        return self.counts.get("held", 0)

    @property
    def decided(self) -> int:
        return sum(self.counts.get(s, 0) for s in DECIDED)


@dataclass(frozen=True, kw_only=True)
class ScorerSanity:
    """Every check of one scorer (on its one model), over the explained methods it scored."""

    scorer: str
    model: str
    """The scorer's backend, in words (config name, type and model)."""
    embedded: bool
    """Whether that model is the embedded SmolLM2-135M."""
    score: str
    """The score compared, as NAME.VARIANT (the scorer's headline in its primary variant)."""
    units: tuple[UnitSanity, ...]

    def tally(self, check: str) -> Tally:
        results = [c for u in self.units for c in u.checks if check in (ALL, c.check)]
        counts: dict[Status, int] = {}
        for result in results:
            counts[result.status] = counts.get(result.status, 0) + 1
        decided = [r.status == "held" if r.status in DECIDED else None for r in results]
        return Tally(check=check, counts=counts, share=wilson_fraction(decided))

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(u.method for u in self.units))

    @property
    def n_stored_equal(self) -> tuple[int, int]:
        """(originals whose score now equals the stored one, originals scored now and stored)."""
        both = [(u.score, u.stored_score) for u in self.units if u.score is not None and u.stored_score is not None]
        return sum(abs(now - stored) <= 1e-9 for now, stored in both), len(both)

    @property
    def verdict(self) -> str:
        return verdict(f"{self.scorer} on {self.model}", self.tally(ALL))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _interval(share: Estimate) -> str:
    return "n/a" if share.low is None or share.high is None else f"[{_percent(share.low)}, {_percent(share.high)}]"


def verdict(who: str, tally: Tally) -> str:
    """One plain sentence on how `who` did over every check (`tally` of ALL)."""
    held, decided, share = tally.held, tally.decided, tally.share
    if not decided:
        return f"{who}: no check could be decided (every one was undefined, failed or not applicable)"
    counted = f"{held} of {decided} checks ({_percent(share.mean)}, 95% interval {_interval(share)})"
    if held == decided:
        return (f"{who} passes all {decided} checks: its scores fall whenever the explanation is made wrong, "
                "incomplete or padded")
    if share.low is not None and share.low > CHANCE:
        return (f"{who} passes most checks, {counted}, more often than chance: its scores follow "
                "explanations, though not always")
    if share.mean is not None and share.mean <= CHANCE:
        return (f"{who} passes few checks, {counted}, no more than a scorer that ignores the explanation "
                "would by chance: its scores do not follow explanations")
    return (f"{who} passes {counted}, which chance could explain (a scorer that ignores the explanation passes "
            "up to half): too few checks to say that its scores follow explanations; check more units")


@dataclass(frozen=True, kw_only=True)
class SanityReport:
    run_dir: Path
    seed: int
    scorers: tuple[ScorerSanity, ...]
    usage: UsageTotals
    seconds: float
    max_units: int | None = None
    overrides: tuple[str, ...] = ()
    """`key=value` changes to the run's config the checks were made with (none: the run's own)."""

    def to_text(self) -> str:
        lines = [f"# Sanity checks: {self.run_dir}", ""]
        lines.append(
            "Each check scores a worse explanation beside the original, with the same scorer, model and "
            "evidence: another unit's explanation (wrong label), half of a compound one (missing label), an "
            "unrelated concept appended (extra label). It holds when the worse one scores strictly lower. "
            f"Seed {self.seed}" + (f"; at most {self.max_units} units per method" if self.max_units else "")
            + (f"; the run's config changed by {', '.join(self.overrides)}" if self.overrides else "") + "."
        )
        for scorer in self.scorers:
            lines += ["", f"## {scorer.scorer} ({scorer.model}): {scorer.score}", "",
                      f"Methods: {', '.join(scorer.methods)}; {len(scorer.units)} units.", "",
                      "| check | held | decided | share | 95% interval | undefined | failed | not applicable |",
                      "|---|---|---|---|---|---|---|---|"]
            for check in (*CHECKS, ALL):
                tally = scorer.tally(check)
                title = CHECK_TITLES.get(check, "all checks")
                lines.append(
                    f"| {title} | {tally.held} | {tally.decided} | {_percent(tally.share.mean)} | "
                    f"{_interval(tally.share)} | {tally.counts.get('undefined', 0)} | "
                    f"{tally.counts.get('failed', 0)} | {tally.counts.get('not_applicable', 0)} |"
                )
            lines += ["", f"**{scorer.verdict}.**"]
            equal, both = scorer.n_stored_equal
            if both:
                drift = "" if equal == both else (
                    " (the others differ: expected with a changed config)" if self.overrides
                    else " (the others differ: the scorer or its backend changed since the run)")
                lines.append(f"Originals scored again: {equal} of {both} equal the run's stored scores{drift}.")
            failures = [u for u in scorer.units if u.failure]
            if failures:
                lines.append(f"{len(failures)} originals could not be scored, e.g. unit {_ref(failures[0].unit)}: "
                             f"{failures[0].failure}")
            if scorer.embedded:
                lines.append(f"The embedded model ({EMBEDDED_MODEL_NAME}) is not expected to pass: as a simulator "
                             "it barely depends on the explanation.")
            lines += ["", "| unit | method | check | original | worse | status | worse explanation |",
                      "|---|---|---|---|---|---|---|"]
            for unit in scorer.units:
                for result in unit.checks:
                    shown = result.explanation if result.explanation is not None else f"({result.note})"
                    lines.append(f"| {_ref(unit.unit)} | {unit.method} | {CHECK_TITLES[result.check]} | "
                                 f"{_number(unit.score)} | {_number(result.score)} | {result.status} | "
                                 f"{_cell(shown)} |")
        lines += ["", f"{self.usage.describe()}; {self.seconds:.1f} s."]
        return "\n".join(lines) + "\n"

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "run": str(self.run_dir),
            "seed": self.seed,
            "max_units": self.max_units,
            "overrides": list(self.overrides),
            "created": now_iso(),
            "seconds": self.seconds,
            "usage": dataclasses.asdict(self.usage),
            "checks": {check: CHECK_TITLES[check] for check in CHECKS},
            "unrelated_concepts": list(UNRELATED_CONCEPTS),
            "scorers": [_scorer_json(scorer) for scorer in self.scorers],
        }


def _ref(unit: UnitId) -> str:
    return unit.ref


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _scorer_json(scorer: ScorerSanity) -> dict[str, Any]:
    tallies = {}
    for check in (*CHECKS, ALL):
        tally = scorer.tally(check)
        tallies[check] = {**{s: tally.counts.get(s, 0) for s in ("held", "not_held", "undefined", "failed",
                                                                   "not_applicable")},
                          "decided": tally.decided, "share": tally.share.mean, "low": tally.share.low,
                          "high": tally.share.high, "confidence": tally.share.confidence}
    return {
        "scorer": scorer.scorer,
        "model": scorer.model,
        "embedded": scorer.embedded,
        "score": scorer.score,
        "methods": scorer.methods,
        "tallies": tallies,
        "verdict": scorer.verdict,
        "units": [{
            "method": u.method, "unit": {"layer": u.unit.layer, "index": u.unit.index, "kind": u.unit.kind.value,
                                        **({"sae": u.unit.sae} if u.unit.sae else {})},
            "explanation": u.explanation, "compared": u.compared,
            "score": u.score,
            "stored_score": u.stored_score, "failure": u.failure,
            "checks": [dataclasses.asdict(c) for c in u.checks],
        } for u in scorer.units],
    }


# --- running --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Scored:
    value: float | None
    score: str
    """NAME.VARIANT that `value` is."""
    failure: str | None = None


class _Checker:
    def __init__(self, config: ExperimentConfig, store: RunStore, scorers: Sequence[str] | None) -> None:
        self.config = config
        self.store = store
        self.evidence = EvidenceBuilder(config, store, run_dataset(config, store))
        self.ledger = UsageLedger()
        labels = {s.label: s for _, s in config.scorer_configs()}
        unknown = sorted(set(scorers or ()) - set(labels))
        if unknown:
            raise ConfigError(f"--scorer {', '.join(unknown)}: not a scorer of the run; its scorers: "
                              f"{', '.join(labels)}")
        self.methods = {m: (source, scorer) for m, (source, scorer) in config.methods().items()
                        if source is not None and not is_control(m) and (not scorers or scorer in scorers)}
        self.scorer_configs = {label: labels[label] for label in dict.fromkeys(s for _, s in self.methods.values())}
        self.backends: dict[str, Backend] = {}
        self.scorers: dict[str, Scorer] = {}

    def build(self) -> None:
        """The scorers' backends with the run's response cache and sampling salt (its repeat), so the originals
        replay what the run asked."""
        from neuroscribe.llm import create_backend

        cache_dir = Path(self.config.run.cache_dir) if self.config.run.cache_dir else self.store.path / "cache"
        for label, scorer in self.scorer_configs.items():
            if scorer.backend not in self.backends:
                backend = self.config.backends[scorer.backend]
                self.backends[scorer.backend] = create_backend(backend.spec, backend.transport, cache_dir=cache_dir,
                                                               ledger=self.ledger, options=backend.options,
                                                               sampling_salt=self.config.repeat)
            self.scorers[label] = create_scorer(scorer.name, self.backends[scorer.backend], scorer.options)

    async def close(self) -> None:
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()

    def model(self, scorer: str) -> tuple[str, bool]:
        """The scorer's model in words (its backend's config name and identity), and whether it is the
        embedded model (a scripted backend keeps the spec's default model name, so the identity decides)."""
        name = self.scorer_configs[scorer].backend
        identity = self.backends[name].name
        embedded = self.config.backends[name].spec.model == "embedded" and identity.partition(":")[2].startswith(
            "embedded")
        return f"backend {name!r}, {identity}" + (f" ({EMBEDDED_MODEL_NAME})" if embedded else ""), embedded

    async def score(self, scorer_label: str, unit: UnitId, explanation: str, name: str | None = None,
                    variant: str | None = None) -> _Scored:
        """The score `name`.`variant` of `explanation` (default: the scorer's headline, primary variant)."""
        scorer = self.scorers[scorer_label]
        try:
            inputs = await self.evidence.scorer_input(unit, explanation, type(scorer).evidence)
            output = await scorer.score(inputs)
        except NeuroscribeError as error:
            return _Scored(value=None, score=f"{name}.{variant}", failure=f"{type(error).__name__}: {error}")
        name = name or output.headline
        table = output.scores.get(name, {})
        variant = variant or primary_variant(table)
        value = table.get(variant) if variant is not None else None
        return _Scored(value=value, score=f"{name}.{variant}")

    async def check_unit(self, method: str, outcome: UnitOutcome, partner: tuple[UnitId, str] | None) -> UnitSanity:
        _, scorer_label = self.methods[method]
        explanation = outcome.explanation or ""
        original = await self.score(scorer_label, outcome.unit, explanation)
        name, _, variant = original.score.partition(".")
        stored = outcome.named_scores.get(name, {}).get(variant)
        worse = perturbations(explanation, outcome.unit, partner, self.config.seed, method)
        scored = await asyncio.gather(*(
            self.score(scorer_label, outcome.unit, p.explanation, name, variant)
            for p in worse if p.explanation is not None and original.failure is None
        ))
        results, answers = [], iter(scored)
        for p in worse:
            if p.explanation is None:
                results.append(CheckResult(check=p.check, explanation=None, score=None, status="not_applicable",
                                           note=p.note))
                continue
            if original.failure is not None:
                results.append(CheckResult(check=p.check, explanation=p.explanation, score=None, status="failed",
                                           note=f"the original could not be scored: {original.failure}"))
                continue
            answer = next(answers)
            results.append(_decide(p, original.value, answer))
        return UnitSanity(method=method, unit=outcome.unit, explanation=explanation, compared=original.score,
                          score=original.value,
                          stored_score=stored, failure=original.failure, checks=tuple(results))


def _decide(perturbation: Perturbation, original: float | None, answer: _Scored) -> CheckResult:
    status: Status
    note = perturbation.note
    if answer.failure is not None:
        status, note = "failed", answer.failure
    elif original is None or answer.value is None:
        status = "undefined"
        note = f"{note}; the {'original' if original is None else 'worse'} score is undefined"
    else:
        status = "held" if answer.value < original else "not_held"
    return CheckResult(check=perturbation.check, explanation=perturbation.explanation, score=answer.value,
                       status=status, note=note)


def _explained(outcomes: Mapping[UnitId, UnitOutcome]) -> list[UnitOutcome]:
    return [o for _, o in sorted(outcomes.items()) if o.status == "ok" and (o.explanation or "").strip()]


async def arun_sanity(run_dir: str | Path, *, max_units: int | None = None, scorers: Sequence[str] | None = None,
                      overrides: Sequence[str] = (), progress: bool = False) -> SanityReport:
    """The async form of `run_sanity`."""
    started = time.monotonic()
    if max_units is not None and max_units < 1:
        raise ConfigError(f"max_units must be at least 1, got {max_units}")
    store = RunStore(run_dir)
    config = run_config(store, overrides)
    checker = _Checker(config, store, scorers)
    explained = {method: _explained(store.outcomes(method)) for method in checker.methods}
    if not any(explained.values()):
        skipped = [m for m in config.method_ids() if m not in checker.methods]
        raise DataError(
            f"{store.path}: no explained method has a unit that finished ok, so there is nothing to check "
            f"(explained methods: {', '.join(checker.methods) or 'none'}; not checked: controls and scorers "
            f"that judge no explanation: {', '.join(skipped) or 'none'}). Finish the run first "
            "(`neuroscribe run CONFIG --out RUN` resumes it) or look at `neuroscribe report RUN` for the failures."
        )
    jobs: list[tuple[str, UnitOutcome, tuple[UnitId, str] | None]] = []
    for method, outcomes in explained.items():
        texts = {o.unit: o.explanation or "" for o in outcomes}
        partners = wrong_partners(list(texts), config.seed, method)
        for outcome in outcomes[:max_units]:
            other = partners.get(outcome.unit)
            jobs.append((method, outcome, None if other is None else (other, texts[other])))
    checker.build()
    from tqdm import tqdm

    semaphore = asyncio.Semaphore(config.run.max_concurrent_units)
    try:
        with tqdm(total=len(jobs), desc="sanity", unit="unit", disable=not progress) as bar:

            async def one(method: str, outcome: UnitOutcome, partner: tuple[UnitId, str] | None) -> UnitSanity:
                async with semaphore:
                    done = await checker.check_unit(method, outcome, partner)
                    bar.update(1)
                    return done

            checked = await asyncio.gather(*(one(*job) for job in jobs))
    finally:
        await checker.close()
    by_scorer: dict[str, list[UnitSanity]] = {}
    for unit in checked:
        by_scorer.setdefault(checker.methods[unit.method][1], []).append(unit)
    summaries = []
    for label, units in by_scorer.items():
        model, embedded = checker.model(label)
        score = next((u.compared for u in units if u.failure is None), "(no original could be scored)")
        summaries.append(ScorerSanity(scorer=label, model=model, embedded=embedded, score=score, units=tuple(units)))
    return SanityReport(run_dir=store.path, seed=config.seed, scorers=tuple(summaries), usage=checker.ledger.totals,
                        seconds=time.monotonic() - started, max_units=max_units, overrides=tuple(overrides))


def run_sanity(run_dir: str | Path, *, max_units: int | None = None, scorers: Sequence[str] | None = None,
               overrides: Sequence[str] = (), progress: bool = False) -> SanityReport:
    """Check every scorer of the finished run in `run_dir` (see the module docstring): at most `max_units`
    units per method, only the `scorers` labels named, with `overrides` (`key=value`, as for `neuroscribe run
    --set`) applied to the run's config, e.g. another backend. Nothing in the run changes except its response
    cache, which gains the worse explanations' requests."""
    return asyncio.run(arun_sanity(run_dir, max_units=max_units, scorers=scorers, overrides=overrides,
                                   progress=progress))


__all__ = ["CHECKS", "UNRELATED_CONCEPTS", "SanityReport", "ScorerSanity", "arun_sanity", "compound_parts",
           "derangement", "drop_half", "perturbations", "run_sanity", "verdict", "with_extra_concept"]
