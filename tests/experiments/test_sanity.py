"""`neuroscribe sanity`: a scorer that follows explanations passes every check, one that ignores them passes
none, the embedded model on the quickstart passes few; worse explanations are made as documented; bad runs
are refused with the reason."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from word_following import content_words

from neuroscribe.cli import main
from neuroscribe.errors import ConfigError, DataError
from neuroscribe.experiments import RunStore, RunSummary, config_from_dict, run_experiment
from neuroscribe.experiments.sanity import (
    UNRELATED_CONCEPTS,
    compound_parts,
    derangement,
    drop_half,
    perturbations,
    run_sanity,
    with_extra_concept,
)
from neuroscribe.llm.base import Completion, CompletionRequest
from neuroscribe.records import ActivationRecord, NeuronId, NeuronRecord, UnitId
from neuroscribe.serialization import dumps

METHOD = "token_activation_pair+all_at_once"
WORDS = {0: ("cat", "dog"), 1: ("rain", "snow"), 2: ("piano", "violin"), 3: ("copper", "silver")}
UNRELATED = [sorted(content_words(concept), key=len)[-1] for concept in UNRELATED_CONCEPTS]
"""One word of each unrelated concept: the excerpts hold them (at zero), as any broad corpus would."""


# --- worse explanations ---------------------------------------------------------------------------------


def test_compound_explanations_split_at_and_or_commas_and_semicolons_not_inside_numbers() -> None:
    assert compound_parts("the words cat and dog") == ["the words cat", "dog"]
    assert compound_parts("numbers, dates; or years.") == ["numbers", "dates", "years"]
    assert compound_parts("Sports OR weather and prices") == ["Sports", "weather", "prices"]
    assert compound_parts("amounts above 1,000 dollars") == ["amounts above 1,000 dollars"]
    assert compound_parts("the word android") == ["the word android"]  # 'and' inside a word is no split


def test_missing_label_drops_half_the_parts_in_order_and_is_none_for_one_part() -> None:
    assert drop_half("the name of a person", random.Random(0)) is None
    for seed in range(20):
        kept = drop_half("alpha, beta, gamma, delta, epsilon", random.Random(seed))
        assert kept is not None
        parts = kept.split(", ")
        assert len(parts) == 3 and parts == sorted(parts, key=["alpha", "beta", "gamma", "delta", "epsilon"].index)
    assert drop_half("cats and dogs", random.Random(1)) in ("cats", "dogs")
    assert {drop_half("a, b, c, d", random.Random(s)) for s in range(30)} > {"a, b"}  # the seed decides which


def test_extra_label_appends_one_of_our_concepts() -> None:
    padded = with_extra_concept("the words cat and dog.", random.Random(0))
    head, _, concept = padded.partition(", and also ")
    assert head == "the words cat and dog" and concept in UNRELATED_CONCEPTS


@given(st.integers(2, 40), st.integers(0, 2**32 - 1))
def test_a_derangement_moves_every_unit_and_is_a_permutation(n: int, seed: int) -> None:
    order = derangement(n, random.Random(seed))
    assert sorted(order) == list(range(n))
    assert all(i != j for i, j in enumerate(order))


def test_checks_that_cannot_apply_say_why() -> None:
    unit = UnitId(0, 1)
    alone = perturbations("the name of a person", unit, None, 0, METHOD)
    assert [(p.check, p.explanation) for p in alone[:2]] == [("wrong_label", None), ("missing_label", None)]
    assert "no other unit" in alone[0].note and "not compound" in alone[1].note
    assert alone[2].explanation is not None and alone[2].explanation.startswith("the name of a person, and also ")
    same = perturbations("the name of a person", unit, (UnitId(0, 2), "the name of a person"), 0, METHOD)
    assert same[0].explanation is None and "0/2 has the same explanation" in same[0].note
    assert perturbations("x and y", unit, None, 0, METHOD) == perturbations("x and y", unit, None, 0, METHOD)


# --- a scripted run -------------------------------------------------------------------------------------


def excerpt(unit: int, number: int, peaks: tuple[float, float]) -> ActivationRecord:
    """The unit's two words at `peaks`; every other unit's words and one word per unrelated concept at 0."""
    first, second = WORDS[unit]
    others = [w for u, pair in WORDS.items() if u != unit for w in pair]
    words = [f"x{unit}n{number}a", first, f"x{unit}n{number}b", second, *others, *UNRELATED, f"x{unit}n{number}c"]
    activations = [0.0] * len(words)
    activations[1], activations[3] = peaks
    return ActivationRecord(tokens=[f" {w}" for w in words], activations=activations)


def unit_record(unit: int) -> NeuronRecord:
    top = [excerpt(unit, i, (9.0 - i / 4, 6.0)) for i in range(8)]
    random_sample = [excerpt(unit, 50 + i, (2.0, 1.0) if i % 2 else (0.0, 0.0)) for i in range(6)]
    return NeuronRecord(neuron_id=NeuronId(0, unit), most_positive_activation_records=top,
                        random_sample=random_sample)


@pytest.fixture(scope="module")
def words_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sanity") / "words"
    (root / "collated-activations" / "0").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"subject_model": "synthetic", "unit_kind": "mlp_neuron"}))
    for unit in WORDS:
        (root / "collated-activations" / "0" / f"{unit}.json").write_text(dumps(unit_record(unit)))
    return root


def scripted_config(dataset: Path, simulator: str = "word_following:follows_words",
                    refs: tuple[str, ...] = tuple(f"0/{u}" for u in WORDS)) -> dict[str, object]:
    def scripted(responder: str) -> dict[str, object]:
        return {"type": "scripted", "options": {"responder": responder}}

    return {
        "name": "sanity", "seed": 7,
        "units": {"refs": list(refs)},
        "records": {"dataset": str(dataset), "n_per_split": 2},
        "backends": {"explainer": scripted("word_following:follows_words"), "simulator": scripted(simulator)},
        "explainers": [{"name": "token_activation_pair", "backend": "explainer", "options": {"n_worked_examples": 0}}],
        "simulators": [{"name": "all_at_once", "backend": "simulator", "options": {"n_worked_examples": 0}}],
        "run": {"progress": False},
    }


def ignores_explanations(request: CompletionRequest) -> Completion:
    """Predicts 10 on every excerpt's second token, whatever the explanation says."""
    assert request.distributions is not None
    n = sum(s.read_distribution for s in request.distributions.segments)
    return Completion(distributions=tuple(
        tuple(1.0 if int(c) == (10 if i == 1 else 0) else 0.0 for c in request.distributions.candidates)
        for i in range(n)))


