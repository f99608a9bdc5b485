"""Build the static viewer site: one index page and one page per unit, in a single pass over the units.

Pages carry their data as inline JSON (`<script type="application/json">`, with `<`, `>` and `&`
escaped), and the shipped scripts build the DOM with `textContent` only, so no token or explanation
is ever parsed as HTML. A Content-Security-Policy forbids inline scripts as a second line of defence.
The site needs no server and no network: open `index.html` from disk or serve it with `serve`.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.experiments.store import UnitOutcome
from neuroscribe.records import (
    ActivationRecord,
    NeuronRecord,
    TokenPairRecord,
    UnitId,
    UnitKind,
    n_pairs,
    pair_index,
)
from neuroscribe.results import (
    ActivationScale,
    AttentionSimulation,
    AttentionSimulationResults,
    ExplanationScores,
    JudgedExample,
    NeuronSimulationResults,
    ResultRecord,
    ScoredSequenceSimulation,
    ScoredSimulation,
    WeightBasedSummaryOfNeuron,
)
from neuroscribe.scorers import ScoreTable, primary_variant
from neuroscribe.scoring import METRICS
from neuroscribe.viewer.sources import Collection, MethodFindings, UnitSources, open_source

MARKER = ".neuroscribe-viewer"
"""Marks a directory as a viewer site, so a rebuild may replace it and nothing else is overwritten."""

ASSETS = ("viewer.css", "index.js", "unit.js")
LEADERBOARD_PAGE = "leaderboard.html"
VARIANT_LABELS = {"top_and_random": "top and random", "top_only": "top only", "random_only": "random only",
                  "all": "all"}
CORRELATION = "ev_correlation"
"""The simulation scorer's headline: the only score the index presents as a correlation."""
ATTENTION_AUC = "roc_auc"
"""The headline of the published attention-head results (their `roc_auc_score`), over every asked pair."""
PAIR_GROUPS = {1: "strong pair", 0: "weak pair"}

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


@dataclass(frozen=True, kw_only=True)
class SiteSummary:
    """Where the site was written and what it holds."""

    out_dir: Path
    index_path: Path
    n_units: int
    n_rows: int
    """Index rows: one per unit and method (one per unit where there are no methods)."""
    units: tuple[UnitId, ...]

    def unit_page(self, reference: str) -> Path:
        """The page of the unit `LAYER/INDEX` (e.g. '5/131')."""
        layer, _, index = reference.partition("/")
        matches = [u for u in self.units if (str(u.layer), str(u.index)) == (layer.strip(), index.strip())]
        if not matches and not self.units:
            raise ConfigError(f"unit {reference!r}: this site has no units")
        if not matches:
            raise ConfigError(f"unit {reference!r} is not in this site; give LAYER/INDEX of one of its "
                              f"{len(self.units)} units, e.g. {self.units[0].layer}/{self.units[0].index}")
        return self.out_dir / _unit_page_path(matches[0])


