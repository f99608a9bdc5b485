"""Collect activation datasets (published-format neuron records) from any local causal LM.

`collect(config)` streams a corpus through the subject model once, collating every requested unit of a
layer at once as soon as that layer has run (see `collation`), checkpoints every `checkpoint_every`
excerpts so a killed run resumes where it stopped, and writes a local dataset directory (see `writer`).
With several autoencoders (`saes`), all are read in that one pass, each written as its own dataset
`out_dir/<id>`, and `out_dir/autoencoders.json` (written last) lists them.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.records import UnitKind
from neuroscribe.serialization import atomic_write_bytes

from .config import AutoencoderSpec, CollectConfig

if TYPE_CHECKING:
    from .collation import CollationResult, StreamingCollator
    from .corpora import ExcerptBatch
    from .subject import Probe, SubjectModel

logger = logging.getLogger(__name__)

STATE_FILE = ".collect-state.pt"
"""Checkpoint of an unfinished collection inside the output directory; removed when it completes."""
AUTOENCODERS_INDEX = "autoencoders.json"
"""With `saes`: the list of the autoencoders' datasets in the output directory (written last: marks completion)."""
LOOKUP_WARN_GIB = 4.0
"""Above this the collector warns about the look-up tables' memory (one 16k-latent autoencoder of a 49k
vocabulary: 6 GiB)."""
STATE_VERSION = 3
"""Format of the checkpoint (2: excerpt sources and per-unit samples; 3: mergeable shard states); another one
is refused, never misread."""

__all__ = ["AutoencoderSpec", "CollectConfig", "collate_batch", "collect"]


@dataclass(frozen=True)
class _Plan:
    probes: list[Probe]
    indices: list[list[int]]  # per probe, the units of its layer it reads
    n_positions: int
    saes: list[AutoencoderSpec | None]  # per probe, the `saes` entry it reads (None without `saes`)

    @property
    def stop_layer(self) -> int:
        """The deepest layer a probe reads: the forward pass stops after it."""
        return max(probe.layer for probe in self.probes)

    def parts(self) -> list[tuple[AutoencoderSpec | None, _Plan, list[int]]]:
        """(autoencoder, its probes, their numbers) per dataset to write: one per `saes` entry, else one."""
        if self.saes[0] is None:
            return [(None, self, list(range(len(self.probes))))]
        return [(sae, _Plan([self.probes[n]], [self.indices[n]], self.n_positions, [sae]), [n])
                for n, sae in enumerate(self.saes)]

    @property
    def units(self) -> list[tuple[int, int]]:
        """(layer, index) of every unit, probe by probe."""
        return [(probe.layer, index) for probe, indices in zip(self.probes, self.indices, strict=True)
                for index in indices]


def collate_batch(subject: SubjectModel, probes: Sequence[Probe], collators: Sequence[StreamingCollator],
                  batch: ExcerptBatch, stop_layer: int) -> None:
    """One forward pass, each probe's values folded into its own collator as soon as its layer has run."""
    import torch

    token_ids, excerpt_ids = torch.from_numpy(batch.token_ids), torch.from_numpy(batch.excerpt_ids)
    sources = torch.from_numpy(batch.sources)
    subject.stream(token_ids, probes, stop_layer,
                   lambda number, values: collators[number].update(values, token_ids, excerpt_ids, sources))


def _probe(config: CollectConfig, subject: SubjectModel, layer: int,
           sae: AutoencoderSpec | None) -> tuple[Probe, int]:
    """A probe reading every unit of `layer` (of autoencoder `sae`, with `saes`), and how many units that is."""
    from .autoencoders import load_autoencoder
    from .config import parse_hook
    from .subject import AttentionHeadProbe, AutoencoderProbe, MLPNeuronProbe

    if config.unit_kind is UnitKind.MLP_NEURON:
        return MLPNeuronProbe(layer), subject.mlp_width(layer)
    if config.unit_kind is UnitKind.ATTENTION_HEAD:
        subject.attention(layer)  # fail early on an unknown layout
        return AttentionHeadProbe(layer), subject.attention_shape()[0]
    path, hook = (sae.path, sae.point) if sae is not None else (config.sae_path, parse_hook(config.sae_hook)[1])
    assert path is not None
    subject.mlp(layer)  # a layer the model has
    d_in = subject.mlp_width(layer) if hook == "mlp_in" else subject.hidden_size
    try:
        autoencoder = load_autoencoder(path, d_in, subject.device)
    except DataError as error:
        if sae is None:
            raise
        raise DataError(f"collect: `saes` entry {sae.id!r} ({hook} of layer {layer}): {error}") from None
    return AutoencoderProbe(layer, autoencoder, hook), autoencoder.n_latents


