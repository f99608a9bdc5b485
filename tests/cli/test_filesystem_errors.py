"""Filesystem failures (an unwritable --out, a read-only mount, a disk that fills) end in one clear message
naming the path and why, never a traceback, and finished work is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def neuroscribe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "neuroscribe", *args], capture_output=True, text=True, timeout=300,
                          check=False, env=env)


def word_config(path: Path, dataset: Path) -> Path:
    from word_units import write_word_config

    return write_word_config(path, dataset, "explanation_following:follows_explanations")


def assert_clear(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root can mount one here; where it cannot, the test needing it is skipped and the
    unwritable-path test below still runs)."""
    point = tmp_path / "mnt"
    point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()})")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_an_out_under_a_file_names_the_path(tmp_path: Path, word_dataset: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = neuroscribe("run", str(word_config(tmp_path / "c.toml", word_dataset)), "--out", str(blocker / "run"),
                       "--no-progress")
    assert_clear(done, "Not a directory", str(blocker))


def test_a_read_only_out_names_the_path(tmp_path: Path, word_dataset: Path, mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    done = neuroscribe("run", str(word_config(tmp_path / "c.toml", word_dataset)), "--out", str(mount / "run"),
                       "--no-progress")
    assert_clear(done, "Read-only file system", str(mount / "run"), "choose another --out")


@pytest.mark.slow
def test_a_disk_that_fills_during_collection_says_so_and_resumes(mount: Path) -> None:
    args = ["collect", "--model", "embedded", "--corpus", "embedded", "--layers", "0", "--indices", "0-7",
            "--excerpt-tokens", "16", "--max-tokens", "4096", "--out", str(mount / "dataset"), "--no-progress"]
    done = neuroscribe(*args)
    assert_clear(done, "No space left on device", str(mount / "dataset"), "free space")
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
    again = neuroscribe(*args)
    assert again.returncode == 0, again.stderr
    assert (mount / "dataset" / "dataset.json").is_file()
