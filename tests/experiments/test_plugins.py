"""A scorer and an explainer defined outside the package, named in a TOML, computed, reported, ranked, viewed.

`plugin_components` registers them on import; the config names that module under `plugins`. The units are
attention heads of the embedded model (token-pair records), which only the plugin explainer and scorer read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from neuroscribe.errors import ConfigError
from neuroscribe.experiments import RunStore, build_leaderboard, build_report, load_config, run_experiment
from neuroscribe.records import UnitId, UnitKind
from neuroscribe.results import ExplanationScores
from neuroscribe.viewer.build import build_site

pytestmark = pytest.mark.slow

METHODS = ["pair_links+keyword_overlap", "random_explanation+keyword_overlap"]


@pytest.fixture(scope="module")
def head_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two attention heads of the embedded model on a slice of the embedded corpus (8-token excerpts)."""
    from neuroscribe.datasets.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("plugins") / "heads"
    return collect(CollectConfig(out_dir=out, unit_kind=UnitKind.ATTENTION_HEAD, layers=(0,), indices=(0, 1),
                                 excerpt_tokens=8, max_tokens=8192, top_k=8, n_random=8, n_quantiles=2,
                                 n_per_quantile=2, quantile_pool=32, progress=False))


def plugin_config(path: Path, dataset: Path, extra: str = "") -> Path:
    path.write_text(f"""
name = "plugins"
plugins = ["plugin_components"]

[units]
refs = ["0/0", "0/1"]
kind = "attention_head"

[records]
dataset = "{dataset}"
n_per_split = 2

[backends.default]
type = "scripted"

[backends.default.options]
responder = "plugin_components:no_model_needed"

[[explainers]]
name = "pair_links"

[[scorers]]
name = "keyword_overlap"

[run]
progress = false
{extra}
""", encoding="utf-8")
    return path


def test_plugin_components_run_and_their_scores_are_shown_everywhere(head_dataset: Path, tmp_path: Path) -> None:
    config = plugin_config(tmp_path / "plugins.toml", head_dataset)
    assert load_config(config).method_ids() == METHODS
    summary = run_experiment(config, tmp_path / "run", progress=False)
    assert (summary.completed, summary.failed) == (4, 0), summary.to_text()
    store = RunStore(tmp_path / "run")
    for method in METHODS:
        outcomes = store.outcomes(method)
        assert set(outcomes) == {UnitId(0, 0, UnitKind.ATTENTION_HEAD), UnitId(0, 1, UnitKind.ATTENTION_HEAD)}
        for unit, outcome in outcomes.items():
            assert outcome.headline == "keyword_hits" and set(outcome.named_scores) == {"keyword_hits"}
            assert "looking back at" in (outcome.explanation or "")
            result = store.results(method)[unit]
            assert isinstance(result, ExplanationScores) and result.scorer == "keyword_overlap"
            assert result.scores == outcome.named_scores
            assert {e.group for e in result.examples} == {"top", "random"} and len(result.examples) == 4
    report = build_report([tmp_path / "run"]).to_text()
    assert "pair_links+keyword_overlap | keyword_hits |" in report
    assert "pair_links+keyword_overlap · keyword_hits: top_and_random" in report
    board = build_leaderboard([tmp_path / "run"])
    assert str(board.score) == "keyword_hits.top_and_random" and board.n_common == board.rows[0].n_scored
    assert {row.method_id for row in board.rows} == set(METHODS)
    assert "Ranked by keyword_hits.top_and_random" in board.to_markdown()
    site = build_site(tmp_path / "run", tmp_path / "site")
    index = _page_data(site.index_path)
    assert index["headlines"] == ["keyword_hits", "keyword_hits"]
    unit_page = _page_data(tmp_path / "site" / "units" / "attention_head" / "0" / "0.html")
    shown = {m["id"]: m for m in unit_page["methods"]}
    for method in METHODS:
        value = store.outcomes(method)[UnitId(0, 0, UnitKind.ATTENTION_HEAD)].named_scores["keyword_hits"]
        (strip,) = shown[method]["explanations"][0]["scores"]
        assert strip["name"] == "keyword_hits"
        shown_value = dict(strip["variants"])["top and random"]
        expected = value["top_and_random"]
        assert shown_value == (None if expected is None else pytest.approx(expected, rel=1e-4))


def _page_data(page: Path) -> Any:
    match = re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>',
                      page.read_text(encoding="utf-8"), re.S)
    assert match is not None, f"{page} has no embedded data"
    return json.loads(match.group(1))


def test_the_built_in_attention_head_explainer_gets_token_pair_records(head_dataset: Path, tmp_path: Path) -> None:
    config = plugin_config(tmp_path / "heads.toml", head_dataset, extra="""
[backends.answers]
type = "scripted"
options = { responder = "plugin_components:answer_links" }
""").read_text().replace('name = "pair_links"', 'name = "attention_head"\nbackend = "answers"')
    (tmp_path / "heads.toml").write_text(config)
    summary = run_experiment(tmp_path / "heads.toml", tmp_path / "run", progress=False)
    assert (summary.completed, summary.failed) == (4, 0), summary.to_text()
    outcomes = RunStore(tmp_path / "run").outcomes("attention_head+keyword_overlap")
    assert {o.explanation for o in outcomes.values()} == {"attends from each token to the one before it"}


def test_plugin_evidence_the_unit_kind_cannot_give_is_refused_at_load(head_dataset: Path, tmp_path: Path) -> None:
    mlp = plugin_config(tmp_path / "mlp.toml", head_dataset).read_text().replace('kind = "attention_head"', "")
    (tmp_path / "mlp.toml").write_text(mlp)
    with pytest.raises(ConfigError, match=r"\[\[explainers\]\] 'pair_links' .* needs token_pair_records, which "
                                          r"mlp_neuron units cannot provide"):
        load_config(tmp_path / "mlp.toml")
    simulated = plugin_config(tmp_path / "sim.toml", head_dataset, )
    text = simulated.read_text() + '\n[[simulators]]\nname = "all_at_once"\n'
    simulated.write_text(text)
    with pytest.raises(ConfigError, match=r"\[\[simulators\]\] 'all_at_once' .* needs activation_records, which "
                                          r"attention_head units cannot provide"):
        load_config(simulated)
