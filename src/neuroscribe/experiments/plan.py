"""What a run would do and roughly what it would cost, before anything is loaded or spent.

Each component estimates its own model use (`estimate` on explainer and scorer classes), so a new
explainer or scorer brings its own estimate; nothing here is keyed on a component's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from neuroscribe.errors import ConfigError, NeuroscribeError
from neuroscribe.experiments.config import ExperimentConfig, candidates_of, is_control, selection_scorer
from neuroscribe.experiments.store import RunStore
from neuroscribe.llm.base import CallEstimate
from neuroscribe.records import UnitId

ASSUMED_EXCERPT_TOKENS = 64
"""Excerpt length assumed by the estimate (the paper's)."""


@dataclass(frozen=True)
class Shard:
    """Process units i, i+n, i+2n, ... of the sorted unit list (0-based i)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count} is invalid: need 0 <= i < n, e.g. --shard 0/4")

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ConfigError(f"--shard {text!r} is not i/n with whole numbers, e.g. 0/4 (shards 0, 1, 2, 3)")
        return cls(int(index), int(count))

    def select(self, units: Sequence[UnitId]) -> list[UnitId]:
        return list(units[self.index :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a run would do, before spending anything (`neuroscribe run --dry-run`)."""

    config: ExperimentConfig
    shard: Shard
    units: tuple[UnitId, ...]
    """This shard's units."""
    pending: Mapping[str, int]
    """Method id -> units still to do (all of them for a new run directory)."""
    model_calls: int
    """Estimated model calls (cache hits are free and not subtracted)."""
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    assumptions: tuple[str, ...]

    def to_text(self) -> str:
        records = self.config.records
        shown = ", ".join(u.ref for u in self.units[:12])
        more = f" and {len(self.units) - 12} more" if len(self.units) > 12 else ""
        lines = [
            f"experiment {self.config.name!r}" + (f" (shard {self.shard})" if self.shard.count > 1 else ""),
            f"units: {len(self.units)} {self.config.units.kind.value} ({shown}{more})",
            f"records: {records.dataset or '(collected first)'}; explain from {records.n_per_split} top excerpts; "
            f"score {records.n_per_split} top + {records.n_per_split} random ({records.score_split} split)",
            "methods (units to do):",
        ]
        lines += [f"  {m}: {n}" + (" (control)" if is_control(m) else "") for m, n in self.pending.items()]
        lines += [f"backend {name}: {b.spec.type} {b.spec.model}" for name, b in self.config.backends.items()]
        lines += [
            f"estimated model calls: {self.model_calls}",
            f"estimated tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion",
            f"estimated cost: ${self.cost_usd:.2f}",
        ]
        lines += [f"  ({a})" for a in self.assumptions]
        return "\n".join(lines)


def pending_units(store: RunStore, method: str, units: Sequence[UnitId], skip_failed: bool) -> list[UnitId]:
    if not store.exists():
        return list(units)
    outcomes = store.finished(method)
    done = {u for u, o in outcomes.items() if o.status == "ok" or skip_failed}
    return [u for u in units if u not in done]


def check_units_exist(config: ExperimentConfig, dataset: str) -> None:
    """Every unit of the config is a unit of `dataset` (a catalog name or a local directory) of the config's
    kind: checked before anything is created, loaded or spent, so a typo never fails unit by unit."""
    from neuroscribe.datasets import DatasetSpec, UnitRef, get_dataset

    specs: dict[str, DatasetSpec] = {}  # each manifest read once
    try:
        for unit in config.units.resolve(config.seed):
            ref = UnitRef.of(dataset, unit)  # a latent of one of several autoencoders: that one's dataset
            if ref.dataset not in specs:
                specs[ref.dataset] = get_dataset(ref.dataset)
            spec = specs[ref.dataset]
            if spec.unit_kind is not config.units.kind:
                raise ConfigError(f"[units] kind is {config.units.kind.value!r}, but dataset {ref.dataset!r} holds "
                                  f"{spec.unit_kind.value} units; set [units] kind = {spec.unit_kind.value!r}")
            spec.check(unit.layer, unit.index)
    except NeuroscribeError as error:
        raise ConfigError(f"[records] dataset: {error}") from None


def make_plan(config: ExperimentConfig, out_dir: str | Path | None = None, shard: Shard = Shard(),
              skip_failed: bool = False) -> Plan:
    from neuroscribe.explainer import EXPLAINERS
    from neuroscribe.registry import registered_options
    from neuroscribe.scorers import SCORERS, ScoringShape

    if config.records.collect is None:
        check_units_exist(config, config.records.dataset)
    units = shard.select(config.units.resolve(config.seed))
    store = RunStore(out_dir) if out_dir is not None else None
    pending = {
        method: len(pending_units(store, method, units, skip_failed) if store else units)
        for method in config.method_ids()
    }
    n = config.records.n_per_split
    methods = config.methods()
    total = CallEstimate()
    cost = 0.0

    def spend(estimate: CallEstimate, backend: str) -> None:
        nonlocal total, cost
        spec = config.backends[backend].spec
        total = total + estimate
        cost += (spec.price_per_million_prompt_tokens * estimate.prompt_tokens
                 + spec.price_per_million_completion_tokens * estimate.completion_tokens) / 1e6

    shape = ScoringShape(n_scoring=2 * n, n_calibration=2 * n, excerpt_tokens=ASSUMED_EXCERPT_TOKENS)
    for where, explainer, _ in config.explainer_configs():  # one explanation per unit some scorer still needs
        todo = max((pending[m] for m, (source, _) in methods.items() if source == explainer.label), default=0)
        options = registered_options(EXPLAINERS, explainer.name, explainer.options)
        per_unit = EXPLAINERS.get(explainer.name).estimate(options, n, ASSUMED_EXCERPT_TOKENS)
        spend(per_unit * todo, explainer.backend)
        if candidates_of(options) > 1:  # best-of-n: every candidate scored on the selection split
            chooser = selection_scorer(config, explainer.select, where)
            per_candidate = SCORERS.get(chooser.name).estimate(
                registered_options(SCORERS, chooser.name, chooser.options), shape)
            spend(per_candidate * (candidates_of(options) * todo), chooser.backend)
    scorers = {scorer.label: scorer for _, scorer in config.scorer_configs()}
    for method, todo in pending.items():
        scorer = scorers[methods[method][1]]
        per_unit = SCORERS.get(scorer.name).estimate(registered_options(SCORERS, scorer.name, scorer.options), shape)
        spend(per_unit * todo, scorer.backend)
    assumptions = [
        f"{ASSUMED_EXCERPT_TOKENS}-token excerpts; each explainer and scorer estimates its own calls and tokens; "
        "cache hits would make it cheaper",
    ]
    if store is not None and store.exists() and store.read_manifest().get("config_hash") != config.config_hash():
        assumptions.append(f"{store.path} holds a run of a different config: `run` would refuse to resume it")
    return Plan(config=config, shard=shard, units=tuple(units), pending=pending, model_calls=total.calls,
                prompt_tokens=total.prompt_tokens, completion_tokens=total.completion_tokens, cost_usd=cost,
                assumptions=tuple(assumptions))
