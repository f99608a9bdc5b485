"""Synthetic units that fire on one word each, as a local dataset, for runs with scripted models (no model)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from neuroscribe.records import ActivationRecord, NeuronId, NeuronRecord
from neuroscribe.serialization import dumps

FILLER = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
          "nu", "xi", "omicron", "pi", "rho", "sigma"]
WORDS = {0: "cat", 1: "dog"}


def excerpt(number: int, word: str | None, peak: float) -> ActivationRecord:
    """Six tokens, all distinct across excerpts; `word` (if any) third, with activation `peak`."""
    tokens = [f" {FILLER[(number + i) % len(FILLER)]}{number}" for i in range(6)]
    activations = [0.0] * 6
    if word is not None:
        tokens[2], activations[2] = f" {word}", peak
    return ActivationRecord(tokens=tokens, activations=activations)


def unit_record(index: int, word: str | None = None) -> NeuronRecord:
    """Unit `index` firing on `word` (default: WORDS[index]) in every top excerpt and half the random ones."""
    word = word or WORDS[index]
    top = [excerpt(100 * index + i, word, 9.0 - i / 4) for i in range(8)]
    random = [excerpt(100 * index + 50 + i, word if i % 2 else None, 1.0) for i in range(6)]
    return NeuronRecord(neuron_id=NeuronId(0, index), most_positive_activation_records=top, random_sample=random)


def scripted_config(dataset: Path, **records: object) -> dict[str, object]:
    """Two units of `word_dataset`, explained and simulated by `explanation_following` (best of 4 on valid)."""
    return {
        "name": "best-of-n",
        "units": {"refs": ["0/0", "0/1"]},
        "records": {"dataset": str(dataset), "n_per_split": 2, "score_split": "test", **records},
        "backends": {"default": {"type": "scripted",
                                 "options": {"responder": "explanation_following:follows_explanations"}}},
        "explainers": [{"name": "token_activation_pair",
                        "options": {"n_candidates": 4, "temperature": 1.0, "n_worked_examples": 0}}],
        "simulators": [{"name": "all_at_once", "options": {"n_worked_examples": 0}}],
        "controls": {"random_explanation": False},  # so each explanation is simulated on its own unit only
        "run": {"progress": False},
    }


def write_word_dataset(root: Path, words: Mapping[int, str] = WORDS) -> Path:
    """A local dataset of the `words` units (unit i fires on the word words[i])."""
    (root / "collated-activations" / "0").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"subject_model": "synthetic", "unit_kind": "mlp_neuron"}))
    for index, word in words.items():
        (root / "collated-activations" / "0" / f"{index}.json").write_text(dumps(unit_record(index, word)))
    return root


def write_word_config(path: Path, dataset: Path, responder: str, *, units: int = 2, extra: str = "") -> Path:
    """A TOML config over the first `units` word units, every model call answered by the scripted `responder`
    ('module:function'); `extra` is appended (more tables)."""
    refs = ", ".join(f'"0/{i}"' for i in range(units))
    path.write_text(f"""
name = "words"
[units]
refs = [{refs}]
[records]
dataset = "{dataset}"
n_per_split = 2
[backends.default]
type = "scripted"
[backends.default.options]
responder = "{responder}"
[[explainers]]
name = "token_activation_pair"
options = {{ n_worked_examples = 0 }}
[[simulators]]
name = "all_at_once"
options = {{ n_worked_examples = 0 }}
{extra}""")
    return path
