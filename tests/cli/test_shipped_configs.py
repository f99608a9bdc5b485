"""Every config shipped in experiments/ passes `neuroscribe run CONFIG --out X --dry-run`: its components,
options, backends and units are checked, with nothing run, fetched or spent."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuroscribe.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "experiments").glob("*.toml"))


def test_the_paper_configs_and_their_chat_only_variant_are_shipped() -> None:
    assert {"paper-gpt2-xl.toml", "paper-gpt2-small.toml", "paper-gpt2-xl-chat.toml"} <= {p.name for p in SHIPPED}


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_config_dry_runs(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["run", str(config), "--out", str(out), "--dry-run"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "estimated model calls:" in printed.out
    assert not out.exists()
