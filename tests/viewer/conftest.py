"""Fixtures: small real run directories and one headless Chromium tab for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from viewer_helpers import write_run, write_scorer_run

from neuroscribe.viewer.headless import Page, chromium_page, find_chromium


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run")
    write_run(path)
    return path


@pytest.fixture(scope="session")
def scorer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with a simulation method and a plugin scorer's method (ExplanationScores results)."""
    path = tmp_path_factory.mktemp("scorer-run")
    write_scorer_run(path)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Page]:
    if find_chromium() is None:
        pytest.skip("headless Chromium not found at /usr/bin/chromium (install it with `make browser` as root)")
    with chromium_page() as page:
        yield page
