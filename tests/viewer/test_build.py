"""Building the site: what each page carries, for runs, datasets and published files (no browser needed)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
from viewer_helpers import (
    FAILED,
    HEAD_TOKENS,
    HOSTILE_TOKEN,
    METHODS,
    PLUGIN_METHOD,
    PLUGIN_SCORES,
    UNITS,
    make_attention_results,
    make_head_record,
    make_record,
    page_data,
)

from neuroscribe import datasets, serialization
from neuroscribe.cli import main
from neuroscribe.errors import ConfigError, DataError
from neuroscribe.experiments.store import RunStore
from neuroscribe.records import NeuronId, NeuronRecord, UnitId
from neuroscribe.results import (
    ActivationScale,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    TokenLookupTableSummaryOfNeuron,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)
from neuroscribe.scoring import correlation
from neuroscribe.viewer.build import MARKER, VARIANT_LABELS, _inline_json, _score_heading, build_site
from neuroscribe.viewer.serve import make_server, server_url


def test_inline_json_cannot_end_its_script_element() -> None:
    value = {"token": "</script><script>alert(1)</script><!-- & \u2028", "n": [1.5, None]}
    text = _inline_json(value)
    assert "</" not in text and "<!--" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_inline_json_keeps_lone_surrogates() -> None:
    value = {"tokens": ["\ud83d", "ok", "\u05e9"]}  # half an emoji, as byte-level tokenizers can cut one
    text = _inline_json(value)
    text.encode("utf-8")
    assert json.loads(text) == value


def test_real_record_page_carries_every_excerpt(real_record_path: Path, tmp_path: Path) -> None:
    summary = build_site(real_record_path, tmp_path / "site")
    record = serialization.load_json_file(real_record_path, NeuronRecord)
    assert (summary.n_units, summary.n_rows) == (1, 1)
    data = page_data(tmp_path / "site" / "units" / "mlp_neuron" / "1" / "1.html")
    top, random_ = data["excerpts"][0], data["excerpts"][1]  # type: ignore[index]
    assert len(top["records"]) == 50 and len(random_["records"]) == 50
    assert [r["tokens"] for r in top["records"]] == [r.tokens for r in record.most_positive_activation_records]
    assert data["max_activation"] == pytest.approx(record.max_activation)
    assert data["methods"] == [] and data["related"] == []
    quantiles = data["excerpts"][2:]  # type: ignore[index]
    assert [q["title"] for q in quantiles] == [  # type: ignore[index]
        "Random excerpts, quantile 1 (−∞ to -0.0032)", "Random excerpts, quantile 2 (-0.0032 to 0.5005)",
        "Random excerpts, quantile 3 (0.5005 to 1.515)", "Random excerpts, quantile 4 (1.515 to 2.379)",
        "Random excerpts, quantile 5 (2.379 to ∞)"]
    assert all(q["folded"] and len(q["records"]) == 20 for q in quantiles)  # type: ignore[index]
    index = page_data(summary.index_path)
    assert index["units"] == [[1, 1, "mlp_neuron", pytest.approx(record.max_activation), "units/mlp_neuron/1/1.html"]]


def test_attention_head_record_keeps_its_pairs(tmp_path: Path) -> None:
    source = tmp_path / "head.json"
    serialization.dump_json_file(source, make_head_record())
    build_site(source, tmp_path / "site")
    data = page_data(tmp_path / "site" / "units" / "attention_head" / "3" / "2.html")
    (record,) = data["excerpts"][0]["records"]  # type: ignore[index]
    assert record["tokens"] == HEAD_TOKENS and "activations" not in record
    assert len(record["pairs"]) == 15 and record["max"] == 2.0


def test_published_attention_results_open_on_their_own(tmp_path: Path) -> None:
    source = tmp_path / "heads.jsonl"
    source.write_text(serialization.dumps(make_attention_results()) + "\n", encoding="utf-8")
    index = page_data(build_site(source, tmp_path / "site").index_path)
    assert index["headlines"] == ["roc_auc"] and index["rows"][0][2] == 0.5  # type: ignore[index]
    assert index["units"][0][2] == "attention_head"  # type: ignore[index]
    data = page_data(tmp_path / "site" / "units" / "attention_head" / "3" / "2.html")
    (method,) = data["methods"]  # type: ignore[misc]
    (explanation,) = method["explanations"]
    assert explanation["text"] == "a repeated word back to its first copy"
    assert _strip(explanation) == {"roc_auc": {"all": 0.5}}
    shown = [(e["group"], e["pair"], e["target"], e["prediction"], e["tokens"]) for e in explanation["examples"]]
    assert shown == [("strong pair", [4, 1], 1.0, 0.8, HEAD_TOKENS), ("weak pair", [2, 0], 0.0, 0.3, HEAD_TOKENS),
                     ("weak pair", [3, 3], 0.0, 0.85, HEAD_TOKENS)]
    assert data["max_activation"] == 0.0  # the published attention results keep labels, not activations


def test_run_site_has_a_row_per_unit_and_method(small_run: Path, tmp_path: Path) -> None:
    summary = build_site(small_run, tmp_path / "site")
    assert summary.n_units == len(UNITS)
    assert summary.n_rows == len(UNITS) * len(METHODS)
    index = page_data(summary.index_path)
    assert index["methods"] == list(METHODS)
    shown = [key for key, _ in index["meta"]]  # type: ignore[union-attr, misc]
    assert shown[:3] == ["run directory", "config_hash", "created"] and "config" not in shown
    assert index["provenance"] == [["python", "3.11.7"]]  # folded: versions and platform
    assert index["headlines"] == ["ev_correlation"] * len(METHODS) and index["score_heading"][0] == "score"  # type: ignore[index]
    failed = [row for row in index["rows"] if row[5] == "failed"]  # type: ignore[union-attr, index]
    assert len(failed) == 1 and "no explanation" in failed[0][6]
    leaderboard = summary.index_path.read_text(encoding="utf-8")
    assert 'id="leaderboard"' in leaderboard
    assert HOSTILE_TOKEN not in leaderboard, "the raw hostile explanation must never reach the HTML unescaped"
    unit_page = page_data(summary.out_dir / "units" / "mlp_neuron" / "0" / "3.html")
    for data in (index, unit_page):  # the embedded model's caveat travels with every page
        (note,) = data["notes"]  # type: ignore[misc]
        assert "embedded model" in note and "plumbing check" in note


def test_unit_page_pairs_truth_and_simulation(small_run: Path, tmp_path: Path) -> None:
    build_site(small_run, tmp_path / "site")
    calibrated_unit = UNITS[1]
    data = page_data(tmp_path / "site" / "units" / "mlp_neuron" / str(calibrated_unit.layer)
                     / f"{calibrated_unit.index}.html")
    method = data["methods"][0]  # type: ignore[index]
    assert method["id"] == METHODS[0]
    assert dict(method["details"])["calibrated"] == "yes"
    (explanation,) = method["explanations"]
    assert explanation["text"].endswith(HOSTILE_TOKEN)
    sequences = explanation["sequences"]
    assert [s["label"] for s in sequences] == ["top-activating"] * 3 + ["random"] * 3
    for seq in sequences:
        assert seq["scale"] == "true"
        assert len(seq["tokens"]) == len(seq["true"]) == len(seq["simulated"])
        expected = correlation(seq["true"], seq["simulated"]).value
        assert seq["correlation"] == pytest.approx(expected, abs=1e-3)
    assert data["nav"] == {"index": "../../../index.html", "prev": "../../../units/mlp_neuron/0/3.html",
                           "next": "../../../units/mlp_neuron/2/1.html"}


def test_scored_excerpts_carry_the_simulators_likeliest_values(small_run: Path, tmp_path: Path) -> None:
    build_site(small_run, tmp_path / "site")
    data = page_data(tmp_path / "site" / "units" / "mlp_neuron" / "0" / "3.html")
    seq = data["methods"][0]["explanations"][0]["sequences"][0]  # type: ignore[index]
    assert seq["scale"] == "normalized" and len(seq["distributions"]) == len(seq["tokens"])
    for expected, top in zip(seq["simulated"], seq["distributions"], strict=True):
        values, probabilities = top[0::2], top[1::2]
        assert len(values) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert abs(values[0] - expected) <= 1.5  # the likeliest value sits near the expected value


def test_failed_unit_shows_its_reason(small_run: Path, tmp_path: Path) -> None:
    build_site(small_run, tmp_path / "site")
    unit = FAILED[1]
    data = page_data(tmp_path / "site" / "units" / "mlp_neuron" / str(unit.layer) / f"{unit.index}.html")
    failed = {m["id"]: m for m in data["methods"]}[FAILED[0]]  # type: ignore[index, union-attr]
    assert failed["status"] == "failed" and "no explanation" in failed["reason"]
    assert failed["explanations"] == []


def _strip(explanation: dict[str, object]) -> dict[str, dict[str, float | None]]:
    """A unit page's score strip as score name -> variant label -> value (in the order shown)."""
    return {s["name"]: dict(s["variants"]) for s in explanation["scores"]}  # type: ignore[attr-defined, index]