def _plan(config: CollectConfig, subject: SubjectModel) -> _Plan:
    import torch

    probes: list[Probe] = []
    probe_indices: list[list[int]] = []
    targets: list[tuple[int, AutoencoderSpec | None]] = [(sae.layer, sae) for sae in config.saes
                                                         if sae.layer is not None]
    for layer, sae in targets or [(layer, None) for layer in config.layers]:
        probe, width = _probe(config, subject, layer, sae)
        indices = list(config.indices) if config.indices is not None else list(range(width))
        if max(indices) >= width:
            where = f"layer {layer} of {config.model}" if sae is None else f"autoencoder {sae.id!r} ({sae.path})"
            raise ConfigError(f"unit index {max(indices)} does not exist: {where} has "
                              f"{width} {config.unit_kind.value}s (indices 0..{width - 1})")
        if config.indices is not None:
            probe.indices = torch.tensor(indices, device=subject.device)
        probes.append(probe)
        probe_indices.append(indices)
    t = config.excerpt_tokens
    n_positions = t * (t + 1) // 2 if config.unit_kind is UnitKind.ATTENTION_HEAD else t
    return _Plan(probes, probe_indices, n_positions, [sae for _, sae in targets] or [None] * len(probes))


def _package_version() -> str:
    try:
        return metadata.version("neuroscribe")
    except metadata.PackageNotFoundError:
        return "unknown"


def _short_samples(config: CollectConfig, results: list[CollationResult]) -> dict[str, int]:
    """How many units' samples came out short because the pool held too few excerpts from documents
    other than those of the unit's top excerpts (never filled with such excerpts)."""
    random_short = quantile_short = 0
    for result in results:
        n_pool = result.pool_activations.shape[0]
        random_short += int(((result.random_rows >= 0).sum(dim=0) < min(config.n_random, n_pool)).sum())
        filled = result.quantile_chosen.sum(dim=1)  # [Q, U]
        quantile_short += int((filled < config.n_per_quantile).any(dim=0).sum())
    return {"random_sample": random_short, "random_sample_by_quantile": quantile_short}


