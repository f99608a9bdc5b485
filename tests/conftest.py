"""Fixtures shared by the whole suite. Heavy resources (models, servers) load once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from neuroscribe.llm.hf import HFBackend

DATA = Path(__file__).parent / "data"
REFDATA = DATA / "refdata"
MIRROR_ROOT = REFDATA / "mirror"
REAL_RECORD = MIRROR_ROOT / "neuron-explainer" / "data" / "collated-activations" / "1" / "1.json"


@pytest.fixture(scope="session")
def real_record_path() -> Path:
    """GPT-2 XL layer 1 neuron 1, exactly as published (see tests/data/refdata/PROVENANCE.md)."""
    return REAL_RECORD


@pytest.fixture(scope="session")
def mirror_root() -> Path:
    return MIRROR_ROOT


@pytest.fixture(scope="session")
def embedded_checkpoint() -> Path:
    """The embedded SmolLM2-135M-Instruct as a transformers checkpoint directory (fetched and converted once)."""
    from neuroscribe.assets import embedded_model_checkpoint

    return embedded_model_checkpoint()


@pytest.fixture(scope="session")
def embedded_backend(embedded_checkpoint: Path) -> Iterator[HFBackend]:
    """One in-process HF backend on the embedded model for the whole session (bare: no cache, no retries).

    SmolLM2-135M does not follow explanations (simulation correlation ~0): it proves paths work, not scores.
    """
    from neuroscribe.llm.hf import HFBackend

    backend = HFBackend("embedded")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def word_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic units that fire on one word each (see `word_units`); no model."""
    from word_units import write_word_dataset

    return write_word_dataset(tmp_path_factory.mktemp("words") / "words")
