"""The run manifest (RUN/run.json): what made a run, so every number can be traced to its config,
models, package versions and source commit; and the check that a resumed run is the same experiment."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.experiments.config import ExperimentConfig, config_from_dict, is_control
from neuroscribe.experiments.plan import Shard
from neuroscribe.experiments.store import RunStore, now_iso

PACKAGES = ("neuroscribe", "numpy", "scipy", "torch", "transformers", "openai", "xllamacpp", "tiktoken")
"""Versions recorded in run.json."""


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_commit() -> str | None:
    """The commit of the neuroscribe source tree (with '+dirty' for uncommitted changes), if it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def new_manifest(config: ExperimentConfig, source: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    methods = config.method_ids()
    return {
        "neuroscribe_version": package_versions()["neuroscribe"],
        "name": config.name,
        "config": config.to_json_obj(),
        "config_hash": config.config_hash(),
        "config_source": source,
        "overrides": list(overrides),
        "methods": methods,
        "controls": [m for m in methods if is_control(m)],
        "units": [u.ref for u in config.units.resolve(config.seed)],
        "unit_kind": config.units.kind.value,
        "backends": {name: {"type": b.spec.type, "model": b.spec.model, "base_url": b.spec.base_url,
                            "options": dict(b.options)} for name, b in config.backends.items()},
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "created": now_iso(),
        "shards": {},
    }


def run_config(store: RunStore, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config that made the run in `store`, rebuilt from its run.json and checked against the hash kept
    there (a mismatch means this code would read the config differently from the code that ran it); then
    `overrides` (`key=value`, as for `neuroscribe run --set`) are applied, e.g. to score with another model."""
    manifest = store.read_manifest()
    resolved = manifest.get("config")
    if not isinstance(resolved, dict) or not isinstance(resolved.get("backends"), dict):
        raise DataError(f"{store.manifest_path} has no resolved config; it was not written by `neuroscribe run`")
    data = dict(resolved)
    data["backends"] = {name: {**backend.get("spec", {}), **{k: v for k, v in backend.items() if k != "spec"}}
                        for name, backend in resolved["backends"].items()}  # as a TOML table: spec keys on top
    config = config_from_dict(data, source=str(store.manifest_path))
    if manifest.get("config_hash") not in (None, config.config_hash()):
        raise DataError(
            f"{store.manifest_path}: its config rebuilds with hash {config.config_hash()}, not the recorded "
            f"{manifest.get('config_hash')}; this version of neuroscribe reads it differently from the one that "
            "ran it, so anything computed from it would not describe that run"
        )
    return config_from_dict(data, overrides, source=str(store.manifest_path)) if overrides else config


def run_dataset(config: ExperimentConfig, store: RunStore) -> str:
    """The dataset the run reads records from: the one the config names, or where it collected one."""
    collect = config.records.collect
    if collect is None:
        return config.records.dataset
    return collect.out or str(store.path / "dataset")


def open_run(store: RunStore, config: ExperimentConfig, source: str | None, overrides: Sequence[str],
              shard: Shard) -> dict[str, Any]:
    """Create the run directory, or check that an existing one was made by the same config."""
    with store.locked():
        store.create()
        if store.exists():
            manifest = store.read_manifest()
            if manifest.get("config_hash") != config.config_hash():
                raise ConfigError(
                    f"{store.path} holds a run of a different config (hash {manifest.get('config_hash')}, this one "
                    f"{config.config_hash()}); resuming would mix results. Use another --out, or the same config "
                    "and overrides as before (scheduling and transport settings may differ)."
                )
        else:
            manifest = new_manifest(config, source, overrides)
        manifest["shards"] = {**manifest.get("shards", {}), str(shard): {"started": now_iso(), "pid": os.getpid()}}
        store.write_manifest(manifest)
        return manifest


def update_manifest(store: RunStore, shard: Shard, **changes: Any) -> None:
    with store.locked():
        manifest = store.read_manifest()
        entry = dict(manifest.get("shards", {}).get(str(shard), {}))
        entry.update(changes.pop("shard_entry", {}))
        manifest.setdefault("shards", {})[str(shard)] = entry
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                merged = dict(manifest[key])
                for name, item in value.items():
                    merged[name] = {**merged.get(name, {}), **item}
                manifest[key] = merged
            else:
                manifest[key] = value
        store.write_manifest(manifest)
