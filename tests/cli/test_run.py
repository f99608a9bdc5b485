"""`neuroscribe run --dry-run` checks the whole config before anything is loaded, created or spent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = (REPO / "experiments" / "quickstart.toml").read_text(encoding="utf-8")

PROBE = """
import sys
from neuroscribe.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "openai", "xllamacpp") if m in sys.modules)
print("loaded:", ",".join(heavy) or "nothing heavy")
sys.exit(code)
"""


def dry_run(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, "run", str(config), "--out", str(out), "--dry-run"],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("edit", "expected"), [
    (("options = { max_tokens = 40 }", "options = { max_tokns = 40 }"),
     ["[[explainers]] 'token_activation_pair' (explainers.0) options", "unknown option 'max_tokns'",
      "Did you mean 'max_tokens'?"]),
    (("[[simulators]]\n", "[[scorers]]\nname = \"simulaton\"\n\n[[simulators]]\n"),
     ["[[scorers]] 'simulaton' (scorers.0)", "unknown scorer 'simulaton'", "Did you mean 'simulation'?"]),
    (("[backends.default.transport]", "[backends.default.options]\nmax_batch_sise = 4\n\n[backends.default.transport]"),
     ["[backends.default.options]", "unknown option 'max_batch_sise'", "Did you mean 'max_batch_size'?"]),
], ids=["explainer option", "scorer", "backend option"])
def test_a_misspelt_component_fails_the_dry_run_at_once(tmp_path: Path, edit: tuple[str, str],
                                                         expected: list[str]) -> None:
    old, new = edit
    assert old in QUICKSTART
    config = tmp_path / "typo.toml"
    config.write_text(QUICKSTART.replace(old, new, 1), encoding="utf-8")
    out = tmp_path / "run"
    done = dry_run(config, out)
    assert done.returncode != 0, done.stdout
    message = done.stderr
    assert str(config) in message
    for part in expected:
        assert part in message, message
    assert "Traceback" not in message
    assert not out.exists()  # no run folder
    assert "loaded: nothing heavy" in done.stdout  # no model, no torch: validation imports only light modules


def test_a_valid_config_dry_runs_with_each_components_estimate(tmp_path: Path) -> None:
    config = tmp_path / "ok.toml"
    config.write_text(QUICKSTART, encoding="utf-8")
    done = dry_run(config, tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert "token_activation_pair+all_at_once: 4" in done.stdout
    assert "estimated model calls:" in done.stdout and "loaded: nothing heavy" in done.stdout
    assert not (tmp_path / "run").exists()


def run_words(tmp_path: Path, word_dataset: Path, *settings: str) -> subprocess.CompletedProcess[str]:
    from word_units import write_word_config

    config = write_word_config(tmp_path / "empty.toml", word_dataset, "explanation_following:no_choices")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"),
                                                       os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "neuroscribe", "run", str(config), "--out", str(tmp_path / "run"),
                           "--no-progress", *settings], capture_output=True, text=True, timeout=120, check=False,
                          env=env)


def test_a_run_in_which_every_unit_fails_exits_non_zero(tmp_path: Path, word_dataset: Path) -> None:
    done = run_words(tmp_path, word_dataset, "--set", "run.max_consecutive_backend_failures=0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "4 planned (2 units x 2 methods): 0 already done, 4 attempted: 0 finished, 4 failed" in done.stdout
    assert "nothing finished" in done.stderr


def test_empty_answers_count_as_backend_failures_and_stop_the_run(tmp_path: Path, word_dataset: Path) -> None:
    done = run_words(tmp_path, word_dataset, "--set", "run.max_consecutive_backend_failures=2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "stopped after 2 backend failures in a row" in done.stderr
    assert "returned 0 of 1 requested candidates" in done.stderr


@pytest.mark.parametrize(("records", "units", "expected"), [
    ('dataset = "gpt2-xl"', 'refs = ["48/0"]', "dataset 'gpt2-xl' has no layer 48: valid layers are 0-47"),
    ('dataset = "gpt2-xl"', 'refs = ["5/6400"]', "dataset 'gpt2-xl' has no index 6400 in layer 5"),
    ('dataset = "/no/such/folder"', 'refs = ["0/0"]', "unknown dataset '/no/such/folder'"),
    ('dataset = "gpt2-xl"', 'refs = ["0/0"]\nkind = "attention_head"', "holds mlp_neuron units"),
], ids=["layer", "index", "missing folder", "kind"])
def test_units_the_dataset_does_not_have_fail_before_anything_runs(tmp_path: Path, records: str, units: str,
                                                                    expected: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'name = "bad"\n[units]\n{units}\n[records]\n{records}\n[backends.default]\ntype = "hf"\n'
                      'model = "embedded"\n[[explainers]]\nname = "attention_head"\n[[scorers]]\n'
                      'name = "attention_simulation"\n[controls]\nrandom_explanation = false\n')
    if "attention_head" not in units:
        config.write_text(config.read_text().replace('name = "attention_head"', 'name = "token_activation_pair"')
                          .replace('name = "attention_simulation"', 'name = "simulation"'))
    done = dry_run(config, tmp_path / "run")
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()
