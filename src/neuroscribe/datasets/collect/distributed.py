"""Collection on a Ray cluster: the corpus cut into shards, each collated by a Ray task, merged exactly.

The driver tokenizes the corpus once (no model) to find where each shard starts: shard s holds the excerpts
of global batches [s * 2^m, (s + 1) * 2^m), 2^m the smallest power of two that gives at most `shards`
shards. Each task loads the subject model (once per worker process), reads the corpus from its shard's
first document, collates its excerpts under their global ids and saves its collator states under
`out_dir/.collect-shards/`. A last task merges the states in shard order (`StreamingCollator.merge`, exact)
and writes the dataset: the files are those one process writes for the same config.

Ray retries a task whose worker dies; a driver started again reuses every saved shard. `out_dir` must be on a
filesystem every node sees (see docs/distributed.md).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuroscribe.errors import ConfigError
from neuroscribe.serialization import atomic_write_bytes, atomic_write_text

from . import already_collected, collate_batch, load_subject, new_collators, write_dataset
from .config import CollectConfig

if TYPE_CHECKING:
    from .collation import StreamingCollator
    from .subject import SubjectModel

SHARDS_DIR = ".collect-shards"
"""Inside the output directory: the shard plan and each finished shard's collator states; removed at the end."""

_subjects: dict[tuple[str, str, str], SubjectModel] = {}
"""Subject models loaded by this (worker) process, so the shards a worker runs load the model once."""


def require_ray() -> Any:
    """The `ray` module, or an error saying how to install it (an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the Ray package: pip install 'neuroscribe[ray]'") from None
    return ray


def connect(address: str | None) -> Any:
    """`ray`, connected to the cluster at `address` ('auto' finds a local head; None starts a local one)."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    return ray


@dataclass(frozen=True)
class Shard:
    """A run of consecutive excerpts, whole batches of the one-process collection."""

    number: int
    """Position in the merge order."""
    document: int
    """Number of the document in which the shard's first excerpt lies."""
    document_first_id: int
    """Global excerpt id of that document's first window."""
    first: int
    """Global id of the shard's first excerpt."""
    stop: int
    """One past the global id of its last excerpt."""


def _tokenize_with(tokenizer: Any) -> Any:
    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]  # type: ignore[no-any-return]

    return tokenize


def _corpus(config: CollectConfig) -> Any:
    from .corpora import open_corpus

    return open_corpus(config.corpus, text_field=config.text_field, split=config.split,
                       shuffle=config.shuffle_documents, seed=config.seed)


