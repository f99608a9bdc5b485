"""Typed experiment configs: a TOML file becomes frozen dataclasses, validated on construction.

Every table and key is checked against the dataclass fields, so a typo is an error that names the
key, where it is, and the closest valid key, instead of a silently ignored setting. `--set key=value`
overrides are applied to the raw TOML data before validation, so they are checked the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import json
import random
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from neuroscribe.datasets.collect.config import SAE_ID
from neuroscribe.errors import ConfigError
from neuroscribe.llm.base import BackendSpec, TransportSettings
from neuroscribe.records import UnitId, UnitKind

T = TypeVar("T")

SCORE_SPLITS = ("valid", "test")


@dataclass(frozen=True, kw_only=True)
class UnitsConfig:
    """Which units of the subject model to explain: explicit references, a grid, or a seeded sample."""

    refs: tuple[str, ...] = ()
    """Explicit units as 'layer/index' (e.g. '5/131'), or 'sae:layer/index' for a latent of one of several
    autoencoders (their `saes` id, e.g. 'res3:3/12'); when given, `layers`/`indices`/`sample` are ignored."""
    layers: tuple[int, ...] = ()
    """Layers to take units from (0-based)."""
    indices: tuple[int, ...] = ()
    """Unit indices within each layer; empty with `sample` > 0 means 0 .. `units_per_layer` - 1."""
    units_per_layer: int = 0
    """How many units each layer has (e.g. 6400 for GPT-2 XL MLPs); needed to sample without `indices`."""
    sample: int = 0
    """If > 0, draw this many units uniformly (seeded) from layers x indices instead of taking all."""
    kind: UnitKind = UnitKind.MLP_NEURON
    """What sort of unit: 'mlp_neuron', 'attention_head' or 'autoencoder_latent'."""

    def __post_init__(self) -> None:
        for ref in self.refs:
            _parse_unit_ref(ref, self.kind)
        if not self.refs and not self.layers:
            raise ConfigError("[units] names no units: give `refs` (e.g. ['5/131']) or `layers` with `indices`")
        if any(layer < 0 for layer in self.layers) or any(index < 0 for index in self.indices):
            raise ConfigError("[units] layers and indices must be >= 0")
        if self.sample < 0:
            raise ConfigError(f"[units] sample must be >= 0, got {self.sample}")
        if not self.refs and not self.indices and self.units_per_layer <= 0:
            raise ConfigError("[units] give `indices`, or `units_per_layer` > 0 to take every unit of the layers")

    def resolve(self, seed: int) -> list[UnitId]:
        """The units in a stable order (sorted), the same in every process and shard."""
        if self.refs:
            units = [_parse_unit_ref(ref, self.kind) for ref in self.refs]
        else:
            indices = self.indices or range(self.units_per_layer)
            total = len(self.layers) * len(indices)
            chosen = random.Random(seed).sample(range(total), self.sample) if 0 < self.sample < total else range(total)
            units = [UnitId(self.layers[i // len(indices)], indices[i % len(indices)], self.kind) for i in chosen]
        return sorted(dict.fromkeys(units))


def _parse_unit_ref(ref: str, kind: UnitKind) -> UnitId:
    sae, _, rest = ref.strip().rpartition(":")
    parts = rest.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"[units] refs: {ref!r} is not 'layer/index' (e.g. '5/131') or 'sae:layer/index'")
    if sae and not SAE_ID.fullmatch(sae.strip()):
        raise ConfigError(f"[units] refs: {ref!r}: {sae!r} is not an autoencoder id (letters, digits, '_', '.', '-')")
    if sae and kind is not UnitKind.AUTOENCODER_LATENT:
        raise ConfigError(f"[units] refs: {ref!r} names an autoencoder, but [units] kind is {kind.value!r}; "
                          "set kind = 'autoencoder_latent'")
    return UnitId(int(parts[0]), int(parts[1]), kind, sae.strip())


@dataclass(frozen=True, kw_only=True)
class CollectSettings:
    """Collect records from a subject model before the run (the collector's own options, checked by it)."""

    options: Mapping[str, object] = field(default_factory=dict)
    """Keyword options of `neuroscribe.datasets.collect.CollectConfig` (model, layers, corpus, ...)."""
    out: str = ""
    """Where the collected dataset goes; empty means `<run dir>/dataset`."""


@dataclass(frozen=True, kw_only=True)
class RecordsConfig:
    """Where each unit's records come from and how they are split (the paper's protocol by default)."""

    dataset: str = ""
    """A dataset name (e.g. 'gpt2-xl') or a local dataset directory; empty when `collect` makes one."""
    data_root: str = ""
    """Root (directory or URL) of dataset mirrors; empty means $NEUROSCRIBE_DATA_ROOT or the default."""
    n_per_split: int = 5
    """Excerpts per split and source, as in the paper: the explainer sees this many top excerpts (train
    split); this many top plus this many random excerpts are scored (and used to calibrate)."""
    disjoint: bool = False
    """For datasets without excerpt sources (published ones): drop scoring and calibration excerpts whose
    tokens the explainer (or calibration) already saw. Collected datasets are always split by document,
    whatever this says (run.json `disjointness` records which rule a run used)."""
    score_split: str = "valid"
    """Which split is scored: 'valid' (the paper's) or 'test' (held out for final numbers)."""
    collect: CollectSettings | None = None
    """If set, collect records from a model first and read them from that dataset."""
    other_units: int = 4
    """How many other units' top excerpts a component that declares `other_units_records` gets (drawn
    with the run's seed from the run's units)."""

    def __post_init__(self) -> None:
        if self.n_per_split < 1:
            raise ConfigError(f"[records] n_per_split must be >= 1, got {self.n_per_split}")
        if self.other_units < 0:
            raise ConfigError(f"[records] other_units must be >= 0, got {self.other_units}")
        if self.score_split not in SCORE_SPLITS:
            raise ConfigError(f"[records] score_split {self.score_split!r} is not one of {', '.join(SCORE_SPLITS)}")
        if not self.dataset and self.collect is None:
            raise ConfigError("[records] needs `dataset` (a name or a local directory) or a [records.collect] table")


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """A named model: which one (the spec, part of every cache key) and how to reach it (transport)."""

    spec: BackendSpec = field(default_factory=BackendSpec)
    """Backend type, model, URL, API-key variable and prices (keys of the table itself)."""
    transport: TransportSettings = field(default_factory=TransportSettings)
    """Timeouts, retries, concurrency and rate limits ([backends.NAME.transport])."""
    options: Mapping[str, object] = field(default_factory=dict)
    """The backend type's own options ([backends.NAME.options]: device, batching, threads, ...), checked
    against its options dataclass when the config is loaded (see docs/llm.md)."""


@dataclass(frozen=True, kw_only=True)
class ComponentConfig:
    """A registered component of the sweep: which one, which backend it asks, its label and options."""

    name: str
    """Registry name (see `neuroscribe.explainer.EXPLAINERS`, `neuroscribe.scorers.SCORERS`)."""
    backend: str = "default"
    """Which [backends.NAME] table answers its prompts."""
    id: str = ""
    """Label in method ids; defaults to `name` (set it to sweep one component over several backends)."""
    options: Mapping[str, object] = field(default_factory=dict)
    """The component's own options, checked against its options dataclass when the config is loaded."""

    @property
    def label(self) -> str:
        return self.id or self.name


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    """How one of several candidate explanations is chosen (best-of-n, Transluce's protocol): every
    candidate is scored on the selection split, the best is kept, and the method's reported scores come
    from the scored split (`[records] score_split`), which must be another split, never used for the choice."""

    scorer: str = ""
    """Label of the [[scorers]] / [[simulators]] entry that scores the candidates; empty means the first."""
    score: str = ""
    """Which of that scorer's scores decides; empty means its headline (e.g. 'ev_correlation')."""
    variant: str = ""
    """Which variant of the score decides ('top_and_random', 'random_only', ...); empty means its primary one."""
    split: str = "valid"
    """The split the candidates are scored on: 'valid' or 'test' (not the scored split)."""

    def __post_init__(self) -> None:
        if self.split not in SCORE_SPLITS:
            raise ConfigError(f"select.split {self.split!r} is not one of {', '.join(SCORE_SPLITS)}")


@dataclass(frozen=True, kw_only=True)
class ExplainerConfig(ComponentConfig):
    """One explainer of the sweep ([[explainers]]): 'token_activation_pair', 'token_lookup', 'attention_head'."""

    select: SelectionConfig = field(default_factory=SelectionConfig)
    """How the explanation is chosen when the explainer returns several candidates (`n_candidates` > 1)."""


@dataclass(frozen=True, kw_only=True)
class ScorerConfig(ComponentConfig):
    """One scorer of the sweep ([[scorers]]): 'simulation' or a plugin's; every explanation gets every scorer."""


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig(ComponentConfig):
    """Shorthand for a `simulation` scorer ([[simulators]], as before [[scorers]] existed): the simulator
    `name` with its `options`, calibrated as `calibration` says; its label is the method's scorer label."""

    calibration: str = "none"
    """Map predictions onto the unit's activation scale first: 'none', 'linear' or 'percentile'."""

    def as_scorer(self) -> ScorerConfig:
        options = {"simulator": self.name, "simulator_options": dict(self.options), "calibration": self.calibration}
        return ScorerConfig(name=SIMULATION_SCORER, backend=self.backend, id=self.label, options=options)


@dataclass(frozen=True, kw_only=True)
class ControlsConfig:
    """Baselines scored with every simulator, so a method's score has something to be compared with."""

    random_explanation: bool = True
    """Score another unit's explanation (first explainer; the other unit drawn with the run's seed)."""
    token_lookup: bool = False
    """Score the 'token_lookup' explainer's explanation (the top tokens, no model insight)."""
    published: bool = False
    """Score the published explanation where the dataset has one."""
    token_lookup_backend: str = "default"
    """Which [backends.NAME] table the token-lookup explainer uses."""


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How the runner schedules work; nothing here changes a result."""

    max_concurrent_units: int = 4
    """Units in flight at once (model calls are further limited by each backend's transport)."""
    cache_dir: str = ""
    """LLM response cache; empty means `<run dir>/cache` (so a resumed run reuses finished calls)."""
    progress: bool = True
    """Show a progress bar on stderr."""
    max_consecutive_backend_failures: int = 5
    """Stop the run after this many (unit, method) failures in a row caused by a backend (0: never stop)."""

    def __post_init__(self) -> None:
        if self.max_concurrent_units < 1:
            raise ConfigError(f"[run] max_concurrent_units must be >= 1, got {self.max_concurrent_units}")
        if self.max_consecutive_backend_failures < 0:
            raise ConfigError("[run] max_consecutive_backend_failures must be >= 0")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """A whole experiment: units, records, models, the explainer x simulator sweep and controls."""

    name: str
    """Short name, shown in reports."""
    description: str = ""
    """What the experiment is for."""
    seed: int = 0
    """Seeds every random choice (unit sample, random-explanation control)."""
    repeat: int = 0
    """Which repeat of the experiment this is (`neuroscribe run --repeats N` runs 0 .. N-1): units, records
    and splits stay the same, every sampled choice (model sampling seeds, random-explanation partners,
    scorers' draws, other units) takes `sampling_seed`, so the repeats measure run-to-run spread."""
    units: UnitsConfig
    """Which units."""
    records: RecordsConfig
    """Where records come from and how they are split."""
    backends: Mapping[str, BackendConfig] = field(default_factory=lambda: {"default": BackendConfig()})
    """Named models ([backends.NAME]); explainers and simulators refer to them by name."""
    plugins: tuple[str, ...] = ()
    """Modules imported before the config is checked, so the components they register can be named."""
    explainers: tuple[ExplainerConfig, ...]
    """The explainers of the sweep ([[explainers]])."""
    simulators: tuple[SimulatorConfig, ...] = ()
    """Simulation scorers, one per simulator ([[simulators]]); scored before the [[scorers]]."""
    scorers: tuple[ScorerConfig, ...] = ()
    """The scorers of the sweep ([[scorers]]); every explanation is scored by every scorer and simulator."""
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    """Baselines."""
    run: RunSettings = field(default_factory=RunSettings)
    """Scheduling."""

    def __post_init__(self) -> None:
        if self.repeat < 0:
            raise ConfigError(f"repeat must be >= 0, got {self.repeat}")
        if not self.explainers:
            raise ConfigError("the config has no [[explainers]] table")
        if not self.simulators and not self.scorers:
            raise ConfigError("the config has no [[scorers]] (or [[simulators]]) table: nothing would be scored")
        used = [(where, c.backend) for where, c, _ in self.explainer_configs()]
        used += [(where, c.backend) for where, c in self.scorer_configs()]
        for where, backend in used:
            if backend not in self.backends:
                raise ConfigError(
                    f"{where}: backend {backend!r} is not defined{_hint(backend, self.backends)}; "
                    f"defined: {', '.join(sorted(self.backends)) or '(none)'}"
                )

    @property
    def sampling_seed(self) -> int:
        """The seed of every sampled choice but the unit sample: `seed` itself in repeat 0."""
        return self.seed if self.repeat == 0 else repeat_seed(self.seed, self.repeat)

    def method_ids(self) -> list[str]:
        """Every explanation source x scorer, e.g. 'token_activation_pair+all_at_once': explainers first,
        then the controls that are on (random explanation, token look-up, published)."""
        return list(self.methods())

    def methods(self) -> dict[str, tuple[str | None, str]]:
        """Method id -> (explanation source label, scorer label), in `method_ids` order. A scorer that judges
        the unit itself, with no explanation (e.g. intruder), is one method named by its label, source None."""
        return {method: (source, scorer) for method, source, scorer in self._method_list()}

    def _method_list(self) -> list[tuple[str, str | None, str]]:
        from neuroscribe.scorers import SCORERS

        found: list[tuple[str, str | None, str]] = []
        for _, scorer in self.scorer_configs():
            if SCORERS.get(scorer.name).needs_explanation:
                found += [(f"{source}+{scorer.label}", source, scorer.label) for source in self.source_labels()]
            else:
                found.append((scorer.label, None, scorer.label))
        order = {label: i for i, label in enumerate(self.source_labels())}
        return sorted(found, key=lambda m: (m[1] is None, order.get(m[1] or "", 0)))  # stable: scorer order kept


    def source_labels(self) -> list[str]:
        sources = [e.label for e in self.explainers]
        return sources + [name for name, on in self.control_sources() if on]

    def control_sources(self) -> list[tuple[str, bool]]:
        return [
            (RANDOM_EXPLANATION, self.controls.random_explanation),
            (TOKEN_LOOKUP, self.controls.token_lookup),
            (PUBLISHED, self.controls.published),
        ]

    def explainer_configs(self) -> list[tuple[str, ExplainerConfig, bool]]:
        """(where in the config, explainer, whether it is a control): the [[explainers]], then the token
        look-up control's explainer when it is on."""
        found = [(f"[[explainers]] {e.label!r} (explainers.{i})", e, False) for i, e in enumerate(self.explainers)]
        if self.controls.token_lookup:
            lookup = ExplainerConfig(name=TOKEN_LOOKUP, backend=self.controls.token_lookup_backend, id=TOKEN_LOOKUP)
            found.append(("[controls] token_lookup", lookup, True))
        return found

    def scorer_configs(self) -> list[tuple[str, ScorerConfig]]:
        """(where in the config, scorer): each [[simulators]] entry as a simulation scorer, then [[scorers]]."""
        found = [(f"[[simulators]] {s.label!r} (simulators.{i})", s.as_scorer()) for i, s in enumerate(self.simulators)]
        return found + [(f"[[scorers]] {s.label!r} (scorers.{i})", s) for i, s in enumerate(self.scorers)]

    def to_json_obj(self) -> dict[str, Any]:
        """The resolved config as plain JSON data (what `run.json` keeps and the hash covers)."""
        return typing.cast(dict[str, Any], _plain(self))

    def config_hash(self) -> str:
        """Hash of what changes results: scheduling ([run]) and transport settings are left out, so a
        resumed run may use other concurrency or timeouts."""
        obj = self.to_json_obj()
        del obj["run"]
        for backend in obj["backends"].values():
            del backend["transport"]
        # keys added later are left out at their defaults, so an older config keeps its hash (and its runs resume)
        _drop_default(obj, {"plugins": [], "scorers": [], "repeat": 0})
        _drop_default(obj["records"], {"other_units": 4})
        for backend in obj["backends"].values():
            _drop_default(backend, {"options": {}})
        for explainer in obj["explainers"]:
            _drop_default(explainer, {"select": _plain(SelectionConfig())})
        text = json.dumps(obj, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def repeat_seed(seed: int, repeat: int) -> int:
    """A seed for repeat `repeat` of a run seeded `seed` (a stable hash, the same in every process)."""
    digest = hashlib.sha256(f"repeat:{seed}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _drop_default(obj: dict[str, Any], defaults: Mapping[str, object]) -> None:
    for key, default in defaults.items():
        if key in obj and obj[key] == default:
            del obj[key]


RANDOM_EXPLANATION = "random_explanation"
TOKEN_LOOKUP = "token_lookup"
PUBLISHED = "published"
CONTROL_SOURCES = (RANDOM_EXPLANATION, TOKEN_LOOKUP, PUBLISHED)
SIMULATION_SCORER = "simulation"


def is_control(method_id: str) -> bool:
    return method_id.split("+", 1)[0] in CONTROL_SOURCES


# --- loading ------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a TOML config, apply `key=value` overrides (dotted keys, TOML values) and validate."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return config_from_dict(data, overrides, source=str(path))


def config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = (),
                     source: str = "config") -> ExperimentConfig:
    copy: dict[str, Any] = json.loads(json.dumps(data, default=str))  # a deep copy that overrides may edit
    for override in overrides:
        apply_override(copy, override)
    copy.setdefault("backends", {"default": {}})
    try:
        import_plugins(copy.get("plugins", ()))
        config = _build(ExperimentConfig, copy, "")
        validate_components(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def import_plugins(modules: object) -> None:
    """Import the modules a config's `plugins` names, so the components they register can be used."""
    if not isinstance(modules, list | tuple) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(f"plugins must be a list of module names, got {modules!r}")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"plugins: cannot import {module!r} ({error}); is it installed or on PYTHONPATH?"
                              ) from None


def validate_components(config: ExperimentConfig) -> None:
    """Every component name and option, every backend option, and every declared evidence checked, before
    anything is loaded or run, so a typo fails in a second instead of after an hours-long collection."""
    from neuroscribe.experiments.evidence import check_evidence
    from neuroscribe.explainer import EXPLAINERS
    from neuroscribe.llm import backend_options_type
    from neuroscribe.registry import build_options, registered_options
    from neuroscribe.scorers import SCORERS

    for name, backend in config.backends.items():
        where = f"[backends.{name}]"
        options_type = _looked_up(backend_options_type, backend.spec.type, where)
        build_options(options_type, backend.options, f"[backends.{name}.options]")
    kind = config.units.kind
    for where, explainer, _ in config.explainer_configs():
        explainer_class = _looked_up(EXPLAINERS.get, explainer.name, where)
        options = registered_options(EXPLAINERS, explainer.name, explainer.options, f"{where} options")
        check_evidence(explainer_class.evidence, kind, where)
        if candidates_of(options) > 1:
            selection_scorer(config, explainer.select, where)
    for where, scorer in config.scorer_configs():
        scorer_class = _looked_up(SCORERS.get, scorer.name, where)
        registered_options(SCORERS, scorer.name, scorer.options, f"{where} options")
        check_evidence(scorer_class.evidence, kind, where)
    ids = [method for method, _, _ in config._method_list()]
    duplicates = sorted({m for m in ids if ids.count(m) > 1})
    if duplicates:
        raise ConfigError(f"method ids {duplicates} occur twice: give the repeated explainers or scorers an `id`")


def candidates_of(explainer_options: object) -> int:
    """How many candidate explanations an explainer's options ask for (`n_candidates`; 1 if it has none)."""
    n = getattr(explainer_options, "n_candidates", 1)
    return n if isinstance(n, int) else 1


def selection_scorer(config: ExperimentConfig, select: SelectionConfig, where: str) -> ScorerConfig:
    """The scorer that chooses among an explainer's candidates, checked: it must judge explanations, and
    the split it scores candidates on must not be the split the method's scores are reported on."""
    from neuroscribe.scorers import SCORERS

    scorers = {scorer.label: scorer for _, scorer in config.scorer_configs()}
    label = select.scorer or next(iter(scorers))
    if label not in scorers:
        raise ConfigError(f"{where} select.scorer {label!r} is not a scorer label{_hint(label, scorers)}; "
                          f"labels: {', '.join(scorers)}")
    if not SCORERS.get(scorers[label].name).needs_explanation:
        raise ConfigError(f"{where} select.scorer {label!r} does not judge explanations; choose one that does")
    if select.split == config.records.score_split:
        other = next(s for s in SCORE_SPLITS if s != select.split)
        raise ConfigError(
            f"{where} chooses among candidates on the {select.split!r} split, which is also the scored split "
            f"([records] score_split): the reported score would be biased by the choice. Set [records] "
            f"score_split = {other!r} (or select.split = {other!r})"
        )
    return scorers[label]


def _looked_up(lookup: typing.Callable[[str], T], name: str, where: str) -> T:
    """`lookup(name)`, with `where` in front of its "unknown ..., did you mean" error."""
    try:
        return lookup(name)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def apply_override(data: dict[str, Any], override: str) -> None:
    """`a.b.c=value`: value is read as TOML (numbers, booleans, lists, quoted strings), else as a bare string.

    A numeric path part indexes a list of tables, e.g. `explainers.0.options.max_tokens=60`.
    """
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not key=value (e.g. units.refs=['1/1'])")
    try:
        value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        node = _list_item(node, part, where) if isinstance(node, list) else node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {override!r}: {where} is a value, not a table")
    last = parts[-1]
    if isinstance(node, list):
        index = _list_item_index(node, last, key)
        node[index] = value
    else:
        node[last] = value


def _list_item_index(items: list[Any], part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"override key {where}: {part!r} is not an index below {len(items)}")
    return int(part)


def _list_item(items: list[Any], part: str, where: str) -> Any:
    return items[_list_item_index(items, part, where)]


def _hint(name: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _table_name(where: str) -> str:
    return f"[{where}]" if where else "the top level"


def _build(cls: type[T], data: object, where: str) -> T:
    """Build dataclass `cls` from TOML data, checking every key and type; `where` is the dotted path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a table, got {type(data).__name__} {data!r}")
    if cls is BackendConfig:
        return typing.cast(T, _build_backend(data, where))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r} in {_table_name(where)}{_hint(key, fields)}; valid: {', '.join(fields)}"
            )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_table_name(where)} is missing the required key {name!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{_table_name(where)}: {error}") from None


def _build_backend(data: Mapping[str, Any], where: str) -> BackendConfig:
    spec_data = {k: v for k, v in data.items() if k not in ("transport", "options")}
    spec = _build(BackendSpec, spec_data, where)
    transport = _build(TransportSettings, data.get("transport", {}), f"{where}.transport")
    options = _convert(Mapping[str, object], data.get("options", {}), f"{where}.options")
    return BackendConfig(spec=spec, transport=transport, options=options)


def _convert(hint: Any, value: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for arg in non_none:
            try:
                return _convert(arg, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        value_type = args[1] if len(args) == 2 else object
        return {str(k): _convert(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            valid = [str(m.value) for m in hint]
            hint_text = _hint(str(value), valid)
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(valid)}{hint_text}") from None
    if hint is object or hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where} must be {expected}, got {type(value).__name__} {value!r}")


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
