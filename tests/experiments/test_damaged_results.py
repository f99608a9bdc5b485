"""A finished unit whose result line is torn or garbled is redone by the next run, never silently lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuroscribe.experiments import RunStore, config_from_dict, run_experiment
from word_units import scripted_config

METHOD = "token_activation_pair+all_at_once"


def one_candidate(dataset: Path) -> dict[str, object]:
    data = scripted_config(dataset, score_split="valid")
    data["explainers"][0]["options"]["n_candidates"] = 1  # type: ignore[index]
    return data


@pytest.fixture
def finished(word_dataset: Path, tmp_path: Path) -> tuple[RunStore, dict[str, object]]:
    """A finished run of the two word units, and its config data (to run it again)."""
    data = one_candidate(word_dataset)
    run_experiment(config_from_dict(data), tmp_path / "run")
    return RunStore(tmp_path / "run"), data


def test_a_torn_last_result_line_is_redone(finished: tuple[RunStore, dict[str, object]]) -> None:
    store, data = finished
    path = store.results_path(METHOD)
    before = store.results(METHOD)
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 40])  # the last line cut mid-JSON
    assert len(store.results(METHOD)) == len(before) - 1
    again = run_experiment(config_from_dict(data), store.path)
    assert again.completed == 1 and again.already_done == len(before) - 1
    assert store.results(METHOD) == before


def test_a_garbled_middle_line_is_skipped_and_its_unit_redone(finished: tuple[RunStore, dict[str, object]]) -> None:
    store, data = finished
    path = store.results_path(METHOD)
    before = store.results(METHOD)
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0][:30] + "#garbage#" + lines[0][30:]
    path.write_text("".join(lines))
    assert len(store.results(METHOD)) == len(before) - 1  # read without raising, the damaged line left out
    assert len(store.finished(METHOD)) == len(before) - 1
    again = run_experiment(config_from_dict(data), store.path)
    assert again.completed == 1
    assert store.results(METHOD) == before
    assert all("#garbage#" not in line for line in path.read_text().splitlines())  # compacted away