def test_a_simulator_that_follows_explanations_passes_every_check(words_dataset: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert run_experiment(config_from_dict(scripted_config(words_dataset)), run).failed == 0
    stored = RunStore(run).outcomes(METHOD)
    assert {u.index: o.explanation for u, o in stored.items()} == {
        u: f"the words {a} and {b}" for u, (a, b) in WORDS.items()}
    assert main(["sanity", str(run), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "all_at_once on backend 'simulator', scripted:word_following:follows_words passes all 12 checks" in text
    assert "Originals scored again: 4 of 4 equal the run's stored scores." in text
    assert "random_explanation" not in text  # controls are not checked
    report = json.loads((run / "sanity.json").read_text(encoding="utf-8"))
    (scorer,) = report["scorers"]
    assert scorer["score"] == "ev_correlation.top_and_random" and scorer["methods"] == [METHOD]
    for check in ("wrong_label", "missing_label", "extra_label"):
        assert (scorer["tallies"][check]["held"], scorer["tallies"][check]["decided"]) == (4, 4)
    overall = scorer["tallies"]["all"]
    assert (overall["held"], overall["decided"], overall["share"], overall["high"]) == (12, 12, 1.0, 1.0)
    assert overall["low"] == pytest.approx(0.7575, abs=1e-4)  # Wilson, 12 of 12
    explanations = {u.index: o.explanation for u, o in stored.items()}
    for unit in scorer["units"]:
        index = unit["unit"]["index"]
        assert unit["score"] == pytest.approx(stored[UnitId(0, index)].scores["top_and_random"])
        wrong, missing, extra = unit["checks"]
        assert wrong["explanation"] in set(explanations.values()) - {explanations[index]}
        assert missing["explanation"] in WORDS[index] or missing["explanation"] == f"the words {WORDS[index][0]}"
        assert extra["explanation"].startswith(f"{explanations[index]}, and also ")
        assert all(c["score"] < unit["score"] and c["status"] == "held" for c in unit["checks"])


def test_a_simulator_that_ignores_explanations_passes_none(words_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = scripted_config(words_dataset, simulator="test_sanity:ignores_explanations")
    assert run_experiment(config_from_dict(config), run).failed == 0
    (scorer,) = run_sanity(run).scorers
    overall = scorer.tally("all")
    assert (overall.held, overall.decided) == (0, 12)  # every worse score ties with the original
    assert "passes few checks, 0 of 12 checks (0%" in scorer.verdict
    assert "its scores do not follow explanations" in scorer.verdict


def test_units_and_scorers_can_be_limited(words_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_experiment(config_from_dict(scripted_config(words_dataset)), run)
    (scorer,) = run_sanity(run, max_units=1, scorers=["all_at_once"]).scorers
    assert [u.unit for u in scorer.units] == [UnitId(0, 0)]
    assert scorer.tally("all").decided == 3
    with pytest.raises(ConfigError, match="--scorer detection: not a scorer of the run; its scorers: all_at_once"):
        run_sanity(run, scorers=["detection"])


def test_the_checks_can_run_on_a_changed_config(words_dataset: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run_experiment(config_from_dict(scripted_config(words_dataset)), run)
    out = tmp_path / "ignoring.json"
    changed = "backends.simulator.options.responder=test_sanity:ignores_explanations"
    assert main(["sanity", str(run), "--set", changed, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"the run's config changed by {changed}" in text and "passes few checks, 0 of 12" in text
    assert "(the others differ: expected with a changed config)" in text
    assert json.loads(out.read_text(encoding="utf-8"))["overrides"] == [changed]
    with pytest.raises(ConfigError, match="unknown key 'n_per_splt'"):
        run_sanity(run, overrides=["records.n_per_splt=1"])


# --- bad input ------------------------------------------------------------------------------------------


def test_a_directory_that_is_not_a_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sanity", str(tmp_path), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path} is not a run directory: it has no run.json" in error and "Traceback" not in error


def test_a_run_without_an_explained_unit_that_finished_is_refused(words_dataset: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    summary = run_experiment(config_from_dict(scripted_config(words_dataset, refs=("0/9",))), run)  # no record
    assert summary.completed == 0 and summary.failed == 2
    assert main(["sanity", str(run), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "no explained method has a unit that finished ok" in error
    assert f"explained methods: {METHOD}" in error and "random_explanation+all_at_once" in error
    assert not (run / "sanity.json").exists()


def test_a_run_whose_config_this_code_reads_differently_is_refused(words_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_experiment(config_from_dict(scripted_config(words_dataset)), run)
    store = RunStore(run)
    manifest = store.read_manifest()
    recorded = manifest["config_hash"]
    store.write_manifest({**manifest, "config_hash": "0123456789abcdef"})
    with pytest.raises(DataError, match=f"rebuilds with hash {recorded}, not the recorded 0123456789abcdef"):
        run_sanity(run)


# --- the embedded model on the quickstart ---------------------------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_passes_few_checks_on_the_quickstart(quickstart_run: tuple[Path, RunSummary],
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = quickstart_run
    out = tmp_path / "sanity.json"
    assert main(["sanity", str(run), "--units", "2", "--scorer", "all_at_once", "--out", str(out),
                 "--no-progress"]) == 0  # the embedded model's scorer (the quickstart's embedding one asks no model)
    text = capsys.readouterr().out
    print(text)
    report = json.loads(out.read_text(encoding="utf-8"))
    (scorer,) = report["scorers"]
    assert scorer["embedded"] and scorer["methods"] == [METHOD]
    overall = scorer["tallies"]["all"]
    assert overall["decided"] >= 4 and overall["failed"] == 0
    assert overall["held"] < overall["decided"] and overall["low"] <= 0.5  # not distinguishable from chance
    assert "passes all" not in text and scorer["verdict"] in text
    assert "its scores do not follow explanations" in text or "which chance could explain" in text
    assert "Originals scored again: 2 of 2 equal the run's stored scores." in text  # replayed from the cache
    assert report["usage"]["calls"] > 0  # the worse explanations were scored by the model itself