def build_site(source: str | Path, out_dir: str | Path, *, dataset: str | Path | None = None,
               data_root: str | None = None) -> SiteSummary:
    """Write the viewer for `source` into `out_dir`: a run, a local dataset, a record or explanations
    file, or a unit reference such as `gpt2-xl:5/131` (read from `data_root`, see `open_source`).

    The site is built in a staging directory next to `out_dir` and moved into place when complete, so a
    failure half-way (a malformed unit) leaves an earlier build untouched.
    """
    collection = open_source(source, dataset=dataset, data_root=data_root)
    out = Path(out_dir)
    _check_out_dir(out, Path(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        n_rows = _write_site(collection, staging)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the site from a web server run by another user
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SiteSummary(out_dir=out, index_path=out / "index.html", n_units=len(collection.units), n_rows=n_rows,
                       units=tuple(collection.units))


def _write_site(collection: Collection, out: Path) -> int:
    """Every page, in one pass over the units; returns the number of index rows."""
    (out / MARKER).write_text("built by `neuroscribe view`; a rebuild replaces this directory\n")
    (out / "assets").mkdir()
    static = resources.files("neuroscribe.viewer") / "static"
    for name in ASSETS:
        (out / "assets" / name).write_bytes((static / name).read_bytes())
    head_template = _template("head.html")
    unit_template = _template("unit.html")
    units: list[JsonValue] = []
    rows: list[JsonValue] = []
    method_numbers = {m: i for i, m in enumerate(collection.method_ids)}
    headlines: dict[str, str] = {}
    for position, unit in enumerate(collection.units):
        sources = collection.load(unit)
        page = _unit_page_path(unit)
        payload = _unit_payload(sources, page, _neighbours(collection.units, position))
        payload["notes"] = list(collection.notes)
        title = html.escape(f"{collection.title} · {_unit_label(unit)}")
        assets = _relative(page, "assets")
        (out / page).parent.mkdir(parents=True, exist_ok=True)
        (out / page).write_text(unit_template.substitute(
            head=head_template.substitute(title=title, assets=assets), title=title, assets=assets,
            data=_inline_json(payload),
        ), encoding="utf-8")
        units.append([unit.layer, unit.index, unit.kind.value, payload["max_activation"], page,
                      *([unit.sae] if unit.sae else [])])
        rows.extend(_index_rows(len(units) - 1, sources.methods, method_numbers))
        for findings in sources.methods:
            headline = _score_table(findings)[0]
            if headline is not None:
                headlines.setdefault(findings.method_id, headline)
    method_headlines = [headlines.get(m) for m in collection.method_ids]
    index_data: dict[str, JsonValue] = {
        "title": collection.title,
        "notes": list(collection.notes),
        "meta": [[k, v] for k, v in collection.description],
        "provenance": [[k, v] for k, v in collection.provenance],
        "methods": list(collection.method_ids),
        "headlines": [h for h in method_headlines],
        "score_heading": _score_heading(method_headlines),
        "units": units,
        "rows": rows,
    }
    leaderboard = ""
    if collection.leaderboard_html is not None:
        # A whole document of its own: shown in a sandboxed frame so its styles never leak into the index.
        (out / LEADERBOARD_PAGE).write_text(collection.leaderboard_html, encoding="utf-8")
        leaderboard = (
            f'<section class="panel leaderboard" id="leaderboard"><h2>Leaderboard</h2>'
            f'<iframe src="{LEADERBOARD_PAGE}" sandbox title="leaderboard"></iframe>'
            f'<p><a href="{LEADERBOARD_PAGE}">open the leaderboard on its own</a></p></section>'
        )
    title = html.escape(collection.title)
    (out / "index.html").write_text(_template("index.html").substitute(
        head=head_template.substitute(title=title, assets="assets"),
        title=title,
        subtitle=html.escape(f"{_count(len(units), 'unit')} · {_count(len(collection.method_ids), 'method')}"),
        leaderboard=leaderboard,
        data=_inline_json(index_data),
    ), encoding="utf-8")
    return len(rows)


# --- files ----------------------------------------------------------------------------------------


def _check_out_dir(out: Path, source: Path) -> None:
    """`out` must be new, empty, or an earlier viewer build: nothing else is ever overwritten."""
    if out.resolve() == source.resolve() or out.resolve() in source.resolve().parents:
        raise ConfigError(f"--out {out}: would replace the source; give a new directory such as {source}/viewer")
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if any(out.iterdir()) and not (out / MARKER).exists():
        raise ConfigError(
            f"--out {out}: the directory has files and is not an earlier viewer build; "
            "give an empty or new directory so nothing of yours is overwritten"
        )


def _template(name: str) -> string.Template:
    return string.Template((resources.files("neuroscribe.viewer") / "templates" / name).read_text(encoding="utf-8"))


def _unit_page_path(unit: UnitId) -> str:
    sae = f"{unit.sae}/" if unit.sae else ""  # latents of several autoencoders: one folder per autoencoder
    return f"units/{unit.kind.value}/{sae}{unit.layer}/{unit.index}.html"


def _neighbours(units: Sequence[UnitId], position: int) -> tuple[UnitId | None, UnitId | None]:
    """The units before and after `position`, for the previous / next links."""
    return (units[position - 1] if position > 0 else None,
            units[position + 1] if position + 1 < len(units) else None)


def _relative(from_page: str, target: str) -> str:
    """A link from a page at `from_page` (relative to the site root) to `target` (also relative to the root)."""
    depth = from_page.count("/")
    return "../" * depth + target


def _inline_json(value: JsonValue) -> str:
    """JSON that is safe inside a <script> element: no `</script>`, no `<!--`, no line separators.

    A lone surrogate (half an emoji cut by a tokenizer) cannot be written as UTF-8; then everything
    non-ASCII is written as `\\u` escapes, which JSON.parse reads back exactly.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


# --- payloads -------------------------------------------------------------------------------------


def _number(value: float | None) -> float | None:
    """Five significant digits keep pages small; NaN and infinities have no JSON form and show as missing."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.5g}")


def _numbers(values: Sequence[float | None]) -> list[JsonValue]:
    return [_number(v) for v in values]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _unit_label(unit: UnitId) -> str:
    kind = "" if unit.kind is UnitKind.MLP_NEURON else f"{unit.kind.value} "
    sae = f"autoencoder {unit.sae}, " if unit.sae else ""
    return f"{kind}{sae}layer {unit.layer}, unit {unit.index}"


def _index_rows(unit_number: int, methods: Sequence[MethodFindings],
                method_numbers: dict[str, int]) -> list[JsonValue]:
    """[unit, method, score, top_only, random_only, status, explanation] per method; one bare row without.

    The three scores are the method's headline per variant (`_score_heading` says what they are).
    """
    if not methods:
        return [[unit_number, None, None, None, None, "", ""]]
    rows: list[JsonValue] = []
    for findings in methods:
        headline, table = _score_table(findings)
        scores = table.get(headline, {}) if headline is not None else {}
        explanation = _explanations(findings)
        outcome = findings.outcome
        status = outcome.status if outcome is not None else "ok"
        text = outcome.reason if outcome is not None and outcome.status == "failed" else (
            explanation[0] if explanation else "")
        main = primary_variant(scores) or "top_and_random"  # 'all' for scorers that do not cut top from random
        rows.append([unit_number, method_numbers[findings.method_id],
                     *(_number(scores.get(variant)) for variant in (main, "top_only", "random_only")), status, text])
    return rows


def _score_heading(headlines: Sequence[str | None]) -> list[JsonValue]:
    """[text, tooltip] of the index's score column: "score" (a correlation) only while every method leads
    with ev_correlation, so a detection score is never presented as a correlation."""
    names = {h for h in headlines if h is not None}
    if names <= {CORRELATION}:
        return ["score", "top-and-random correlation score"]
    if len(names) == 1:
        (name,) = names
        return [name, f"top-and-random {name} score"]
    return ["headline score", "each method's headline score, top and random (named next to the method where it "
                              "is not ev_correlation)"]


def _explanations(findings: MethodFindings) -> list[str]:
    results = findings.results
    if isinstance(results, ExplanationScores):
        return [results.explanation]
    if results is not None and results.scored_explanations:
        return [e.explanation for e in results.scored_explanations]
    if findings.outcome is not None and findings.outcome.explanation is not None:
        return [findings.outcome.explanation]
    return []


def _score_table(findings: MethodFindings) -> tuple[str | None, ScoreTable]:
    """(headline, every score) of the method's first explanation, read from the files, never recomputed:
    the run's outcome where there is one, else the result line."""
    outcome, results = findings.outcome, findings.results
    if outcome is not None:
        return _outcome_scores(outcome)
    if isinstance(results, ExplanationScores):
        return next(iter(results.scores), None), results.scores  # the line names no headline: its first score
    if isinstance(results, AttentionSimulationResults) and results.scored_explanations:
        auc = results.scored_explanations[0].scored_attention_simulation.roc_auc_score
        return ATTENTION_AUC, {ATTENTION_AUC: {"all": auc}}
    if isinstance(results, NeuronSimulationResults) and results.scored_explanations:
        return CORRELATION, _published_scores(results.scored_explanations[0].scored_simulation)
    return None, {}


def _outcome_scores(outcome: UnitOutcome) -> tuple[str | None, ScoreTable]:
    if outcome.status != "ok":
        return None, {}
    # An outcome whose writer filled only `scores` still shows them, under its headline's name.
    table = outcome.named_scores or ({outcome.headline or "score": outcome.scores} if outcome.scores else {})
    return outcome.headline or next(iter(table), None), table


def _published_scores(simulation: ScoredSimulation) -> dict[str, Mapping[str, float | None]]:
    """The pooled scores the published format has fields for, under the metrics' names (top and random only)."""
    fields = {name: METRICS.get(name).result_field for name in METRICS}
    return {name: {"top_and_random": getattr(simulation, field)} for name, field in fields.items() if field}


def _score_strip(headline: str | None, table: ScoreTable) -> list[JsonValue]:
    """Every score with its variants, the headline first and the rest in the scorer's order."""
    names = sorted(table, key=lambda name: name != headline)
    return [{"name": name, "headline": name == headline,
             "variants": [[VARIANT_LABELS.get(v, v.replace("_", " ")), _number(x)] for v, x in table[name].items()]}
            for name in names]


def _unit_payload(sources: UnitSources, page: str,
                  neighbours: tuple[UnitId | None, UnitId | None]) -> dict[str, JsonValue]:
    unit, record = sources.unit, sources.record
    max_activation = record.max_activation if record is not None else _max_true_activation(sources.methods)
    excerpt_labels = _excerpt_labels(record)
    prev, next_ = neighbours
    return {
        "unit": {"layer": unit.layer, "index": unit.index, "kind": unit.kind.value,
                 **({"sae": unit.sae} if unit.sae else {})},
        "nav": {
            "index": _relative(page, "index.html"),
            "prev": None if prev is None else _relative(page, _unit_page_path(prev)),
            "next": None if next_ is None else _relative(page, _unit_page_path(next_)),
        },
        "meta": _unit_meta(sources, max_activation),
        "max_activation": _number(max_activation),
        "methods": [_method_payload(m, excerpt_labels) for m in sources.methods],
        "excerpts": _excerpt_groups(record),
        "related": _related_lists(sources),
    }


def _max_true_activation(methods: Sequence[MethodFindings]) -> float:
    """Without a record, the colour scale is the largest true activation among the scored excerpts."""
    return max((max(values, default=0.0) for m in methods if m.results is not None
                for values in _true_activations(m.results)), default=0.0)


def _true_activations(results: ResultRecord) -> list[Sequence[float]]:
    if isinstance(results, ExplanationScores):
        return [e.true_activations for e in results.examples]
    if isinstance(results, AttentionSimulationResults):
        return []  # the published attention results keep labels, not activations
    return [s.true_activations for e in results.scored_explanations
            for s in e.scored_simulation.scored_sequence_simulations]


def _unit_meta(sources: UnitSources, max_activation: float) -> list[JsonValue]:
    unit, record = sources.unit, sources.record
    lines: list[tuple[str, object]] = [("unit", str(unit)), *([("autoencoder", unit.sae)] if unit.sae else []),
                                       ("layer", unit.layer), ("index", unit.index),
                                       ("max activation", _number(max_activation))]
    if record is not None:
        lines += [
            ("mean", _number(record.mean)),
            ("variance", _number(record.variance_or_none)),
            ("skewness", _number(record.skewness)),
            ("kurtosis", _number(record.kurtosis)),
            ("top-activating excerpts", len(record.most_positive_activation_records)),
            ("random excerpts", len(record.random_sample)),
        ]
        if record.quantile_boundaries is not None:
            lines.append(("quantile boundaries", ", ".join(
                "–" if b is None else f"{b:.4g}" for b in record.quantile_boundaries)))
    if sources.record_path is not None:
        lines.append(("record file", str(sources.record_path)))
    return [[label, "–" if value is None else str(value)] for label, value in lines]


def _excerpt_labels(record: NeuronRecord | None) -> dict[tuple[str, ...], str]:
    """Which of the record's excerpts a scored excerpt is, found by its tokens (scored lists carry no label)."""
    if record is None:
        return {}
    labels = {tuple(r.tokens): "random" for r in record.random_sample}
    labels.update({tuple(r.tokens): "top-activating" for r in record.most_positive_activation_records})
    return labels


def _method_payload(findings: MethodFindings, excerpt_labels: dict[tuple[str, ...], str]) -> dict[str, JsonValue]:
    outcome = findings.outcome
    return {
        "id": findings.method_id,
        "status": "ok" if outcome is None else outcome.status,
        "reason": None if outcome is None else outcome.reason,
        "details": _details(findings),
        "explanations": _explanation_payloads(findings, excerpt_labels),
    }


def _details(findings: MethodFindings) -> list[JsonValue]:
    """Which scorer judged (our result lines name it), and what the unit cost the run."""
    outcome, results = findings.outcome, findings.results
    scorer = results.scorer if isinstance(results, ExplanationScores) else None
    lines: list[JsonValue] = [] if scorer is None else [["scorer", scorer]]
    if outcome is None:
        return lines
    usage = outcome.usage
    lines.append(["status", outcome.status if outcome.stage is None else f"{outcome.status} at {outcome.stage}"])
    if scorer is None:  # only a simulation calibrates
        lines.append(["calibrated", "yes" if outcome.calibrated else "no"])
    lines += [
        ["model calls", f"{usage.calls} (+{usage.cache_hits} from cache)"],
        ["tokens", f"{usage.prompt_tokens} prompt, {usage.completion_tokens} completion"],
        ["cost", f"${usage.cost_usd:.4f}"],
        ["time", f"{outcome.seconds:.1f} s"],
    ]
    return lines


def _explanation_payloads(findings: MethodFindings, excerpt_labels: dict[tuple[str, ...], str]) -> list[JsonValue]:
    """Each explanation with its score strip and its evidence: simulated excerpts (the simulation scorer) or
    judged examples (every other scorer). Further published explanations carry their own pooled scores."""
    results = findings.results
    scores = _score_strip(*_score_table(findings))
    if isinstance(results, ExplanationScores):
        return [_explanation(results.explanation, scores, examples=[_example_payload(e) for e in results.examples])]
    if isinstance(results, AttentionSimulationResults):
        return [_explanation(
            scored.explanation,
            scores if number == 0 else _score_strip(ATTENTION_AUC, {ATTENTION_AUC: {
                "all": scored.scored_attention_simulation.roc_auc_score}}),
            examples=[_pair_payload(s) for s in scored.scored_attention_simulation.attention_simulations],
        ) for number, scored in enumerate(results.scored_explanations)]
    if results is not None and results.scored_explanations:
        return [_explanation(
            scored.explanation,
            scores if number == 0 else _score_strip(CORRELATION, _published_scores(scored.scored_simulation)),
            sequences=[_sequence_payload(s, excerpt_labels)
                       for s in scored.scored_simulation.scored_sequence_simulations],
        ) for number, scored in enumerate(results.scored_explanations)]
    return [_explanation(text, scores) for text in _explanations(findings)]


def _explanation(text: str, scores: list[JsonValue], *, sequences: Sequence[JsonValue] = (),
                 examples: Sequence[JsonValue] = ()) -> JsonValue:
    return {"text": text, "scores": scores, "sequences": list(sequences), "examples": list(examples)}


def _sequence_payload(scored: ScoredSequenceSimulation, excerpt_labels: dict[tuple[str, ...], str]) -> JsonValue:
    simulation = scored.simulation
    calibrated = simulation.activation_scale is ActivationScale.NEURON_ACTIVATIONS
    n_tokens = len(simulation.tokens)
    return {
        "label": excerpt_labels.get(tuple(simulation.tokens), ""),
        "tokens": list(simulation.tokens),
        "true": _numbers(_per_token(scored.true_activations, n_tokens, "true activations")),
        "simulated": _numbers(_per_token(simulation.expected_activations, n_tokens, "simulated activations")),
        "scale": "true" if calibrated else "normalized",
        "correlation": _number(scored.ev_correlation_score),
        "distributions": _top_of_distributions(simulation.distribution_values, simulation.distribution_probabilities),
    }


def _example_payload(example: JudgedExample) -> JsonValue:
    """One judged example, compactly: where it came from, its tokens (with truth and any per-token
    prediction for the tooltip), what the model was to get right and what it answered."""
    n_tokens = len(example.tokens)
    return {
        "group": example.group,
        "tokens": list(example.tokens),
        "true": _optional_per_token(example.true_activations, n_tokens, "true activations"),
        "predicted": _optional_per_token(example.predicted_activations, n_tokens, "predicted activations"),
        "target": _number(example.target),
        "prediction": _number(example.prediction),
    }


def _pair_payload(simulation: AttentionSimulation) -> JsonValue:
    """One asked (query, key) pair as a judged example: strong (1) or weak (0), and the predicted P(strong)."""
    query, key = simulation.token_pair_coords
    return {
        "group": PAIR_GROUPS.get(simulation.token_pair_label, str(simulation.token_pair_label)),
        "tokens": list(simulation.tokens),
        "true": [],
        "predicted": [],
        "target": float(simulation.token_pair_label),
        "prediction": _number(simulation.simulation_prediction),
        "pair": [query, key],
    }


def _optional_per_token(values: Sequence[float], n_tokens: int, what: str) -> list[JsonValue]:
    return _numbers(_per_token(values, n_tokens, what)) if values else []


def _per_token(values: Sequence[float], n_tokens: int, what: str) -> Sequence[float]:
    """One value per token; values per (query, key) pair (attention heads) show each query's strongest pair."""
    if len(values) == n_tokens:
        return values
    if len(values) == n_pairs(n_tokens):
        return [max(values[pair_index(q, 0): pair_index(q, q) + 1]) for q in range(n_tokens)]
    raise DataError(f"a scored excerpt has {len(values)} {what} for {n_tokens} tokens: neither one per token "
                    f"nor one per (query, key) pair ({n_pairs(n_tokens)})")


def _top_of_distributions(values: Sequence[Sequence[float]], probabilities: Sequence[Sequence[float]],
                          keep: int = 3) -> list[JsonValue]:
    """Per token, the simulator's `keep` likeliest values as [value, probability, ...] (empty without any)."""
    tops: list[JsonValue] = []
    for token_values, token_probabilities in zip(values, probabilities, strict=False):
        ranked = sorted(zip(token_values, token_probabilities, strict=False), key=lambda vp: -vp[1])[:keep]
        tops.append([x for pair in ranked for x in (_number(pair[0]), _number(pair[1]))])
    return tops


def _records_payload(records: Sequence[ActivationRecord]) -> list[JsonValue]:
    """Token records carry one activation per token; token-pair records (attention heads) their lower triangle."""
    return [{"tokens": list(r.tokens), "pairs" if isinstance(r, TokenPairRecord) else "activations":
             _numbers(r.activations), "max": _number(r.max_activation)} for r in records]


def _excerpt_groups(record: NeuronRecord | None) -> list[JsonValue]:
    if record is None:
        return []
    groups: list[JsonValue] = [
        {"title": "Top-activating excerpts", "records": _records_payload(record.most_positive_activation_records)},
        {"title": "Random excerpts", "records": _records_payload(record.random_sample)},
    ]
    if record.most_negative_activation_records:
        groups.append({"title": "Most negative excerpts",
                       "records": _records_payload(record.most_negative_activation_records)})
    boundaries = record.quantile_boundaries or []
    for number, bucket in enumerate(record.random_sample_by_quantile or []):
        low, high = (boundaries[number], boundaries[number + 1]) if number + 1 < len(boundaries) else (None, None)
        span = "" if low is None and high is None else (
            f" ({'−∞' if low is None else f'{low:.4g}'} to {'∞' if high is None else f'{high:.4g}'})")
        groups.append({"title": f"Random excerpts, quantile {number + 1}{span}", "records": _records_payload(bucket),
                       "folded": True})
    return groups


def _related_lists(sources: UnitSources) -> list[JsonValue]:
    lists: list[JsonValue] = []
    if sources.lookup_table is not None:
        table = sources.lookup_table
        lists.append({"title": "Highest mean activation (activation-based)", "value_name": "mean activation",
                      "tokens": list(table.tokens), "values": _numbers(table.average_activations)})
    if sources.weight_summary is not None:
        lists.extend(_weight_lists(sources.weight_summary))
    return lists


def _weight_lists(summary: WeightBasedSummaryOfNeuron) -> list[JsonValue]:
    parts = (("Input, positive (weight-based)", summary.input_positive),
             ("Input, negative (weight-based)", summary.input_negative),
             ("Output, positive (weight-based)", summary.output_positive),
             ("Output, negative (weight-based)", summary.output_negative))
    return [{"title": title, "value_name": "strength", "tokens": list(part.tokens), "values": _numbers(part.strengths)}
            for title, part in parts]
