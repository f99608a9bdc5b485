"""Every published activation and explanation dataset, by name, with path templates and valid ranges.

A unit is named by a *reference*: ``DATASET:LAYER/INDEX``, e.g. ``gpt2-xl:5/131`` (GPT-2 XL, layer 5,
MLP neuron 131) or ``gpt2-small-attn:3/7`` (GPT-2 small, attention head 3.7). ``DATASET`` is a catalog
name (``neuroscribe datasets list``) or the path of a local directory holding a ``dataset.json``
manifest (what ``neuroscribe collect`` writes), e.g. ``runs/collected:0/12``. For catalog names the
form ``gpt2-xl/5/131`` is accepted too. Selections for ``datasets pull`` and experiment configs extend
this with ranges and wildcards: ``gpt2-xl:5/0-99``, ``gpt2-xl:0-3/7,9``, ``gpt2-small-attn:*/*``.

Every reference is validated against the dataset's ranges before any read, so a typo fails at once
with the valid choices instead of as a 404 from the blob store.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from neuroscribe.errors import ConfigError, DataError
from neuroscribe.records import UnitId, UnitKind

MANIFEST_NAME = "dataset.json"
"""A local directory with this file is a dataset in the collector's layout."""


class Artifact(StrEnum):
    """The kinds of file a dataset may publish per unit."""

    ACTIVATIONS = "activations"
    """Collated activations: a NeuronRecord (top and random excerpts, statistics)."""
    EXPLANATIONS = "explanations"
    """Scored explanations: NeuronSimulationResults, one per line of a .jsonl file."""
    RELATED_NEURONS = "related-neurons"
    """Upstream/downstream neurons with the strongest weight connections (undocumented dataclass)."""
    TOKENS_BY_ACTIVATION = "tokens-by-activation"
    """Tokens with the highest average activation: TokenLookupTableSummaryOfNeuron."""
    TOKENS_BY_WEIGHT = "tokens-by-weight"
    """Tokens with the largest input/output weights: WeightBasedSummaryOfNeuron."""
    EXCERPT_SOURCES = "excerpt-sources"
    """Each collected excerpt's document and token offset, beside its record: ExcerptSources (collected only)."""


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One dataset: which units of which model, where their files live, and which indices exist."""

    name: str
    """Catalog name used in references, or the directory of a local dataset."""
    description: str
    subject_model: str
    unit_kind: UnitKind
    layers: Sequence[int] | None
    """Valid layer indices (a `range` for published datasets); None: any layer >= 0 (an unlisted local dataset)."""
    indices: Sequence[int] | None
    """Valid unit indices within each layer (all layers' indices, when `indices_by_layer` is set); None: any."""
    templates: Mapping[Artifact, str]
    """Artifact -> path relative to the root, with `{layer}` and `{index}` placeholders."""
    by_token_pair: bool = False
    """Activations are per (query, key) token pair: the flattened lower triangle, see TokenPairRecord."""
    index_note: str = ""
    """Appended to out-of-range index errors (e.g. a documented range that is wrong)."""
    root: str | None = None
    """A fixed root (local datasets); None means the data root: a mirror or the public store."""
    indices_by_layer: Mapping[int, Sequence[int]] | None = None
    """Valid indices per layer, where layers differ (a collected dataset); None: `indices` in every layer."""

    def indices_in(self, layer: int) -> Sequence[int] | None:
        if self.indices_by_layer is None:
            return self.indices
        return self.indices_by_layer.get(layer, ())

    def check_layer(self, layer: int) -> None:
        if not _allowed(layer, self.layers):
            raise ConfigError(
                f"dataset {self.name!r} has no layer {layer}: valid layers are {format_indices(self.layers)}"
            )

    def check(self, layer: int, index: int) -> None:
        """Raise ConfigError unless (layer, index) is a unit of this dataset."""
        self.check_layer(layer)
        valid = self.indices_in(layer)
        if not _allowed(index, valid):
            what = "head" if self.unit_kind is UnitKind.ATTENTION_HEAD else "index"
            note = f" {self.index_note}" if self.index_note else ""
            raise ConfigError(
                f"dataset {self.name!r} has no {what} {index} in layer {layer}: valid indices are "
                f"{format_indices(valid)}.{note}"
            )

    def template(self, artifact: Artifact) -> str:
        try:
            return self.templates[artifact]
        except KeyError:
            available = ", ".join(a.value for a in self.templates)
            raise ConfigError(
                f"dataset {self.name!r} publishes no {artifact.value!r} files; it has: {available}"
            ) from None

    def relative_path(self, artifact: Artifact, layer: int, index: int) -> str:
        self.check(layer, index)
        return self.template(artifact).format(layer=layer, index=index)

    def unit_id(self, layer: int, index: int) -> UnitId:
        return UnitId(layer, index, self.unit_kind)


@dataclass(frozen=True, order=True)
class UnitRef:
    """A validated reference to one unit of one dataset; `str()` gives the canonical reference."""

    dataset: str
    layer: int
    index: int

    def __str__(self) -> str:
        return f"{self.dataset}:{self.layer}/{self.index}"

    @classmethod
    def of(cls, dataset: str, unit: UnitId) -> UnitRef:
        """`unit` in `dataset`; a latent of one of several autoencoders (`unit.sae`) is in the collection's
        folder of that autoencoder, `dataset/<sae>`."""
        return cls(str(Path(dataset) / unit.sae) if unit.sae else dataset, unit.layer, unit.index)

    @property
    def spec(self) -> DatasetSpec:
        return get_dataset(self.dataset)

    @property
    def unit(self) -> UnitId:
        return self.spec.unit_id(self.layer, self.index)


# --- the published datasets -----------------------------------------------------------------------

_EXPLAINER = "neuron-explainer"
_XL = f"{_EXPLAINER}/data"
_SMALL_AE = f"{_EXPLAINER}/gpt2-small/autoencoder_latent"
_LAYER_INDEX = "{layer}/{index}"


def _autoencoder(
    name: str, folder: str, description: str, n_latents: int, *, by_token_pair: bool = False
) -> DatasetSpec:
    collated = "collated-activations-by-token-pair" if by_token_pair else "collated-activations"
    return DatasetSpec(
        name=name,
        description=description,
        subject_model="gpt2-small",
        unit_kind=UnitKind.AUTOENCODER_LATENT,
        layers=range(12),
        indices=range(n_latents),
        templates={Artifact.ACTIVATIONS: f"{_SMALL_AE}/{folder}/{collated}/{_LAYER_INDEX}.pt"},
        by_token_pair=by_token_pair,
    )


_PUBLISHED = (
    DatasetSpec(
        name="gpt2-xl",
        description="GPT-2 XL MLP neurons (the paper's 307,200 neurons)",
        subject_model="gpt2-xl",
        unit_kind=UnitKind.MLP_NEURON,
        layers=range(48),
        indices=range(6400),
        templates={
            Artifact.ACTIVATIONS: f"{_XL}/collated-activations/{_LAYER_INDEX}.json",
            Artifact.EXPLANATIONS: f"{_XL}/explanations/{_LAYER_INDEX}.jsonl",
            Artifact.RELATED_NEURONS: f"{_XL}/related-neurons/weight-based/{_LAYER_INDEX}.json",
            Artifact.TOKENS_BY_ACTIVATION: f"{_XL}/related-tokens/activation-based/{_LAYER_INDEX}.json",
            Artifact.TOKENS_BY_WEIGHT: f"{_XL}/related-tokens/weight-based/{_LAYER_INDEX}.json",
        },
    ),
    DatasetSpec(
        name="gpt2-small",
        description="GPT-2 small MLP neurons",
        subject_model="gpt2-small",
        unit_kind=UnitKind.MLP_NEURON,
        layers=range(12),
        indices=range(3072),
        templates={
            Artifact.ACTIVATIONS: f"{_EXPLAINER}/gpt2_small_data/collated-activations/{_LAYER_INDEX}.json",
            Artifact.EXPLANATIONS: f"{_EXPLAINER}/gpt2_small_data/explanations/{_LAYER_INDEX}.jsonl",
        },
        index_note=(
            "One published dataset list gives range(3084) for these neurons; that is wrong: GPT-2 small's "
            "MLP has 4 x 768 = 3072 neurons per layer, so indices 3072-3083 do not exist."
        ),
    ),
    DatasetSpec(
        name="gpt2-small-attn",
        description="GPT-2 small attention heads, activations (write norm) by token pair",
        subject_model="gpt2-small",
        unit_kind=UnitKind.ATTENTION_HEAD,
        layers=range(12),
        indices=range(12),
        templates={
            Artifact.ACTIVATIONS: (
                f"{_EXPLAINER}/gpt2_small/attn_write_norm/collated-activations-by-token-pair/{_LAYER_INDEX}.json"
            ),
        },
        by_token_pair=True,
    ),
    _autoencoder("gpt2-small-ae-mlp-post-act-v4", "mlp_post_act_v4",
                 "GPT-2 small MLP autoencoder latents trained on MLP activations (v4, preferred)", 32768),
    _autoencoder("gpt2-small-ae-mlp-post-act", "mlp_post_act",
                 "GPT-2 small MLP autoencoder latents trained on MLP activations (first version)", 32768),
    _autoencoder("gpt2-small-ae-resid-delta-mlp-v4", "resid_delta_mlp_v4",
                 "GPT-2 small MLP autoencoder latents trained on the MLP output (v4, preferred)", 32768),
    _autoencoder("gpt2-small-ae-resid-delta-mlp", "resid_delta_mlp",
                 "GPT-2 small MLP autoencoder latents trained on the MLP output (first version)", 32768),
    _autoencoder("gpt2-small-ae-resid-delta-attn-v4", "resid_delta_attn_v4",
                 "GPT-2 small attention autoencoder latents, activation per token", 10240),
    _autoencoder("gpt2-small-ae-resid-delta-attn-v4-pairs", "resid_delta_attn_v4",
                 "GPT-2 small attention autoencoder latents, attribution per token pair", 10240, by_token_pair=True),
)

DATASETS: Mapping[str, DatasetSpec] = {spec.name: spec for spec in _PUBLISHED}
"""The published datasets by catalog name."""


def get_dataset(name: str) -> DatasetSpec:
    """A catalog dataset by name, or the local dataset in directory `name` (one with a dataset.json)."""
    if name in DATASETS:
        return DATASETS[name]
    if (Path(name) / MANIFEST_NAME).is_file():
        return local_dataset(name)
    close = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(DATASETS)}; or give a directory that holds "
        f"a {MANIFEST_NAME} (a collected dataset). `neuroscribe datasets list` shows every dataset and its ranges."
    )


