"""Attention heads end to end (experiments/attention-heads.toml on the embedded model, trimmed to two heads):
token-pair records collected, heads explained, explanations scored on token pairs, and the published
attention results, the outcomes, the report and the viewer all carry the same numbers.

The embedded model explains and simulates heads badly, so what is checked is that the run completes and
that every number shown is the one the results hold and the records justify, not that it is high.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from neuroscribe.errors import ConfigError
from neuroscribe.experiments import RunStore, build_report, config_from_dict, load_config, run_experiment
from neuroscribe.records import SliceParams, TokenPairRecord, UnitId, UnitKind, split_records
from neuroscribe.results import AttentionSimulationResults
from neuroscribe.scoring import roc_auc
from neuroscribe.viewer.build import build_site

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "attention-heads.toml"
METHODS = ["attention_head+attention_simulation", "random_explanation+attention_simulation"]
HEADS = [UnitId(1, 0, UnitKind.ATTENTION_HEAD), UnitId(3, 3, UnitKind.ATTENTION_HEAD)]


def page_data(page: Path) -> Any:
    """The JSON a built page carries (what its script renders)."""
    match = re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>',
                      page.read_text(encoding="utf-8"), re.S)
    assert match is not None, f"{page} has no embedded data"
    return json.loads(match.group(1))


def trimmed(tmp_path: Path) -> dict[str, Any]:
    """The shipped config on two of its heads, with shorter excerpts and fewer weak pairs (2 cores)."""
    data = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    data["units"]["refs"] = [f"{u.layer}/{u.index}" for u in HEADS]
    data["records"]["n_per_split"] = 2
    data["records"]["collect"]["options"].update(excerpt_tokens=16, max_tokens=4096, top_k=8, n_random=6,
                                                 quantile_pool=32)
    data["scorers"][0]["options"]["n_weak"] = 3
    data["run"].update(cache_dir=str(tmp_path / "cache"), progress=False)
    return data


def test_the_shipped_config_refuses_what_heads_cannot_give() -> None:
    assert load_config(CONFIG).method_ids() == METHODS
    with pytest.raises(ConfigError, match=r"\[controls\] token_lookup needs token_lookup_table"):
        load_config(CONFIG, ["controls.token_lookup=true"])
    with pytest.raises(ConfigError, match=r"'token_activation_pair' .* use explainers 'attention_head'"):
        load_config(CONFIG, ['explainers.0.name="token_activation_pair"', "explainers.0.options={}"])


@pytest.mark.slow
def test_attention_heads_run_end_to_end_with_results_report_and_viewer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = run_experiment(config_from_dict(trimmed(tmp_path)), run, progress=False)
    assert (summary.completed, summary.failed) == (len(HEADS) * len(METHODS), 0), summary.to_text()
    store = RunStore(run)
    aucs: dict[str, list[float]] = {}
    for method in METHODS:
        outcomes, results = store.outcomes(method), store.results(method)
        assert set(outcomes) == set(results) == set(HEADS)
        for unit in HEADS:
            outcome, result = outcomes[unit], results[unit]
            assert isinstance(result, AttentionSimulationResults) and outcome.headline == "roc_auc"
            (scored,) = result.scored_explanations
            assert scored.explanation == outcome.explanation
            asked = scored.scored_attention_simulation.attention_simulations
            labels = [s.token_pair_label for s in asked]
            unparsed = outcome.named_scores["unparsed_pairs"]["all"]
            scored_top = _pairs_are_justified_by_the_scored_split(store, unit, asked)
            assert unparsed is not None and len(asked) + unparsed == scored_top + 3  # 3 weak pairs; unread left out
            recomputed = roc_auc(labels, [s.simulation_prediction for s in asked]).value
            assert recomputed is not None and 0.0 <= recomputed <= 1.0
            assert outcome.named_scores["roc_auc"]["all"] == scored.scored_attention_simulation.roc_auc_score \
                == pytest.approx(recomputed)
            aucs.setdefault(method, []).append(recomputed)

    report = build_report([run]).to_text()
    for method, values in aucs.items():
        assert f"| {method}{' (control)' if method.startswith('random') else ''} | roc_auc | " \
               f"{sum(values) / len(values):.3f}" in report
        assert f"- {method} · roc_auc: all {sum(values) / len(values):.3f}" in report

    site = build_site(run, tmp_path / "site")
    index = page_data(site.index_path)
    assert index["headlines"] == ["roc_auc", "roc_auc"]
    rows = {(r[0], r[1]): r[2] for r in index["rows"]}  # type: ignore[union-attr, index]
    for method_number, method in enumerate(METHODS):
        for unit_number, unit in enumerate(HEADS):
            value = store.outcomes(method)[unit].named_scores["roc_auc"]["all"]
            assert rows[(unit_number, method_number)] == pytest.approx(value, rel=1e-4)
    for unit in HEADS:
        page = page_data(site.out_dir / "units" / "attention_head" / str(unit.layer) / f"{unit.index}.html")
        shown = {m["id"]: m for m in page["methods"]}  # type: ignore[union-attr, index]
        for method in METHODS:
            (explanation,) = shown[method]["explanations"]
            headline = explanation["scores"][0]
            assert headline["name"] == "roc_auc" and headline["headline"]
            assert dict(headline["variants"])["all"] == pytest.approx(
                store.outcomes(method)[unit].named_scores["roc_auc"]["all"], rel=1e-4)
            result = store.results(method)[unit]
            assert isinstance(result, AttentionSimulationResults)
            asked = result.scored_explanations[0].scored_attention_simulation.attention_simulations
            assert [(e["pair"], e["target"], e["prediction"]) for e in explanation["examples"]] == [
                (list(s.token_pair_coords), float(s.token_pair_label), pytest.approx(s.simulation_prediction, rel=1e-4))
                for s in asked]
        assert page["excerpts"][0]["records"][0]["pairs"]  # type: ignore[index]


def _pairs_are_justified_by_the_scored_split(store: RunStore, unit: UnitId, asked: list[Any]) -> int:
    """Strong pairs are each scored top excerpt's strongest pair; weak ones lie below a tenth of the head's max
    in a scored excerpt. Returns the number of scored top excerpts."""
    record = store.read_record(unit)
    assert record is not None
    scored = split_records(record, SliceParams(n_examples_per_split=2)).valid
    threshold = 0.1 * record.max_activation
    excerpts = {tuple(r.tokens): r for r in scored.all if isinstance(r, TokenPairRecord)}
    strong = {(tuple(s.tokens), s.token_pair_coords) for s in asked if s.token_pair_label == 1}
    assert strong <= {(tuple(r.tokens), r.top_pairs(1)[0][:2]) for r in scored.top if isinstance(r, TokenPairRecord)}
    for simulation in asked:
        value = excerpts[tuple(simulation.tokens)].activation(*simulation.token_pair_coords)
        assert value >= threshold if simulation.token_pair_label == 1 else value < threshold
    return len(scored.top)
