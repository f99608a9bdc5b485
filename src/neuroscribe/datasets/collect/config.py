"""What to collect: subject model, units, corpus and the statistics to keep per unit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from neuroscribe.errors import ConfigError
from neuroscribe.records import UnitKind

SAE_HOOKS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_in")
"""Where an autoencoder reads the subject model: the residual stream entering or leaving a layer, the
attention or MLP block's output (before it joins the residual stream), or the MLP neurons themselves (the
input of the down projection)."""

TRANSFORMER_LENS_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post",
                          "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out", "mlp.hook_post": "mlp_in"}
"""TransformerLens names (`blocks.L.<name>`) accepted for `sae_hook`; `mlp.hook_post` is the MLP neurons."""


def parse_hook(name: str) -> tuple[int | None, str]:
    """(layer the name fixes or None, one of SAE_HOOKS) for `resid_post` or `blocks.6.hook_resid_post`."""
    if name in SAE_HOOKS:
        return None, name
    head, _, rest = name.partition(".")
    layer, _, point = rest.partition(".")
    if head == "blocks" and layer.isdigit() and point in TRANSFORMER_LENS_HOOKS:
        return int(layer), TRANSFORMER_LENS_HOOKS[point]
    raise ConfigError(f"collect: unknown `sae_hook` {name!r}; valid: {', '.join(SAE_HOOKS)}, or blocks.L.NAME with "
                      f"NAME one of {', '.join(TRANSFORMER_LENS_HOOKS)}")


SAE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""What an autoencoder id may be: it names a folder and appears in unit references (`ID:LAYER/INDEX`)."""


@dataclass(frozen=True, kw_only=True)
class AutoencoderSpec:
    """One autoencoder of a collection (a `[[collect.saes]]` entry): all of them are read in one forward pass."""

    id: str
    """Names its latents: their dataset is `out_dir/<id>` and their unit references `<id>:LAYER/INDEX`."""
    path: Path
    """The autoencoder, in any layout `sae_path` accepts."""
    hook: str = "resid_post"
    """Where it reads the model, as `sae_hook`."""
    layer: int | None = None
    """The layer it reads; None takes the one a TransformerLens `hook` names, else the only entry of `layers`."""

    @property
    def point(self) -> str:
        """The hook point, one of SAE_HOOKS."""
        return parse_hook(self.hook)[1]

    def to_json_obj(self) -> dict[str, object]:
        return {"id": self.id, "path": str(self.path), "hook": self.hook, "layer": self.layer}


def _autoencoder_spec(value: object, where: str, layers: tuple[int, ...]) -> AutoencoderSpec:
    """An entry of `saes` (a table or an AutoencoderSpec) checked, with its layer resolved."""
    if isinstance(value, AutoencoderSpec):
        value = value.to_json_obj()
    if not isinstance(value, dict):
        raise ConfigError(f"collect: `{where}` must be a table with `id`, `path` and `hook`, got {value!r}")
    valid = [f.name for f in dataclasses.fields(AutoencoderSpec)]
    unknown = sorted(set(value) - set(valid))
    if unknown or "id" not in value or "path" not in value:
        raise ConfigError(f"collect: `{where}` needs `id` and `path` (valid keys: {', '.join(valid)}); "
                          f"got keys {sorted(value)}")
    sae_id, layer, hook = value["id"], value.get("layer"), value.get("hook", "resid_post")
    if not isinstance(sae_id, str) or not SAE_ID.fullmatch(sae_id):
        raise ConfigError(f"collect: `{where}.id` {sae_id!r} must be letters, digits, '_', '.' or '-' "
                          "(it names a folder), starting with a letter or digit")
    if not isinstance(hook, str):
        raise ConfigError(f"collect: `{where}.hook` must be a string, got {hook!r}")
    if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool) or layer < 0):
        raise ConfigError(f"collect: `{where}.layer` must be a non-negative integer, got {layer!r}")
    try:
        hook_layer, _point = parse_hook(hook)
    except ConfigError as error:
        raise ConfigError(f"{error} (in `{where}.hook`)") from None
    if layer is not None and hook_layer is not None and layer != hook_layer:
        raise ConfigError(f"collect: `{where}` ({sae_id!r}): `hook` {hook!r} names layer {hook_layer} but `layer` "
                          f"is {layer}; make them agree")
    layer = layer if layer is not None else hook_layer
    if layer is None:
        if len(layers) != 1:
            raise ConfigError(f"collect: `{where}` ({sae_id!r}) names no layer; give `layer`, a hook name such as "
                              f"'blocks.3.hook_resid_post', or exactly one entry in `layers`")
        layer = layers[0]
    return AutoencoderSpec(id=sae_id, path=Path(str(value["path"])), hook=hook, layer=layer)


