"""What a run found: mean scores with bootstrap intervals and coverage, per-layer histograms, failures,
tokens and cost, a plot of the score distributions, and optionally our scores beside the published ones.

Every mean is shown with the number of units it averages and how many units failed or had an
undefined score, so a mean over 3 of 100 units can never pass for a result.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuroscribe.errors import NeuroscribeError
from neuroscribe.experiments.collection import (
    EMBEDDED_MODEL_WARNING,
    MethodOutcomes,
    RunCollection,
    UnitKey,
    load_runs,
    unit_label,
)
from neuroscribe.experiments.store import UnitUsage
from neuroscribe.scorers import primary_variant
from neuroscribe.scorers.simulation import CALIBRATION_SLOPE, UNCALIBRATED
from neuroscribe.scoring import (
    Estimate,
    bootstrap_fraction_above,
    bootstrap_mean,
    bootstrap_mean_over_repeats,
    spread_over_repeats,
)

HISTOGRAM_BINS = np.linspace(-1.0, 1.0, 11)
"""Score histograms: ten bins of 0.2 from -1 to 1."""
SPARK = " ▁▂▃▄▅▆▇█"
GOOD_SCORE = 0.7
"""The paper's threshold for a well-explained unit (an ev-correlation)."""
CORRELATION = "ev_correlation"

PAPER_GPT2_XL = (
    "Published (GPT-2 XL, all 307,200 MLP neurons, GPT-4 explainer and simulator, the paper's own prompts): mean "
    "0.151 top-and-random, 0.037 random-only; 1.7% of neurons score above 0.7 top-and-random. This run follows "
    "the protocol's structure (explain from top excerpts, simulate held-out top and random excerpts, score the "
    "correlation) with our own prompts and worked examples and its own models, so its scores are not comparable "
    "with those numbers; compare methods within a run, and the published explanations scored by our simulator."
)


@dataclass(frozen=True, kw_only=True)
class MethodReport:
    method_id: str
    is_control: bool
    n_units: int
    """Planned units (the config's), attempted or not: the denominator of coverage."""
    n_attempted: int
    n_failed: int
    top_and_random: Estimate
    """The headline's primary variant: top-and-random, or all for scorers that do not cut top from random."""
    top_only: Estimate
    random_only: Estimate
    headline: str
    """The score the method's scorer leads with (the three variants above are of it)."""
    above_good: Estimate | None
    """Share of units with an ev-correlation of at least GOOD_SCORE (top-and-random); None for other scores."""
    all_scores: Mapping[str, Mapping[str, Estimate]]
    """Every score the scorer computed: name -> variant -> mean over units."""
    per_layer: Mapping[int, Sequence[float]]
    """Defined top-and-random scores by layer."""
    failures: Sequence[tuple[str, int]]
    """(stage: reason, count), most common first."""
    undefined: Sequence[tuple[str, int]] = ()
    """(why the headline score is undefined, count) over ok units, most common first."""
    usage: UnitUsage
    seconds: float


@dataclass(frozen=True, kw_only=True)
class PublishedRow:
    unit: tuple[int, int]
    ours: float | None
    published: float | None
    our_explanation: str | None
    published_explanation: str | None


@dataclass(frozen=True, kw_only=True)
class PublishedComparison:
    method_id: str
    rows: Sequence[PublishedRow]
    missing: Sequence[tuple[tuple[int, int], str]]
    """Units without a published explanation, with the reason."""

    @property
    def paired(self) -> list[tuple[float, float]]:
        return [(r.ours, r.published) for r in self.rows if r.ours is not None and r.published is not None]

    @property
    def correlation(self) -> float | None:
        pairs = self.paired
        if len(pairs) < 3:
            return None
        ours, published = np.asarray(pairs).T
        if np.std(ours) == 0 or np.std(published) == 0:
            return None
        return float(np.corrcoef(ours, published)[0, 1])

    @property
    def mean_difference(self) -> float | None:
        pairs = self.paired
        return float(np.mean([o - p for o, p in pairs])) if pairs else None


@dataclass(frozen=True, kw_only=True)
class MethodSpread:
    """Run-to-run spread of one method's headline score over the repeats of a run (`run --repeats N`)."""

    method_id: str
    n_repeats: int
    over_repeats: Estimate
    """Mean over units of each unit's mean over repeats; the interval includes seed noise (two-stage bootstrap)."""
    per_unit: Mapping[UnitKey, Sequence[float | None]]
    """Each unit's score in every repeat, repeat 0 first."""
    spreads: Mapping[UnitKey, float | None]
    """Each unit's standard deviation over repeats (None with fewer than 2 defined scores)."""

    @property
    def defined_spreads(self) -> list[float]:
        return [v for v in self.spreads.values() if v is not None]