def plan_shards(config: CollectConfig, shards: int) -> list[Shard]:
    """At most `shards` shards of 2^m whole batches each (the last may be shorter); tokenizer only."""
    from transformers import AutoTokenizer

    from neuroscribe.assets import resolve_model_path

    from .corpora import excerpts

    if shards < 1:
        raise ConfigError(f"collect: the number of shards must be at least 1, got {shards}")
    tokenize = _tokenize_with(AutoTokenizer.from_pretrained(resolve_model_path(config.model)))
    starts: list[tuple[int, int, int]] = []  # per batch: first id, its document, that document's first id
    n_excerpts = 0
    for batch in excerpts(_corpus(config).documents(), tokenize, excerpt_tokens=config.excerpt_tokens,
                          batch_size=config.batch_size, max_excerpts=config.max_excerpts):
        first, (document, offset) = int(batch.excerpt_ids[0]), batch.sources[0].tolist()
        starts.append((first, document, first - offset // config.excerpt_tokens))
        n_excerpts = int(batch.excerpt_ids[-1]) + 1
    if not starts:
        raise ConfigError(f"corpus {config.corpus!r} gave no excerpt of {config.excerpt_tokens} tokens")
    per_shard = 1 << max(0, math.ceil(math.log2(math.ceil(len(starts) / shards))))
    return [Shard(number, starts[b][1], starts[b][2], starts[b][0],
                  starts[b + per_shard][0] if b + per_shard < len(starts) else n_excerpts)
            for number, b in enumerate(range(0, len(starts), per_shard))]


def _subject(config: CollectConfig) -> SubjectModel:
    key = (config.model, config.device, config.unit_kind.value)
    if key not in _subjects:
        _subjects[key] = load_subject(config)
    return _subjects[key]


def _shard_path(config: CollectConfig, number: int) -> Path:
    return config.out_dir / SHARDS_DIR / f"{number}.pt"


def collect_shard(config: CollectConfig, shard: Shard) -> str:
    """Collate one shard and save its collator states (atomically); returns the file's path."""
    import torch

    from .corpora import excerpts

    subject = _subject(config)
    plan, collators = new_collators(config, subject)
    documents = itertools.islice(_corpus(config).documents(), shard.document, None)
    for batch in excerpts(documents, _tokenize_with(subject.tokenizer), excerpt_tokens=config.excerpt_tokens,
                          batch_size=config.batch_size, max_excerpts=shard.stop, skip=shard.first,
                          start=(shard.document, shard.document_first_id)):
        collate_batch(subject, plan.probes, collators, batch, plan.stop_layer)
    buffer = io.BytesIO()
    torch.save({"fingerprint": config.fingerprint(), "shard": asdict(shard),
                "collators": [collator.state_dict() for collator in collators]}, buffer)
    path = _shard_path(config, shard.number)
    atomic_write_bytes(path, buffer.getvalue(), temp_prefix=".partial-")
    return str(path)


def _load_shard(config: CollectConfig, shard: Shard, collators: list[StreamingCollator]) -> None:
    import torch

    saved = torch.load(_shard_path(config, shard.number), weights_only=False)
    if saved.get("fingerprint") != config.fingerprint() or saved.get("shard") != asdict(shard):
        raise ConfigError(f"{_shard_path(config, shard.number)} belongs to another collection or shard plan; "
                          f"delete {config.out_dir / SHARDS_DIR} to restart")
    for collator, state in zip(collators, saved["collators"], strict=True):
        collator.load_state_dict(state)


def merge_and_write(config: CollectConfig, shards: list[Shard], seconds_so_far: float) -> str:
    """Merge the saved shard states in order and write the dataset (`seconds_so_far`: the driver's time until
    now, for the manifest; clocks of other nodes are not comparable)."""
    started = time.monotonic() - seconds_so_far
    subject = _subject(config)
    plan, total = new_collators(config, subject)
    _load_shard(config, shards[0], total)
    for shard in shards[1:]:
        _plan, part = new_collators(config, subject)
        _load_shard(config, shard, part)
        for collator, later in zip(total, part, strict=True):
            collator.merge(later)
    write_dataset(config, subject, plan, total, _corpus(config).describe, started)
    return str(config.out_dir)


def collect_on_ray(config: CollectConfig, *, address: str | None = None, shards: int = 4, cpus_per_task: float = 1,
                   gpus_per_task: float = 0) -> Path:
    """`collect(config)` on a Ray cluster, `shards` tasks of `cpus_per_task` CPUs and `gpus_per_task` GPUs each."""
    out = config.out_dir
    if already_collected(config):
        return out
    ray = connect(address)
    started = time.monotonic()
    plan_path = out / SHARDS_DIR / "plan.json"
    planned = {"fingerprint": config.fingerprint(), "shards": shards}
    saved = json.loads(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else {}
    if {k: saved.get(k) for k in planned} == planned:
        plan = [Shard(**shard) for shard in saved["plan"]]
    else:
        plan = plan_shards(config, shards)
        atomic_write_text(plan_path, json.dumps({**planned, "plan": [asdict(shard) for shard in plan]}))
        for stale in (out / SHARDS_DIR).glob("*.pt"):
            stale.unlink()
    options = {"num_cpus": cpus_per_task, "num_gpus": gpus_per_task, "max_retries": 3}
    run_shard = ray.remote(collect_shard).options(**options)
    pending = [run_shard.remote(config, shard) for shard in plan if not _shard_path(config, shard.number).is_file()]
    ray.get(pending)
    ray.get(ray.remote(merge_and_write).options(**options).remote(config, plan, time.monotonic() - started))
    for path in (out / SHARDS_DIR).iterdir():
        path.unlink()
    (out / SHARDS_DIR).rmdir()
    return out
