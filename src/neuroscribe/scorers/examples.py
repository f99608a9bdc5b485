"""The examples detection, fuzzing and intruder show a model: drawn from the unit's evidence, marked, rendered.

Activating examples come from the unit's activation quantiles (the highest `n_quantiles` of the record's
quantile samples), or from the scored split's top excerpts when the record has none. Non-activating
examples come from `ScorerInput.random_pool`: random-sample excerpts the explainer was not shown. Records
carry no document ids yet, so "from other documents" can only mean "not an excerpt the explainer saw".

An excerpt is *activating* when its strongest token exceeds `activation_threshold` times the unit's max
activation; the same test, failed, makes it non-activating, so the two classes never overlap.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from neuroscribe import formatting
from neuroscribe.errors import ConfigError, DataError
from neuroscribe.records import ActivationRecord
from neuroscribe.scorers.base import ScorerInput

log = logging.getLogger(__name__)

NON_ACTIVATING = "non_activating"
TOP = "top"
"""Group of activating examples taken from the scored split's top excerpts (no quantile samples)."""
MARK_OPEN, MARK_CLOSE = "<<", ">>"
T = TypeVar("T")


def quantile_group(index: int) -> str:
    """Group name of the record's quantile `index` (0 = lowest)."""
    return f"quantile_{index}"


@dataclass(frozen=True, kw_only=True)
class QuantileOptions:
    """Where activating excerpts come from (shared by detection, fuzzing and intruder)."""

    n_quantiles: int = 3
    """Activation quantiles to draw activating excerpts from, the highest ones of the record's."""
    activation_threshold: float = 0.0
    """An excerpt activates when its strongest token exceeds this fraction of the unit's max activation, in
    [0, 1); excerpts at or below it are the non-activating ones."""
    allow_fewer: bool = False
    """Judge a unit that has fewer excerpts of some kind than asked with what it has (logged). By default such a
    unit fails at stage 'records', so every scored unit rests on as many examples as the options say."""

    def __post_init__(self) -> None:
        require_positive(self, "n_quantiles")
        if not 0.0 <= self.activation_threshold < 1.0:
            raise ConfigError(f"activation_threshold must be in [0, 1), got {self.activation_threshold}")