def method_spread(method: MethodOutcomes, seed: int = 0) -> MethodSpread | None:
    if not method.repeats:
        return None
    per_unit = method.repeat_scores()
    return MethodSpread(method_id=method.method_id, n_repeats=1 + len(method.repeats),
                        over_repeats=bootstrap_mean_over_repeats(list(per_unit.values()), seed=seed),
                        per_unit=per_unit, spreads={u: spread_over_repeats(v) for u, v in per_unit.items()})


MAX_SPREAD_ROWS = 40
"""Per-unit rows of the spread section (largest spreads first)."""


def _spread_lines(spreads: Sequence[MethodSpread], methods: Sequence[MethodReport]) -> list[str]:
    lines = ["", f"## Run-to-run spread ({spreads[0].n_repeats} repeats with other sampling seeds; headline score)",
             "", "| method | mean over repeats, 95% CI with seed noise | repeat 0 alone | per-unit SD: mean, max | "
             "units with 2+ scores |", "|---|---|---|---|---|"]
    alone = {m.method_id: m.top_and_random for m in methods}
    for spread in spreads:
        sds = spread.defined_spreads
        summary = f"{np.mean(sds):.3f}, {max(sds):.3f}" if sds else "n/a"
        lines.append(f"| {spread.method_id} | {_estimate(spread.over_repeats)} | {_estimate(alone[spread.method_id])} "
                     f"| {summary} | {len(sds)} / {len(spread.per_unit)} |")
    rows = [(sd, spread.method_id, unit, spread.per_unit[unit]) for spread in spreads
            for unit, sd in spread.spreads.items()]
    rows.sort(key=lambda row: -(row[0] if row[0] is not None else -1.0))
    lines += ["", "Per unit (largest spread first):", "", "| unit | method | score in each repeat | SD |",
              "|---|---|---|---|"]
    for sd, method_id, unit, values in rows[:MAX_SPREAD_ROWS]:
        lines.append(f"| {unit_label(unit)} | {method_id} | {', '.join(_score(v) for v in values)} | {_score(sd)} |")
    if len(rows) > MAX_SPREAD_ROWS:
        lines.append(f"| ... {len(rows) - MAX_SPREAD_ROWS} more | | | |")
    return lines


