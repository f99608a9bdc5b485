"""`neuroscribe train-simulator` end to end: a tiny checkpoint from synthetic units, loadable by its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuroscribe.cli import main
from neuroscribe.simulator.trained import HEAD_FILE, MANIFEST_FILE, load_checkpoint


@pytest.mark.slow
def test_it_trains_saves_and_the_checkpoint_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny"
    assert main(["train-simulator", "tiny", "--synthetic-excerpts", "80", "--steps", "100", "--out", str(out)]) == 0
    assert (out / HEAD_FILE).is_file() and "step 100: loss" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["name"] == "tiny" and manifest["steps"] == 100 and manifest["settings"]["seed"] == 0
    assert "carousel neurons and the neuron puzzles never used" in manifest["notes"]
    assert load_checkpoint(str(out))[1].steps == 100


def test_a_missing_run_directory_is_an_error_that_says_what_to_give(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-simulator", "x", "--no-synthetic", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