def _manifest(config: CollectConfig, plan: _Plan, corpus: str, results: list[CollationResult],
              seconds: float, sae: AutoencoderSpec | None) -> dict[str, object]:
    indices = {probe.layer: unit_indices for probe, unit_indices in zip(plan.probes, plan.indices, strict=True)}
    short = _short_samples(config, results)
    if any(short.values()):
        logger.warning("%d units have a random sample shorter than %d, %d a quantile bin with fewer than %d "
                       "excerpts: the pool of %d excerpts holds too few from documents other than those of their top "
                       "excerpts; raise quantile_pool or max_tokens", short["random_sample"], config.n_random,
                       short["random_sample_by_quantile"], config.n_per_quantile, config.quantile_pool)
    return {
        "format": "neuroscribe-local-dataset",
        "format_version": 2,
        "subject_model": config.model,
        "unit_kind": config.unit_kind.value,
        "layers": sorted(indices),
        "indices": {str(layer): indices[layer] for layer in sorted(indices)},
        "n_units": sum(len(unit_indices) for unit_indices in indices.values()),
        "corpus": corpus,
        "n_excerpts": results[0].n_excerpts,
        "n_tokens": results[0].n_excerpts * config.excerpt_tokens,
        "excerpt_tokens": config.excerpt_tokens,
        "seed": config.seed,
        # none for heads, or no token seen often enough
        "has_token_lookup": any(result.lookup_token_ids is not None for result in results),
        "has_weight_summaries": config.weight_summaries,
        "has_excerpt_sources": True,
        **({"autoencoder": sae.to_json_obj()} if sae is not None else {}),
        "units_with_short_samples": short,
        "config": config.to_json_obj(),
        "config_fingerprint": config.fingerprint(),
        "neuroscribe_version": _package_version(),
        "collection_seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def already_collected(config: CollectConfig) -> bool:
    """Whether `config.out_dir` holds this collection, finished; refuses a directory holding another one."""
    from .writer import MANIFEST

    manifest_path = config.out_dir / (AUTOENCODERS_INDEX if config.saes else MANIFEST)
    if not manifest_path.is_file():
        return False
    existing = json.loads(manifest_path.read_text(encoding="utf-8"))
    if existing.get("config_fingerprint") == config.fingerprint():
        logger.info("%s already holds this collection; nothing to do", config.out_dir)
        return True
    raise ConfigError(f"{config.out_dir} already holds a different collection ({manifest_path}); "
                      "choose another output directory or delete that one")


def load_subject(config: CollectConfig) -> SubjectModel:
    from .subject import SubjectModel

    return SubjectModel(config.model, device=config.device, eager_attention=config.unit_kind is UnitKind.ATTENTION_HEAD)


def new_collators(config: CollectConfig, subject: SubjectModel) -> tuple[_Plan, list[StreamingCollator]]:
    """The units to read and an empty collator per probe."""
    from .collation import CollationSettings, StreamingCollator, unit_id

    plan = _plan(config, subject)
    lookup_gib = subject.vocab_size * len(plan.units) * 8 / 2**30  # int64 sums, vocabulary x units
    if config.lookup_tokens and plan.n_positions == config.excerpt_tokens and lookup_gib > LOOKUP_WARN_GIB:
        logger.warning("the token look-up tables of %d units need up to %.1f GiB (vocabulary %d x units, int64); "
                       "set lookup_tokens = 0 to leave them out, or collect fewer units per run",
                       len(plan.units), lookup_gib, subject.vocab_size)
    settings = CollationSettings(
        top_k=config.top_k, n_random=config.n_random, n_quantiles=config.n_quantiles,
        n_per_quantile=config.n_per_quantile, quantile_pool=config.quantile_pool,
        lookup_tokens=config.lookup_tokens, lookup_min_count=config.lookup_min_count, seed=config.seed,
    )  # fmt: skip
    collators = [StreamingCollator(settings, n_units=len(indices), n_positions=plan.n_positions,
                                   excerpt_tokens=config.excerpt_tokens, vocab_size=subject.vocab_size,
                                   unit_ids=[unit_id(probe.layer, index, sae.id if sae else "") for index in indices])
                 for probe, indices, sae in zip(plan.probes, plan.indices, plan.saes, strict=True)]
    return plan, collators


def write_dataset(config: CollectConfig, subject: SubjectModel, plan: _Plan, collators: Sequence[StreamingCollator],
                  corpus: str, started: float) -> None:
    """Finalize the collators and write the records, the optional weight summaries and the manifest (last);
    with `saes`, one dataset per autoencoder and then the index of them."""
    from tqdm import tqdm

    from .writer import MANIFEST, RecordBuilder, write_file, write_unit

    results = [collator.finalize() for collator in collators]
    index: dict[str, object] = {}
    with tqdm(total=len(plan.units), desc="write records", unit="unit", disable=not config.progress) as bar:
        for sae, part, numbers in plan.parts():
            root = config.out_dir if sae is None else config.out_dir / sae.id
            part_results = [results[n] for n in numbers]
            for probe, indices, result in zip(part.probes, part.indices, part_results, strict=True):
                builder = RecordBuilder(result, subject.token_strings, config.unit_kind)
                for column, unit_index in enumerate(indices):
                    write_unit(root, builder, column, probe.layer, unit_index)
                    bar.update()
            if config.weight_summaries:
                from neuroscribe.datasets.weights import write_weight_summaries

                write_weight_summaries(subject.model, part.units, root, subject.token_strings)
            manifest = _manifest(config, part, corpus, part_results, time.monotonic() - started, sae)
            write_file(root / MANIFEST, json.dumps(manifest, indent=2))
            if sae is not None:
                index[sae.id] = {**sae.to_json_obj(), "dataset": sae.id, "n_units": manifest["n_units"]}
    if index:
        write_file(config.out_dir / AUTOENCODERS_INDEX, json.dumps({
            "format": "neuroscribe-autoencoder-collection", "format_version": 1, "subject_model": config.model,
            "autoencoders": index, "config": config.to_json_obj(), "config_fingerprint": config.fingerprint(),
        }, indent=2))


def collect(config: CollectConfig) -> Path:
    """Build the dataset described by `config` and return its directory (resumes an interrupted run)."""
    import torch
    from tqdm import tqdm

    from .corpora import excerpts, open_corpus

    out = config.out_dir
    if already_collected(config):
        return out
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subject = load_subject(config)
    plan, collators = new_collators(config, subject)
    state_path = out / STATE_FILE
    finished = False
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        if state.get("fingerprint") != config.fingerprint():
            raise ConfigError(f"{state_path} belongs to a collection with different settings; delete it to restart "
                              "or use the settings it was started with")
        if state.get("version") != STATE_VERSION or len(state.get("collators", ())) != len(collators):
            raise ConfigError(f"{state_path} was written by another version of neuroscribe (checkpoint format "
                              f"{state.get('version', 1)}, this one reads {STATE_VERSION}); delete it to restart")
        for collator, collator_state in zip(collators, state["collators"], strict=True):
            collator.load_state_dict(collator_state)
        finished = bool(state["finished"])
        logger.info("resuming %s after %d excerpts", out, collators[0].n_excerpts)

    def save(done: bool) -> None:
        """Atomic, and through ordinary file writes: a full disk is an OSError naming the file, never a
        half-written state (torch's own writer reports a full disk as a bare RuntimeError)."""
        buffer = io.BytesIO()
        torch.save({"version": STATE_VERSION, "fingerprint": config.fingerprint(),
                    "collators": [c.state_dict() for c in collators], "finished": done}, buffer)
        atomic_write_bytes(state_path, buffer.getvalue(), temp_prefix=".partial-")

    corpus = open_corpus(config.corpus, text_field=config.text_field, split=config.split,
                         shuffle=config.shuffle_documents, seed=config.seed)
    probes = plan.probes
    stop_layer = plan.stop_layer
    if not finished:
        def tokenize(texts: list[str]) -> list[list[int]]:
            return subject.tokenizer(texts, add_special_tokens=False)["input_ids"]  # type: ignore[no-any-return]

        bar = tqdm(total=config.max_excerpts and config.max_excerpts * config.excerpt_tokens,
                   initial=collators[0].n_excerpts * config.excerpt_tokens, unit="tok", unit_scale=True,
                   desc=f"collect {config.unit_kind.value}s", disable=not config.progress)
        since_save = 0
        with bar:
            for batch in excerpts(corpus.documents(), tokenize, excerpt_tokens=config.excerpt_tokens,
                                  batch_size=config.batch_size, max_excerpts=config.max_excerpts,
                                  skip=collators[0].n_excerpts):
                collate_batch(subject, probes, collators, batch, stop_layer)
                bar.update(batch.token_ids.size)
                since_save += len(batch.excerpt_ids)
                if since_save >= config.checkpoint_every:
                    save(False)
                    since_save = 0
        if collators[0].n_excerpts == 0:
            raise DataError(f"corpus {corpus.describe} gave no excerpt of {config.excerpt_tokens} tokens")
        save(True)
    write_dataset(config, subject, plan, collators, corpus.describe, started)
    state_path.unlink(missing_ok=True)
    return out
