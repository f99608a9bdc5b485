"""The quickstart replayed from tests/data/quickstart-before: its recorded dataset and response cache, so no
collection and no model call (see that folder's PROVENANCE.md)."""

from __future__ import annotations

import gzip
import shutil
import tomllib
from pathlib import Path

from neuroscribe.experiments import config_from_dict
from neuroscribe.experiments.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]
QUICKSTART_BEFORE = REPO / "tests" / "data" / "quickstart-before"


def quickstart_replay_config(directory: Path) -> ExperimentConfig:
    """experiments/quickstart.toml on the recorded dataset, its cache a fresh copy of the recorded one in
    `directory/cache` (a replay that writes to the cache must not touch the recorded file)."""
    cache = directory / "cache"
    cache.mkdir(parents=True)
    with (gzip.open(QUICKSTART_BEFORE / "cache" / "responses.sqlite.gz") as packed,
          (cache / "responses.sqlite").open("wb") as out):
        shutil.copyfileobj(packed, out)
    data = tomllib.loads((REPO / "experiments" / "quickstart.toml").read_text(encoding="utf-8"))
    del data["records"]["collect"]
    data["records"]["dataset"] = str(QUICKSTART_BEFORE / "dataset")
    data["run"].update(cache_dir=str(cache), progress=False)
    return config_from_dict(data)