def _labelled(named: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    return {name: {VARIANT_LABELS.get(v, v): x for v, x in variants.items()} for name, variants in named.items()}


def test_unit_page_shows_every_score_the_run_computed(scorer_run: Path, tmp_path: Path) -> None:
    build_site(scorer_run, tmp_path / "site")
    store = RunStore(scorer_run)
    for unit in UNITS[:2]:
        data = page_data(tmp_path / "site" / "units" / "mlp_neuron" / str(unit.layer) / f"{unit.index}.html")
        methods = {m["id"]: m for m in data["methods"]}  # type: ignore[index, union-attr]
        assert list(methods) == [METHODS[0], PLUGIN_METHOD]
        for method_id, method in methods.items():
            (explanation,) = method["explanations"]
            outcome = store.outcomes(method_id)[unit]
            strip = _strip(explanation)
            assert next(iter(strip)) == outcome.headline  # the headline leads, and only it is marked
            assert [s["headline"] for s in explanation["scores"]] == [True] + [False] * (len(strip) - 1)
            expected = _labelled({n: dict(v) for n, v in outcome.named_scores.items()})
            assert strip.keys() == expected.keys()
            for name, variants in expected.items():
                assert strip[name].keys() == variants.keys()
                for variant, value in variants.items():  # the file's values, to 5 digits; undefined stays None
                    assert strip[name][variant] == (None if value is None else pytest.approx(value, rel=1e-4))
        simulation, plugin = methods[METHODS[0]], methods[PLUGIN_METHOD]
        shown = list(_strip(simulation["explanations"][0]))
        assert shown[0] == "ev_correlation" and sorted(shown[1:]) == [  # the rest in the scorer's order
            "absolute_dev_explained", "coefficient_of_determination", "rsquared"]
        assert _strip(plugin["explanations"][0]) == _labelled(PLUGIN_SCORES)  # undefined stays None: n/a
        assert simulation["explanations"][0]["sequences"] and not simulation["explanations"][0]["examples"]
        examples = plugin["explanations"][0]["examples"]
        assert plugin["explanations"][0]["sequences"] == []
        assert [(e["group"], e["target"], e["prediction"]) for e in examples] == [("top", 1.0, 0.75),
                                                                                 ("random", 0.0, None)]
        assert all(len(e["tokens"]) == len(e["true"]) and e["predicted"] == [] for e in examples)
        details = dict(plugin["details"])
        assert details["scorer"] == "keyword" and "calibrated" not in details  # only simulations calibrate
        assert "calibrated" in dict(simulation["details"])


def test_index_names_a_headline_that_is_no_correlation(scorer_run: Path, tmp_path: Path) -> None:
    index = page_data(build_site(scorer_run, tmp_path / "site").index_path)
    assert index["methods"] == [METHODS[0], PLUGIN_METHOD]
    assert index["headlines"] == ["ev_correlation", "keyword_hits"]
    assert index["score_heading"][0] == "headline score"  # type: ignore[index]
    plugin_rows = [r for r in index["rows"] if r[1] == 1]  # type: ignore[union-attr, index]
    assert [r[2:6] for r in plugin_rows] == [[0.8125, 0.9, None, "ok"]] * 2  # type: ignore[index]


def test_score_heading_is_a_correlation_only_when_every_headline_is() -> None:
    assert _score_heading(["ev_correlation", None])[0] == "score"
    assert _score_heading([]) == ["score", "top-and-random correlation score"]
    assert _score_heading(["keyword_hits", None]) == ["keyword_hits", "top-and-random keyword_hits score"]
    assert _score_heading(["ev_correlation", "keyword_hits"])[0] == "headline score"


def test_a_plugin_scorers_results_file_opens_on_its_own(scorer_run: Path, tmp_path: Path) -> None:
    source = scorer_run / "results" / f"{PLUGIN_METHOD}.jsonl"
    summary = build_site(source, tmp_path / "site")
    index = page_data(summary.index_path)
    assert index["headlines"] == ["keyword_hits"]  # no outcome: the line's first score leads
    assert [r[2] for r in index["rows"]] == [0.8125, 0.8125]  # type: ignore[union-attr, index]
    unit = page_data(tmp_path / "site" / "units" / "mlp_neuron" / "0" / "3.html")
    (method,) = unit["methods"]  # type: ignore[misc]
    assert _strip(method["explanations"][0]) == _labelled(PLUGIN_SCORES)
    assert dict(method["details"]) == {"scorer": "keyword"}
    assert unit["max_activation"] == pytest.approx(max(max(e["true"]) for e in method["explanations"][0]["examples"]))


def test_a_run_whose_every_unit_failed_still_opens(tmp_path: Path) -> None:
    from neuroscribe.experiments.store import UnitOutcome

    store = RunStore(tmp_path / "run")
    store.create()
    store.write_manifest({"methods": [PLUGIN_METHOD]})
    store.append(PLUGIN_METHOD, UnitOutcome(unit=UNITS[0], status="failed", stage="score", reason="judge down"), None)
    index = page_data(build_site(store.path, tmp_path / "site").index_path)
    assert index["headlines"] == [None] and index["rows"][0][5] == "failed"  # type: ignore[index]
    assert any(note.startswith("no leaderboard:") for note in index["notes"])  # type: ignore[union-attr]


def _write_dataset(root: Path) -> None:
    """A local dataset as the collector lays it out: records for two units, related tokens for one."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"subject_model": "embedded", "unit_kind": "mlp_neuron"}))
    for unit in UNITS[:2]:
        tail = Path(str(unit.layer)) / f"{unit.index}.json"
        serialization.dump_json_file(root / "collated-activations" / tail, make_record(unit, 0))
    lookup = TokenLookupTableSummaryOfNeuron(tokens=[" dog", "<b>"], average_activations=[3.0, 1.0])
    serialization.dump_json_file(root / "related-tokens" / "activation-based" / "0" / "3.json", lookup)
    side = TokensAndWeights(tokens=[" a", " b"], strengths=[0.5, 0.25])
    weights = WeightBasedSummaryOfNeuron(input_positive=side, input_negative=side, output_positive=side,
                                         output_negative=side)
    serialization.dump_json_file(root / "related-tokens" / "weight-based" / "0" / "3.json", weights)


def _related_titles(site: Path, unit: UnitId) -> list[str]:
    related = page_data(site / "units" / "mlp_neuron" / str(unit.layer) / f"{unit.index}.html")["related"]
    return [r["title"] for r in related]  # type: ignore[union-attr, index]


RELATED_TITLES = ["Highest mean activation (activation-based)", "Input, positive (weight-based)",
                  "Input, negative (weight-based)", "Output, positive (weight-based)",
                  "Output, negative (weight-based)"]


def test_dataset_directory_with_related_tokens(tmp_path: Path) -> None:
    _write_dataset(tmp_path / "dataset")
    summary = build_site(tmp_path / "dataset", tmp_path / "site")
    assert summary.n_units == 2
    assert _related_titles(tmp_path / "site", UNITS[0]) == RELATED_TITLES
    related = page_data(tmp_path / "site" / "units" / "mlp_neuron" / "0" / "3.html")["related"]
    assert related[0]["tokens"] == [" dog", "<b>"]  # type: ignore[index]
    assert _related_titles(tmp_path / "site", UNITS[1]) == []


def test_run_finds_the_dataset_it_collected(small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    build_site(run, tmp_path / "before")
    assert _related_titles(tmp_path / "before", UNITS[0]) == []
    _write_dataset(run / "dataset")  # where a run's [records.collect] puts its dataset by default
    build_site(run, tmp_path / "after")
    assert _related_titles(tmp_path / "after", UNITS[0]) == RELATED_TITLES


def test_unit_reference_reads_record_and_published_artifacts(real_record_path: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.OFFLINE_ENV, "1")
    root = tmp_path / "mirror"
    ref = "gpt2-xl:1/1"

    def place(artifact: datasets.Artifact, text: str) -> None:
        target = Path(datasets.resolve(ref, str(root), artifact))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    place(datasets.Artifact.ACTIVATIONS, real_record_path.read_text(encoding="utf-8"))
    build_site(ref, tmp_path / "bare", data_root=str(root))  # only the record is published here
    bare = page_data(tmp_path / "bare" / "units" / "mlp_neuron" / "1" / "1.html")
    assert len(bare["excerpts"][0]["records"]) == 50 and bare["methods"] == [] and bare["related"] == []  # type: ignore[index]

    explanation = ScoredExplanation(explanation="sports transfers", scored_simulation=ScoredSimulation(
        scored_sequence_simulations=[], ev_correlation_score=0.42))
    results = NeuronSimulationResults(neuron_id=NeuronId(layer_index=1, neuron_index=1),
                                      scored_explanations=[explanation])
    place(datasets.Artifact.EXPLANATIONS, serialization.dumps(results) + "\n")
    lookup = TokenLookupTableSummaryOfNeuron(tokens=[" transfer"], average_activations=[2.5])
    place(datasets.Artifact.TOKENS_BY_ACTIVATION, serialization.dumps(lookup))
    summary = build_site(ref, tmp_path / "full", data_root=str(root))
    index = page_data(summary.index_path)
    assert index["methods"] == ["published"] and index["rows"][0][2] == 0.42  # type: ignore[index]
    full = page_data(tmp_path / "full" / "units" / "mlp_neuron" / "1" / "1.html")
    assert full["methods"][0]["explanations"][0]["text"] == "sports transfers"  # type: ignore[index]
    assert [r["title"] for r in full["related"]] == ["Highest mean activation (activation-based)"]  # type: ignore[union-attr, index]


def test_explanations_file_without_records(small_run: Path, tmp_path: Path) -> None:
    source = small_run / "results" / f"{METHODS[0]}.jsonl"
    summary = build_site(source, tmp_path / "site")
    assert summary.n_units == len(UNITS)
    index = page_data(summary.index_path)
    assert index["methods"] == [source.name]
    first = serialization.read_jsonl(source, NeuronSimulationResults)[0]
    expected = first.scored_explanations[0].scored_simulation.ev_correlation_score
    assert index["rows"][0][2] == pytest.approx(expected, abs=1e-4)  # type: ignore[index]
    unit = page_data(tmp_path / "site" / "units" / "mlp_neuron" / "0" / "3.html")
    assert unit["excerpts"] == []
    scored_truth = first.scored_explanations[0].scored_simulation.scored_sequence_simulations
    assert unit["max_activation"] == pytest.approx(max(max(s.true_activations) for s in scored_truth))


@pytest.mark.parametrize("name, content, message", [
    ("empty-dir", None, "neither run.json"),
    ("missing.json", "", "no such file"),
    ("broken.json", "{", "not valid JSON"),
    ("id.json", json.dumps({"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 2}), "holds a NeuronId"),
])
def test_unusable_sources_say_what_to_give(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    source = tmp_path / name
    if content is None:
        source.mkdir()
    elif name != "missing.json":
        source.write_text(content)
    with pytest.raises(DataError, match=message):
        build_site(source, tmp_path / "site")


def test_never_overwrites_a_directory_it_did_not_build(real_record_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an earlier viewer build"):
        build_site(real_record_path, out)
    assert (out / "notes.txt").read_text() == "mine"
    rebuilt = tmp_path / "again"
    build_site(real_record_path, rebuilt)
    stale = rebuilt / "units" / "mlp_neuron" / "9" / "9.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("old page")
    build_site(real_record_path, rebuilt)
    assert (rebuilt / MARKER).exists() and not stale.exists()


def test_a_failed_rebuild_keeps_the_earlier_site(real_record_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build_site(real_record_path, out)
    before = (out / "index.html").read_text(encoding="utf-8")
    broken = tmp_path / "broken.jsonl"
    simulation = SequenceSimulation(tokens=["a", "b"], expected_activations=[1.0, 2.0, 3.0, 4.0],
                                    activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS)
    scored = ScoredSimulation(scored_sequence_simulations=[
        ScoredSequenceSimulation(simulation=simulation, true_activations=[0.0, 1.0, 2.0, 3.0])])
    serialization.append_jsonl(broken, NeuronSimulationResults(
        neuron_id=NeuronId(layer_index=0, neuron_index=0),
        scored_explanations=[ScoredExplanation(explanation="x", scored_simulation=scored)]))
    with pytest.raises(DataError, match="4 true activations for 2 tokens"):
        build_site(broken, out)
    assert (out / "index.html").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jsonl", "site"]  # no staging left behind


def test_cli_builds_and_reports(real_record_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(real_record_path), "--out", str(tmp_path / "site")]) == 0
    assert "wrote the index (1 rows) and 1 unit page(s)" in capsys.readouterr().out
    assert main(["view", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "site")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_serves_the_site_on_loopback(real_record_path: Path, tmp_path: Path) -> None:
    summary = build_site(real_record_path, tmp_path / "site")
    server = make_server(summary.out_dir, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = server_url(server)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "units/mlp_neuron/1/1.html", timeout=10) as answer:
            assert answer.status == 200 and b"viewer-data" in answer.read()
    finally:
        server.shutdown()
        server.server_close()