def require_positive(options: object, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class Example:
    record: ActivationRecord
    group: str
    """'quantile_N', 'top' or 'non_activating' (or a scorer's own, e.g. 'other_unit')."""
    activating: bool


def unit_rng(inputs: ScorerInput, salt: str) -> np.random.Generator:
    """A generator seeded by the run's seed, the unit and the scorer, so draws differ across units but repeat
    across runs (and resumes)."""
    key = f"{inputs.seed}|{inputs.unit}|{salt}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def sample(records: Sequence[ActivationRecord], n: int, rng: np.random.Generator) -> list[ActivationRecord]:
    """Up to n records without replacement, in a random order."""
    return shuffled(records, rng)[:n]


def shuffled(items: Sequence[T], rng: np.random.Generator) -> list[T]:
    return [items[int(i)] for i in rng.permutation(len(items))]


def activates(record: ActivationRecord, max_activation: float, threshold: float) -> bool:
    return record.max_activation > threshold * max_activation


def _unit_max(inputs: ScorerInput) -> float:
    if not inputs.max_activation > 0:
        raise DataError(f"{inputs.unit}: the unit never activates on its top excerpts (max activation "
                        f"{inputs.max_activation:g}), so no excerpt can count as activating")
    return inputs.max_activation


def activating_buckets(inputs: ScorerInput, options: QuantileOptions) -> list[tuple[str, list[ActivationRecord]]]:
    """(group, activating excerpts) per quantile drawn from, highest quantile last; the top excerpts as one group
    when the record has no quantile samples (logged). Raises DataError when nothing activates, or (unless
    allow_fewer) when fewer quantiles than asked hold activating excerpts."""
    unit_max = _unit_max(inputs)
    if any(inputs.quantiles):
        first = max(0, len(inputs.quantiles) - options.n_quantiles)
        buckets = [(quantile_group(i), inputs.quantiles[i]) for i in range(first, len(inputs.quantiles))]
    else:
        log.warning("%s: the record has no quantile samples; activating examples are the scored split's top "
                    "excerpts", inputs.unit)
        buckets = [(TOP, inputs.scoring.top)]
    kept = [(group, [r for r in records if activates(r, unit_max, options.activation_threshold)])
            for group, records in buckets]
    for (group, records), (_, active) in zip(buckets, kept, strict=True):
        if len(active) < len(records):
            log.info("%s: %d of %d %s excerpts do not exceed %g of the max and are left out", inputs.unit,
                     len(records) - len(active), len(records), group, options.activation_threshold)
    kept = [(group, active) for group, active in kept if active]
    if not kept:
        raise DataError(f"{inputs.unit}: no activating excerpts (none exceeds {options.activation_threshold:g} of "
                        f"the unit's max activation {unit_max:g})")
    if kept[0][0] != TOP:
        require_enough(inputs, options, "quantiles with activating excerpts", len(kept), options.n_quantiles)
    return kept


def require_enough(inputs: ScorerInput, options: QuantileOptions, what: str, have: int, wanted: int) -> None:
    """Raises DataError when `have` < `wanted`, unless `options.allow_fewer` (then logs and goes on)."""
    if have >= wanted:
        return
    if not options.allow_fewer:
        raise DataError(f"{inputs.unit}: {what}: {have} of the {wanted} asked for (collect more excerpts, ask for "
                        "fewer, or set allow_fewer = true to judge the unit with what it has)")
    log.warning("%s: %s: %d of the %d asked for; using those (allow_fewer)", inputs.unit, what, have, wanted)


def draw_activating(inputs: ScorerInput, options: QuantileOptions, n_per_quantile: int,
                    rng: np.random.Generator) -> list[Example]:
    """`n_per_quantile` activating excerpts per quantile, or n_quantiles x that many top excerpts."""
    buckets = activating_buckets(inputs, options)
    wanted = n_per_quantile * (options.n_quantiles if buckets[0][0] == TOP else 1)
    examples = []
    for group, records in buckets:
        require_enough(inputs, options, f"activating excerpts in {group}", len(records), wanted)
        examples += [Example(r, group, True) for r in sample(records, wanted, rng)]
    return examples


def non_activating_pool(inputs: ScorerInput, threshold: float) -> list[ActivationRecord]:
    unit_max = _unit_max(inputs)
    pool = [r for r in inputs.random_pool if not activates(r, unit_max, threshold)]
    if not pool:
        raise DataError(f"{inputs.unit}: no non-activating excerpts: none of the {len(inputs.random_pool)} random "
                        f"excerpts the explainer was not shown stays at or below {threshold:g} of the max")
    return pool


def draw_non_activating(inputs: ScorerInput, n: int, options: QuantileOptions,
                        rng: np.random.Generator) -> list[Example]:
    pool = non_activating_pool(inputs, options.activation_threshold)
    require_enough(inputs, options, "non-activating excerpts", len(pool), n)
    return [Example(r, NON_ACTIVATING, False) for r in sample(pool, n, rng)]


def marked_positions(record: ActivationRecord, max_activation: float, fraction: float) -> list[int]:
    """Tokens above `fraction` of `max_activation`; the strongest token when none is (it activates after all)."""
    above = [i for i, a in enumerate(record.activations) if a > fraction * max_activation]
    return above or [int(np.argmax(record.activations))]


def top_positions(record: ActivationRecord, k: int, rng: np.random.Generator) -> list[int]:
    """The k strongest tokens of the record, ties broken at random (so an all-zero excerpt is marked at random
    places, not always at its start)."""
    jitter = rng.random(len(record.activations))
    order = sorted(range(len(record.activations)), key=lambda i: (-record.activations[i], jitter[i]))
    return sorted(order[:k])


def random_positions(n_tokens: int, k: int, avoid: Sequence[int], rng: np.random.Generator) -> list[int]:
    """k random positions, outside `avoid` where enough are left."""
    free = [i for i in range(n_tokens) if i not in set(avoid)]
    candidates = free if len(free) >= k else list(range(n_tokens))
    return sorted(int(i) for i in rng.choice(candidates, size=min(k, len(candidates)), replace=False))


def render(tokens: Sequence[str], marked: Sequence[int] = ()) -> str:
    """The excerpt as one line of text; runs of marked tokens wrapped in <<...>>, leading spaces left outside."""
    marks = set(marked)
    out: list[str] = []
    for i, token in enumerate(tokens):
        text = formatting.render_token(token)
        if i not in marks:
            out.append(text)
            continue
        starts = i - 1 not in marks
        lead = text[: len(text) - len(text.lstrip(" "))] if starts else ""
        out.append(f"{lead}{MARK_OPEN if starts else ''}{text[len(lead):]}{MARK_CLOSE if i + 1 not in marks else ''}")
    return "".join(out).strip(" ")