@dataclass(frozen=True, kw_only=True)
class Report:
    collection: RunCollection
    methods: Sequence[MethodReport]
    comparisons: Sequence[PublishedComparison]
    notes: Sequence[str]
    spreads: Sequence[MethodSpread] = ()
    """Run-to-run spread per method, when the run has repeats."""

    def to_text(self) -> str:
        names = ", ".join(str(m.get("name") or m.get("config", {}).get("name", "?")) for m in self.collection.manifests)
        lines = [f"# Report: {names}", "", f"Run directories: {', '.join(str(p) for p in self.collection.run_dirs)}",
                 f"Models: {'; '.join(self.collection.models) or 'unknown'}",
                 f"Splits disjoint by: {'; '.join(self.collection.disjointness)}", ""]
        lines += [f"> {note}" for note in self.notes]
        lines += ["", "## Scores (each method's headline score, mean over units with a 95% bootstrap interval)", ""]
        lines.append("| method | score | top-and-random (or all) | random-only | top-only | >= 0.7 | "
                     "units scored / planned |")
        lines.append("|---|---|---|---|---|---|---|")
        for m in self.methods:
            lines.append(
                f"| {m.method_id}{' (control)' if m.is_control else ''} | {m.headline} | "
                f"{_estimate(m.top_and_random)} | {_estimate(m.random_only)} | {_estimate(m.top_only)} | "
                f"{_share(m.above_good)} | "
                f"{m.top_and_random.n} / {m.n_units}{_not_scored(m)} |"
            )
        lines += ["", f"Units every method scored (headline score): {self.n_common_units()} of "
                  f"{max((m.n_units for m in self.methods), default=0)}; compare methods on those with "
                  "`neuroscribe leaderboard`, which ranks on the common units.", ""]
        lines += ["## Every score computed (mean over each method's scored units, 95% CI, n)", ""]
        for m in self.methods:
            for name, variants in m.all_scores.items():
                cells = ", ".join(f"{variant} {_estimate(estimate)} (n={estimate.n})"
                                  for variant, estimate in variants.items())
                lines.append(f"- {m.method_id} · {name}: {cells}")
        lines += ["", "## Score histograms per layer (top-and-random; 10 bins of 0.2 from -1 to 1)", ""]
        for m in self.methods:
            lines.append(f"{m.method_id}:")
            lines += [f"    layer {layer:>3}  n={len(scores):<4} |{_sparkline(scores)}|  mean {np.mean(scores):+.3f}"
                      for layer, scores in sorted(m.per_layer.items()) if scores]
            if not any(m.per_layer.values()):
                lines.append("    (no scored units)")
        lines += _reason_section("Failures", [(m.method_id, f"{m.n_failed} of {m.n_units} units", m.failures)
                                              for m in self.methods if m.failures])
        lines += _reason_section("Undefined scores (headline score, primary variant: why it has no value)",
                                 [(m.method_id, f"{sum(c for _, c in m.undefined)} units", m.undefined)
                                  for m in self.methods if m.undefined])
        lines += ["", "## Model use", "", "| method | calls | cache hits | prompt tokens | completion tokens | cost | "
                  "time |", "|---|---|---|---|---|---|---|"]
        total = UnitUsage()
        for m in self.methods:
            total = total + m.usage
            lines.append(f"| {m.method_id} | {m.usage.calls} | {m.usage.cache_hits} | {m.usage.prompt_tokens} | "
                         f"{m.usage.completion_tokens} | ${m.usage.cost_usd:.4f} | {m.seconds:.0f} s |")
        lines.append(f"| total | {total.calls} | {total.cache_hits} | {total.prompt_tokens} | "
                     f"{total.completion_tokens} | ${total.cost_usd:.4f} | |")
        if self.spreads:
            lines += _spread_lines(self.spreads, self.methods)
        for comparison in self.comparisons:
            lines += _comparison_lines(comparison)
        return "\n".join(lines) + "\n"

    def n_common_units(self) -> int:
        """Units with a defined top-and-random headline score under every method."""
        scored = [{u for u, v in _method(self.collection, m.method_id).scores().items() if v is not None}
                  for m in self.methods]
        return len(set.intersection(*scored)) if scored else 0

    def plot(self, path: str | Path) -> Path:
        """Histograms of top-and-random and random-only scores per method, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        headlines = sorted({m.headline for m in self.methods})
        # the primary variant (None): top-and-random, or all for scorers that do not cut top from random
        for axis, variant, title in zip(axes, (None, "random_only"), ("top-and-random (or all)", "random-only"),
                                        strict=True):
            for m in self.methods:
                values = [v for v in _method(self.collection, m.method_id).scores(variant).values() if v is not None]
                if values:
                    axis.hist(values, bins=HISTOGRAM_BINS, histtype="step", linewidth=1.6,
                              linestyle="--" if m.is_control else "-", label=f"{m.method_id} (n={len(values)})")
            axis.set_title(f"{title} score")
            axis.set_xlabel(" / ".join(headlines) or "score")
            axis.set_xlim(-1, 1)
        axes[0].set_ylabel("units")
        for axis in axes:
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize="small")
                break
        if self.collection.uses_embedded_model:
            figure.suptitle("embedded model (SmolLM2-135M): a plumbing check, not a measurement", fontsize="medium")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def _method(collection: RunCollection, method_id: str) -> MethodOutcomes:
    return next(m for m in collection.methods if m.method_id == method_id)


def _estimate(estimate: Estimate) -> str:
    if estimate.mean is None:
        return "n/a"
    interval = "" if estimate.low is None or estimate.high is None else f" [{estimate.low:.3f}, {estimate.high:.3f}]"
    return f"{estimate.mean:.3f}{interval}"


def _not_scored(m: MethodReport) -> str:
    parts = [f"{m.n_failed} failed"] if m.n_failed else []
    if m.n_units > m.n_attempted:
        parts.append(f"{m.n_units - m.n_attempted} not attempted")
    return f" ({', '.join(parts)})" if parts else ""


def _reason_section(title: str, rows: Sequence[tuple[str, str, Sequence[tuple[str, int]]]]) -> list[str]:
    """A section of (method, how many, its most common reasons) rows; 'none' when there are none."""
    lines = ["", f"## {title}", ""]
    if not rows:
        lines.append("none")
    for method_id, how_many, reasons in rows:
        lines.append(f"{method_id}: {how_many}")
        lines += [f"    {count} x {reason}" for reason, count in reasons[:10]]
    return lines


def _share(estimate: Estimate | None) -> str:
    return "n/a" if estimate is None or estimate.mean is None else f"{100 * estimate.mean:.1f}%"


def _sparkline(scores: Sequence[float]) -> str:
    counts, _ = np.histogram(np.clip(scores, -1, 1), bins=HISTOGRAM_BINS)
    top = counts.max() if counts.size else 0
    return "".join(SPARK[math.ceil(c / top * (len(SPARK) - 1))] if top else " " for c in counts)


def _comparison_lines(comparison: PublishedComparison) -> list[str]:
    lines = ["", f"## {comparison.method_id} beside the published scores", ""]
    correlation = comparison.correlation
    difference = comparison.mean_difference
    lines.append(
        f"{len(comparison.paired)} units with both scores; mean (ours - published) "
        f"{'n/a' if difference is None else f'{difference:+.3f}'}; correlation across units "
        f"{'n/a (needs 3 units with varying scores)' if correlation is None else f'{correlation:.3f}'}"
    )
    lines += ["", "| unit | ours | published | our explanation | published explanation |", "|---|---|---|---|---|"]
    for row in comparison.rows:
        lines.append(f"| {row.unit[0]}/{row.unit[1]} | {_score(row.ours)} | {_score(row.published)} | "
                     f"{_cell(row.our_explanation)} | {_cell(row.published_explanation)} |")
    for unit, reason in comparison.missing:
        lines.append(f"| {unit[0]}/{unit[1]} | | (none: {_cell(reason)}) | | |")
    return lines


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("|", "\\|").replace("\n", " ").strip()


def _failure_reasons(method: MethodOutcomes) -> list[tuple[str, int]]:
    reasons = Counter(
        f"{o.stage or '?'}: {(o.reason or 'no reason given').splitlines()[0][:160]}"
        for o in method.outcomes.values() if o.status == "failed"
    )
    return reasons.most_common()


def _undefined_reasons(method: MethodOutcomes) -> list[tuple[str, int]]:
    reasons: Counter[str] = Counter()
    for unit, value in method.scores().items():
        outcome = method.outcomes[unit]
        if value is None and outcome.status == "ok":
            variants = outcome.named_scores.get(outcome.headline or "", {})
            variant = primary_variant(variants) or ""
            reasons[outcome.undefined.get(outcome.headline or "", {}).get(variant, "no reason recorded")] += 1
    return reasons.most_common()


def method_report(method: MethodOutcomes, seed: int = 0) -> MethodReport:
    scores = method.scores()
    headline = method.headline or CORRELATION
    per_layer: dict[int, list[float]] = {}
    for (layer, _, _), value in scores.items():
        per_layer.setdefault(layer, [])
        if value is not None:
            per_layer[layer].append(value)
    return MethodReport(
        method_id=method.method_id,
        is_control=method.is_control,
        n_units=method.n_planned,
        n_attempted=len(method.outcomes),
        n_failed=method.n_failed,
        top_and_random=bootstrap_mean(list(scores.values()), seed=seed),
        top_only=bootstrap_mean(list(method.scores("top_only").values()), seed=seed),
        random_only=bootstrap_mean(list(method.scores("random_only").values()), seed=seed),
        headline=headline,
        above_good=(bootstrap_fraction_above(list(scores.values()), GOOD_SCORE, seed=seed)
                    if headline == CORRELATION else None),
        all_scores={name: {variant: bootstrap_mean(list(method.scores(variant, name).values()), seed=seed)
                           for variant in variants} for name, variants in method.score_names().items()},
        per_layer=per_layer,
        failures=_failure_reasons(method),
        undefined=_undefined_reasons(method),
        usage=method.usage,
        seconds=method.seconds,
    )


def _control_notes(methods: Sequence[MethodOutcomes]) -> list[str]:
    """A plain sentence for each method whose mean headline score, on the units both scored, is not above
    that of a control under the same scorer (the method id's part after the last '+')."""
    notes = []
    for method in (m for m in methods if not m.is_control):
        ours = method.scores()
        for control in (c for c in methods if c.is_control and c.method_id.rpartition("+")[2] ==
                        method.method_id.rpartition("+")[2]):
            theirs = control.scores()
            pairs = [(v, w) for u, v in ours.items() if v is not None and (w := theirs.get(u)) is not None]
            if not pairs:
                continue
            a, b = (float(x) for x in np.mean(pairs, axis=0))
            if a <= b:
                notes.append(f"{method.method_id} does not score above the control {control.method_id} on the "
                             f"{len(pairs)} units both scored (mean {a:.3f} vs {b:.3f}): on these units its scores "
                             "do not tell its explanations from the control's.")
    return notes


def _selection_note(method: MethodOutcomes) -> str | None:
    """How a best-of-n method chose its explanations, and what the choice gained on the selection split."""
    chosen = [o for o in method.outcomes.values() if o.status == "ok" and o.candidates]
    if not chosen:
        return None
    selection = chosen[0].selection
    picked = [s for o in chosen for c in o.candidates if c.chosen and (s := c.selection_score) is not None]
    every = [s for o in chosen for c in o.candidates if (s := c.selection_score) is not None]
    n_candidates = sum(len(o.candidates) for o in chosen) / len(chosen)
    gain = (f"; on that split the picks average {np.mean(picked):.3f} against {np.mean(every):.3f} over every "
            "candidate" if picked else "")
    return (f"{method.method_id}: each explanation chosen from {n_candidates:.1f} candidates (mean) by "
            f"{selection.get('scorer')} {selection.get('score')} {selection.get('variant')} on the "
            f"{selection.get('split')} split, never used for the scores shown here{gain}.")


def compare_published(collection: RunCollection, method: MethodOutcomes) -> PublishedComparison:
    """Our top-and-random score per unit beside the published one, read from the published explanation files."""
    from neuroscribe.datasets import load_explanations

    records = dict(collection.manifests[0].get("config", {}).get("records", {}))
    dataset, root = str(records.get("dataset") or ""), str(records.get("data_root") or "") or None
    rows: list[PublishedRow] = []
    missing: list[tuple[tuple[int, int], str]] = []
    for (layer, index, _), outcome in sorted(method.outcomes.items()):
        unit = (layer, index)
        if not dataset:
            missing.append((unit, "the run collected its own records, so nothing was published for them"))
            continue
        try:
            published = load_explanations(f"{dataset}:{layer}/{index}", root)
        except NeuroscribeError as error:
            missing.append((unit, str(error).splitlines()[0][:200]))
            continue
        first = next((e for r in published for e in r.scored_explanations), None)
        if first is None:
            missing.append((unit, "the published file has no explanation"))
            continue
        rows.append(PublishedRow(
            unit=unit,
            ours=outcome.scores.get("top_and_random") if outcome.status == "ok" else None,
            published=first.scored_simulation.ev_correlation_score,
            our_explanation=outcome.explanation,
            published_explanation=first.explanation,
        ))
    return PublishedComparison(method_id=method.method_id, rows=rows, missing=missing)


def build_report(run_dirs: Sequence[str | Path], *, compare_with_published: bool = False, seed: int = 0) -> Report:
    """Report on one run, or merge several (the shards of one experiment merge unit by unit)."""
    collection = load_runs(run_dirs)
    methods = [method_report(m, seed) for m in collection.methods]
    notes = list(collection.notes)
    if collection.uses_embedded_model:
        notes.insert(0, EMBEDDED_MODEL_WARNING)
    datasets = {str(m.get("config", {}).get("records", {}).get("dataset", "")) for m in collection.manifests}
    if "gpt2-xl" in datasets:
        notes.append(PAPER_GPT2_XL)
    for method in collection.methods:
        slopes = [v for v in method.scores("all", CALIBRATION_SLOPE).values() if v is not None]
        flipped = sum(v < 0 for v in slopes)
        if flipped:
            notes.append(f"{method.method_id}: {flipped} of {len(slopes)} units were calibrated with a negative slope, "
                         f"which turns an anti-correlated explanation into a correlated one; compare "
                         f"{UNCALIBRATED}{CORRELATION}.")
    notes += [note for method in collection.methods if (note := _selection_note(method))]
    notes += _control_notes(collection.methods)
    comparisons = []
    if compare_with_published:
        comparisons = [compare_published(collection, m) for m in collection.methods if not m.is_control]
    spreads = [spread for m in collection.methods if (spread := method_spread(m, seed)) is not None]
    return Report(collection=collection, methods=methods, comparisons=comparisons, notes=notes, spreads=spreads)