# --- local (collected) datasets ------------------------------------------------------------------

LOCAL_TEMPLATES: Mapping[Artifact, str] = {
    Artifact.ACTIVATIONS: f"collated-activations/{_LAYER_INDEX}.json",
    Artifact.EXPLANATIONS: f"explanations/{_LAYER_INDEX}.jsonl",
    Artifact.TOKENS_BY_ACTIVATION: f"related-tokens/activation-based/{_LAYER_INDEX}.json",
    Artifact.TOKENS_BY_WEIGHT: f"related-tokens/weight-based/{_LAYER_INDEX}.json",
    Artifact.RELATED_NEURONS: f"related-neurons/weight-based/{_LAYER_INDEX}.json",
    Artifact.EXCERPT_SOURCES: f"excerpt-sources/{_LAYER_INDEX}.json",
}
"""The collector's layout inside a local dataset directory."""


def local_dataset(directory: str | Path) -> DatasetSpec:
    """Describe a collected dataset from its manifest; ranges come from the manifest's `layers`/`indices`."""
    path = Path(directory)
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is not a dataset directory: it has no {MANIFEST_NAME}") from None
    except (OSError, ValueError) as error:
        raise DataError(f"{manifest_path}: cannot read the dataset manifest: {error}") from error
    if not isinstance(manifest, dict):
        raise DataError(f"{manifest_path}: expected a JSON object, found {type(manifest).__name__}")
    kind_name = manifest.get("unit_kind", UnitKind.MLP_NEURON.value)
    try:
        unit_kind = UnitKind(kind_name)
    except ValueError:
        valid = ", ".join(k.value for k in UnitKind)
        raise DataError(f"{manifest_path}: field 'unit_kind' is {kind_name!r}; valid: {valid}") from None
    indices_value = manifest.get("indices")
    indices_by_layer = None
    if isinstance(indices_value, dict) and "start" not in indices_value:  # the collector's {layer: [indices]}
        indices_by_layer = {
            _manifest_int(layer, "indices", manifest_path): _index_list(value, f"indices.{layer}", manifest_path)
            for layer, value in indices_value.items()
        }
        indices: Sequence[int] | None = sorted({i for values in indices_by_layer.values() for i in values})
    else:
        indices = _manifest_indices(indices_value, "indices", manifest_path)
    templates = dict(LOCAL_TEMPLATES)
    if manifest.get("has_token_lookup") is False:
        del templates[Artifact.TOKENS_BY_ACTIVATION]
    if manifest.get("has_weight_summaries") is False:
        del templates[Artifact.TOKENS_BY_WEIGHT], templates[Artifact.RELATED_NEURONS]
    if manifest.get("has_excerpt_sources") is not True:  # collected before excerpt sources were kept
        del templates[Artifact.EXCERPT_SOURCES]
    return DatasetSpec(
        name=str(directory),
        description=f"collected dataset of {manifest.get('subject_model', 'an unnamed model')}",
        subject_model=str(manifest.get("subject_model", "unknown")),
        unit_kind=unit_kind,
        layers=_manifest_indices(manifest.get("layers"), "layers", manifest_path),
        indices=indices,
        templates=templates,
        by_token_pair=unit_kind is UnitKind.ATTENTION_HEAD,
        root=str(path),
        indices_by_layer=indices_by_layer,
    )