@dataclass(frozen=True, kw_only=True)
class CollectConfig:
    """One collection run. Every field that changes the output enters `fingerprint()` (resume checks it)."""

    out_dir: Path
    """The local dataset directory to write (`dataset.json` + `collated-activations/...`)."""
    model: str = "embedded"
    """A Hugging Face causal LM id or local path, or 'embedded' (SmolLM2-135M-Instruct, offline)."""
    unit_kind: UnitKind = UnitKind.MLP_NEURON
    """MLP neurons, attention heads (token-pair values) or autoencoder latents (needs `sae_path`)."""
    layers: tuple[int, ...] = (0,)
    """Layers whose units are collected; the forward pass stops after the last of them."""
    indices: tuple[int, ...] | None = None
    """Unit indices within each layer; None collects every unit of the layer."""
    corpus: str = "embedded"
    """'embedded' (BBC News, offline), a text file, a folder of .txt/.md files, a .jsonl file, or
    'hf:NAME' / 'hf:NAME:CONFIG' for a Hugging Face dataset (needs the `datasets` package and network)."""
    text_field: str = "text"
    """Field holding the text in JSONL lines and Hugging Face dataset rows."""
    split: str = "train"
    """Split of a Hugging Face dataset."""
    excerpt_tokens: int = 64
    """Tokens per excerpt (the paper uses 64); each document is cut into consecutive windows of this
    length and its shorter tail is dropped."""
    max_tokens: int | None = None
    """Stop after this many tokens (rounded down to whole excerpts); None reads the whole corpus."""
    shuffle_documents: bool = True
    """Visit the documents of a file corpus in a seeded random order, so a `max_tokens` prefix is a
    fair sample instead of the first folder (JSONL and Hugging Face streams keep their order)."""
    batch_size: int = 32
    """Excerpts per forward pass."""
    top_k: int = 50
    """Most-activating excerpts kept per unit (published datasets: 50)."""
    n_random: int = 50
    """Uniformly sampled excerpts per unit (published: 50), each unit its own sample from the pool and none
    from a document of the unit's top excerpts."""
    n_quantiles: int = 5
    """Bins of the excerpt-maximum distribution for the stratified random sample (published: 5)."""
    n_per_quantile: int = 20
    """Excerpts sampled per bin (published: 20)."""
    quantile_pool: int = 200
    """Size of the uniform pool from which quantile boundaries are estimated and every unit's random and
    stratified samples drawn; at least n_quantiles * n_per_quantile, larger estimates the boundaries
    better and leaves more excerpts outside the documents of each unit's top excerpts (memory: pool x
    excerpt_tokens x units floats)."""
    lookup_tokens: int = 50
    """Tokens in each unit's token look-up table (highest average activation); 0 disables it."""
    lookup_min_count: int = 2
    """Tokens seen fewer times than this are left out of the look-up table (one-off noise)."""
    weight_summaries: bool = False
    """Also write weight-based token summaries (MLP neurons only; see `neuroscribe.datasets.weights`)."""
    sae_path: Path | None = None
    """An autoencoder or transcoder in a known layout (`autoencoders.formats`): a SAELens or sparsify folder,
    an OpenAI sparse_autoencoder `.pt`, a Gemma Scope `params.npz` or a file with W_enc and b_enc."""
    sae_hook: str = "resid_post"
    """Where the autoencoder (a transcoder: its input) reads the model: one of SAE_HOOKS, or a
    TransformerLens name such as `blocks.6.hook_resid_post` (its layer must be the one in `layers`)."""
    saes: tuple[AutoencoderSpec, ...] = ()
    """Several autoencoders read in one forward pass (`[[collect.saes]]` tables with `id`, `path`, `hook` and
    optional `layer`), instead of `sae_path`: each is collated in the same streaming pass and written as its
    own dataset `out_dir/<id>`; `layers` becomes the layers they read."""
    seed: int = 0
    """Seeds every random choice (document order, random samples)."""
    checkpoint_every: int = 1024
    """Save resumable progress after this many excerpts (a killed run restarts from the last save)."""
    device: str = "cpu"
    """torch device of the subject model, e.g. 'cuda'; collation state stays in CPU memory."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self) -> None:
        self._normalize_types()
        if not self.layers:
            raise ConfigError("collect: `layers` is empty; name at least one layer, e.g. layers = [0]")
        if any(layer < 0 for layer in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"collect: `layers` must be distinct non-negative integers, got {list(self.layers)}")
        if self.indices is not None and (
            not self.indices or any(i < 0 for i in self.indices) or len(set(self.indices)) != len(self.indices)
        ):
            raise ConfigError(
                f"collect: `indices` must be distinct non-negative integers (or absent for all units), "
                f"got {list(self.indices)}"
            )
        positive = {
            "excerpt_tokens": self.excerpt_tokens, "batch_size": self.batch_size, "top_k": self.top_k,
            "n_random": self.n_random, "n_quantiles": self.n_quantiles, "n_per_quantile": self.n_per_quantile,
            "checkpoint_every": self.checkpoint_every, "lookup_min_count": self.lookup_min_count,
        }  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"collect: `{name}` must be at least 1, got {value}")
        if self.lookup_tokens < 0:
            raise ConfigError(f"collect: `lookup_tokens` must be >= 0 (0 disables), got {self.lookup_tokens}")
        needed = self.n_quantiles * self.n_per_quantile
        if self.quantile_pool < max(needed, self.n_random):
            raise ConfigError(
                f"collect: `quantile_pool` ({self.quantile_pool}) must be at least n_quantiles x n_per_quantile "
                f"({needed}) and n_random ({self.n_random}); twice that estimates the boundaries well"
            )
        if self.max_tokens is not None and self.max_tokens < self.excerpt_tokens:
            raise ConfigError(
                f"collect: `max_tokens` ({self.max_tokens}) is below one excerpt ({self.excerpt_tokens} tokens)"
            )
        if self.unit_kind is UnitKind.AUTOENCODER_LATENT and self.sae_path is None and not self.saes:
            raise ConfigError("collect: autoencoder latents need `sae_path` (the encoder weights file) or `saes`")
        if self.unit_kind is not UnitKind.AUTOENCODER_LATENT and (self.sae_path is not None or self.saes):
            raise ConfigError(f"collect: `sae_path` and `saes` are only used with unit_kind = 'autoencoder_latent', "
                              f"not {self.unit_kind.value!r}")
        if self.sae_path is not None and self.saes:
            raise ConfigError("collect: give `sae_path` (one autoencoder) or `saes` (several), not both")
        hook_layer, _point = parse_hook(self.sae_hook)
        if hook_layer is not None and tuple(self.layers) != (hook_layer,):
            raise ConfigError(f"collect: `sae_hook` {self.sae_hook!r} names layer {hook_layer} but `layers` is "
                              f"{list(self.layers)}; make them agree")
        if self.sae_path is not None and len(self.layers) != 1:
            raise ConfigError("collect: an autoencoder reads one layer; give exactly one entry in `layers`")
        if self.weight_summaries and self.unit_kind is not UnitKind.MLP_NEURON:
            raise ConfigError("collect: `weight_summaries` exist for MLP neurons only")

    def _normalize_types(self) -> None:
        """Accept what TOML and keyword callers naturally pass (str paths, lists, kind names)."""
        try:
            kind = UnitKind(self.unit_kind)
        except ValueError:
            raise ConfigError(f"collect: unknown unit_kind {self.unit_kind!r}; valid: "
                              f"{', '.join(k.value for k in UnitKind)}") from None
        object.__setattr__(self, "unit_kind", kind)
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.sae_path is not None:
            object.__setattr__(self, "sae_path", Path(self.sae_path))
        for name in ("layers", "indices"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, int) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"collect: `{name}` must be a list of integers, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.saes:
            saes = tuple(_autoencoder_spec(value, f"saes[{i}]", self.layers) for i, value in enumerate(self.saes))
            ids = [sae.id for sae in saes]
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise ConfigError(f"collect: `saes` ids must be distinct, {repeated} occur more than once")
            object.__setattr__(self, "saes", saes)
            object.__setattr__(self, "layers", tuple(sorted({sae.layer for sae in saes if sae.layer is not None})))

    @property
    def max_excerpts(self) -> int | None:
        return None if self.max_tokens is None else self.max_tokens // self.excerpt_tokens

    def to_json_obj(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [v.to_json_obj() if isinstance(v, AutoencoderSpec) else v for v in value]
            elif isinstance(value, UnitKind):
                value = value.value
            out[field.name] = value
        if not self.saes:
            del out["saes"]  # added later: collections without it keep their fingerprint
        return out

    def fingerprint(self) -> str:
        """Hash of everything that changes the collected numbers (not paths of output, progress, device)."""
        relevant = {k: v for k, v in self.to_json_obj().items() if k not in {"out_dir", "progress", "device",
                                                                                "checkpoint_every"}}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