def _manifest_int(value: object, key: str, source: Path) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise DataError(f"{source}: field {key!r}: {value!r} is not a layer number") from None


def _index_list(value: object, key: str, source: Path) -> list[int]:
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return sorted(value)
    raise DataError(f"{source}: field {key!r} must be a list of integers, found {value!r}")


def _manifest_indices(value: object, key: str, source: Path) -> Sequence[int] | None:
    """A list of ints, or a {"start", "stop"} range; absent means unbounded (checked when the file is read)."""
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("start"), int) and isinstance(value.get("stop"), int):
        return range(value["start"], value["stop"])
    if isinstance(value, list):
        return _index_list(value, key, source)
    raise DataError(f"{source}: field {key!r} must be a list of integers or {{'start', 'stop'}}, found {value!r}")


def _allowed(value: int, valid: Sequence[int] | None) -> bool:
    return value >= 0 if valid is None else value in valid


# --- references and selections -------------------------------------------------------------------

def _split_reference(text: str) -> tuple[str, str, str]:
    """Split `DATASET:LAYER/INDEX` (or `NAME/LAYER/INDEX` for catalog names) into its three parts."""
    text = text.strip()
    if ":" in text:
        dataset, _, units = text.rpartition(":")
        layer, slash, index = units.partition("/")
        if dataset and slash and layer and index and "/" not in index:
            return dataset, layer, index
    else:
        head, _, index = text.rpartition("/")
        dataset, _, layer = head.rpartition("/")
        if dataset in DATASETS and layer and index:
            return dataset, layer, index
    raise ConfigError(
        f"cannot read unit reference {text!r}: expected DATASET:LAYER/INDEX, e.g. 'gpt2-xl:5/131', where DATASET is "
        f"one of {', '.join(DATASETS)} or a directory with a {MANIFEST_NAME}"
    )


def _parse_int(text: str, what: str, reference: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"unit reference {reference!r}: {what} {text!r} is not an integer") from None


def parse_ref(text: str) -> UnitRef:
    """Parse and validate one unit reference like 'gpt2-xl:5/131'."""
    dataset, layer_text, index_text = _split_reference(text)
    ref = UnitRef(dataset, _parse_int(layer_text, "layer", text), _parse_int(index_text, "index", text))
    get_dataset(dataset).check(ref.layer, ref.index)
    return ref


def looks_like_ref(text: str) -> bool:
    """Whether `text` is shaped like a unit reference (rather than a file path or URL)."""
    if "://" in text or text.endswith((".json", ".jsonl", ".pt")):
        return False
    try:
        _split_reference(text)
    except ConfigError:
        return False
    return True


def _parse_index_set(text: str, valid: Sequence[int] | None, what: str, selection: str) -> list[int]:
    """'*', 'N', 'A-B' (inclusive) or comma-separated mixtures of them."""
    if text == "*":
        if valid is None:
            raise ConfigError(f"selection {selection!r}: this dataset does not list its {what}s; name them")
        return list(valid)
    chosen: list[int] = []
    for part in text.split(","):
        start_text, dash, stop_text = part.partition("-")
        start = _parse_int(start_text, what, selection)
        stop = _parse_int(stop_text, what, selection) if dash else start
        if stop < start:
            raise ConfigError(f"selection {selection!r}: {what} range {part!r} is empty (end before start)")
        chosen.extend(range(start, stop + 1))
    return chosen


def parse_selection(text: str) -> list[UnitRef]:
    """Expand a selection like 'gpt2-xl:0-2/5,7' or 'gpt2-small-attn:*/*' into validated references."""
    dataset, layer_text, index_text = _split_reference(text)
    spec = get_dataset(dataset)
    refs = []
    for layer in _parse_index_set(layer_text, spec.layers, "layer", text):
        spec.check_layer(layer)
        for index in _parse_index_set(index_text, spec.indices_in(layer), "index", text):
            spec.check(layer, index)
            refs.append(UnitRef(dataset, layer, index))
    return refs


def format_indices(values: Sequence[int] | None) -> str:
    """'0-47' for a contiguous range, '1, 3-5' for a list, as a human would write it."""
    if values is None:
        return "any >= 0"
    if isinstance(values, range) and values.step == 1:
        return f"{values.start}-{values.stop - 1}" if len(values) else "(none)"
    ordered = sorted(set(values))
    runs: list[str] = []
    first = 0
    while first < len(ordered):
        last = first
        while last + 1 < len(ordered) and ordered[last + 1] == ordered[last] + 1:
            last += 1
        runs.append(str(ordered[first]) if first == last else f"{ordered[first]}-{ordered[last]}")
        first = last + 1
    return ", ".join(runs) or "(none)"


def _template_pattern(template: str) -> re.Pattern[str]:
    stem, _, extension = template.rpartition(".")
    extensions = "(?:pt|json)" if extension == "pt" else re.escape(extension)
    body = re.escape(stem).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{index\}", r"(?P<index>\d+)")
    return re.compile(rf"(?:^|/){body}\.{extensions}$")


_PATTERNS = [
    (spec, artifact, _template_pattern(template))
    for spec in DATASETS.values()
    for artifact, template in spec.templates.items()
]


def identify(path: str) -> tuple[UnitRef, Artifact] | None:
    """Which published unit and artifact a path or URL holds, judged by its layout (for `datasets ls`)."""
    for spec, artifact, pattern in _PATTERNS:
        match = pattern.search(path)
        if match:
            return UnitRef(spec.name, int(match["layer"]), int(match["index"])), artifact
    return None
