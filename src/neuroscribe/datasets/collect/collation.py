"""Streaming per-unit statistics over excerpts, for all units at once, on tensors.

`StreamingCollator.update` takes one batch of activations `[excerpts, positions, units]` and folds it
into state whose size does not depend on how many excerpts have been seen:

- top-k excerpts by maximum activation, per unit (values, activations, tokens and sources: units x k x
  positions);
- a uniform pool of excerpts shared by every unit: each excerpt gets a pseudo-random key that is a
  pure function of (seed, excerpt number), and the pool keeps the smallest keys. The pool is
  therefore independent of batch size, order and of interruptions (resume gives the same pool);
- the moments of all activations (a batch's float32 power sums about the running mean, turned into central
  moments 2-4 and merged batch by batch with the pairwise update formulas of Chan and Pébay, in float64);
- per-token sums and counts for the token look-up table (vocabulary x units), when positions are tokens.

Every excerpt carries its source (document, token offset). `collect()` keeps one collator per layer and
updates it as soon as that layer has run. `finalize()` turns that into the published statistics, each
unit's samples its own: pool excerpts are ordered per unit by a key that is a pure function of (seed,
unit, excerpt number), and those from a document that holds one of the unit's top excerpts are left
out. The random sample is the first `n_random` of that order; quantile boundaries are quantiles of the
excerpt maxima over the whole pool, and each bin's sample is the first `n_per_quantile` of the order
that fall in the bin. A sample the pool cannot fill is written short, never filled with excerpts that
share a document with the unit's top excerpts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuroscribe.errors import DataError

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_CHUNK_VALUES = 1 << 20
"""Values per chunk of `StreamingCollator._scan` (4 MiB of float32): small enough to stay in cache."""


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def _excerpt_bits(seed: int, excerpt_ids: torch.Tensor) -> np.ndarray:
    ids = excerpt_ids.cpu().numpy().astype(np.uint64)
    mixed_seed = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return _splitmix64(ids ^ mixed_seed)


def _unit_interval(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((bits >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def excerpt_keys(seed: int, excerpt_ids: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) keys, a pure function of (seed, excerpt id): the pool never depends on batching."""
    return _unit_interval(_excerpt_bits(seed, excerpt_ids))


def unit_keys(seed: int, excerpt_ids: torch.Tensor, unit_ids: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) keys `[excerpts, units]`, a pure function of (seed, excerpt id, unit id): the order in
    which each unit draws its own samples from the pool, independent of every other unit's."""
    units = _splitmix64(unit_ids.cpu().numpy().astype(np.uint64) ^ np.uint64(0xA5A5A5A5A5A5A5A5))
    return _unit_interval(_splitmix64(_excerpt_bits(seed, excerpt_ids)[:, None] ^ units[None, :]))


def unit_id(layer: int, index: int) -> int:
    """The id that keys a unit's samples: a unit's samples do not depend on which other units are collected."""
    return layer << 32 | index


@dataclass(frozen=True, kw_only=True)
class CollationSettings:
    """The collation subset of `CollectConfig` (see its field docs for meanings and units)."""

    top_k: int = 50
    n_random: int = 50
    n_quantiles: int = 5
    n_per_quantile: int = 20
    quantile_pool: int = 200
    lookup_tokens: int = 50
    lookup_min_count: int = 2
    seed: int = 0


@dataclass(frozen=True)
class CollationResult:
    """Final statistics; excerpt activations are `[units, excerpts, positions]`, tokens are ids."""

    top_values: torch.Tensor  # [U, k'] excerpt maxima, descending (k' = min(k, excerpts seen))
    top_activations: torch.Tensor  # [U, k', P]
    top_tokens: torch.Tensor  # [U, k', T]
    top_sources: torch.Tensor  # [U, k', 2] (document, token offset)
    random_rows: torch.Tensor  # [n', U] each unit's random sample as pool rows, -1 where it came out short
    quantile_boundaries: torch.Tensor  # [n_quantiles - 1, U]
    quantile_chosen: torch.Tensor  # [n_quantiles, R', U] bool: pool row is in that bin's sample of that unit
    pool_activations: torch.Tensor  # [R', P, U]
    pool_tokens: torch.Tensor  # [R', T]
    pool_sources: torch.Tensor  # [R', 2]
    mean: torch.Tensor  # [U] float64
    variance: torch.Tensor  # [U]
    skewness: torch.Tensor  # [U] (NaN when the variance is 0)
    kurtosis: torch.Tensor  # [U] excess (Fisher), NaN when the variance is 0
    lookup_token_ids: torch.Tensor | None  # [U, m] highest average activation first
    lookup_averages: torch.Tensor | None  # [U, m]
    n_excerpts: int
    n_activations: int


class StreamingCollator:
    """Bounded-memory statistics for `n_units` units over excerpts of `n_positions` values each.

    `unit_ids` key each unit's own samples (`unit_id(layer, index)` in a collection); by default the
    units' column numbers.
    """

    def __init__(self, settings: CollationSettings, *, n_units: int, n_positions: int, excerpt_tokens: int,
                 vocab_size: int | None, unit_ids: Sequence[int] | None = None) -> None:
        self.settings = settings
        self.n_units = n_units
        self.n_positions = n_positions
        self.excerpt_tokens = excerpt_tokens
        self.unit_ids = torch.tensor(list(range(n_units)) if unit_ids is None else list(unit_ids), dtype=torch.int64)
        if self.unit_ids.shape != (n_units,):
            raise DataError(f"collation: {len(self.unit_ids)} unit ids for {n_units} units")
        k, pool, u, p, t = settings.top_k, settings.quantile_pool, n_units, n_positions, excerpt_tokens
        self.top_values = torch.full((u, k), -math.inf)
        self.top_activations = torch.zeros((u, k, p))
        self.top_tokens = torch.zeros((u, k, t), dtype=torch.int32)
        self.top_sources = torch.zeros((u, k, 2), dtype=torch.int64)
        self.pool_keys = torch.full((pool,), math.inf, dtype=torch.float64)
        self.pool_activations = torch.zeros((pool, p, u))
        self.pool_tokens = torch.zeros((pool, t), dtype=torch.int32)
        self.pool_ids = torch.full((pool,), -1, dtype=torch.int64)
        self.pool_sources = torch.zeros((pool, 2), dtype=torch.int64)
        self.n_excerpts = 0
        self.n_activations = 0
        self.mean = torch.zeros(u, dtype=torch.float64)
        self.m2 = torch.zeros(u, dtype=torch.float64)
        self.m3 = torch.zeros(u, dtype=torch.float64)
        self.m4 = torch.zeros(u, dtype=torch.float64)
        self._scratch: tuple[torch.Tensor, torch.Tensor] | None = None
        use_lookup = settings.lookup_tokens > 0 and vocab_size is not None and n_positions == excerpt_tokens
        self.lookup_sums = torch.zeros((vocab_size, u)) if use_lookup and vocab_size else None
        self.lookup_counts = torch.zeros(vocab_size, dtype=torch.int64) if use_lookup and vocab_size else None

    # --- streaming ------------------------------------------------------------------------------

    def update(self, activations: torch.Tensor, tokens: torch.Tensor, excerpt_ids: torch.Tensor,
               sources: torch.Tensor) -> None:
        """Fold in a batch: activations `[B, P, U]` float32, tokens `[B, T]`, excerpt_ids `[B]` (unique),
        sources `[B, 2]` (document, token offset)."""
        b, p, u = activations.shape
        if ((p, u) != (self.n_positions, self.n_units) or tokens.shape != (b, self.excerpt_tokens)
                or sources.shape != (b, 2)):
            raise DataError(
                f"collation batch has shape {tuple(activations.shape)} with tokens {tuple(tokens.shape)} and sources "
                f"{tuple(sources.shape)}; expected [batch, {self.n_positions}, {self.n_units}], "
                f"[batch, {self.excerpt_tokens}] and [batch, 2]"
            )
        activations = activations.float()
        tokens = tokens.to(torch.int32)
        sources = sources.to(torch.int64)
        batch_max = self._scan(activations, tokens)
        self._update_top(activations, tokens, sources, batch_max)
        self._update_pool(activations, tokens, excerpt_ids.to(torch.int64), sources,
                          excerpt_keys(self.settings.seed, excerpt_ids))
        self.n_excerpts += b

    def _scan(self, activations: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One pass over the batch, a cache-sized chunk of excerpts at a time: excerpt maxima `[U, B]`
        (returned), the power sums that update the moments, and the token look-up sums.

        Whole-batch operations would read the batch (50 MB for 32 x 64 tokens x 6,144 units) from memory
        once per operation, about ten times; chunk by chunk it is read once (measured 2x faster).
        The power sums are taken about the running mean, so that float32 sums lose nothing to cancellation.
        """
        b, p, u = activations.shape
        per_chunk = max(1, _CHUNK_VALUES // (p * u))
        flat = activations.reshape(b * p, u)
        shift = self.mean.float() if self.n_activations else flat[: per_chunk * p].mean(dim=0)
        if self._scratch is None or self._scratch[0].shape != (per_chunk * p, u):
            self._scratch = (torch.empty(per_chunk * p, u), torch.empty(per_chunk * p, u))
        power_sums = torch.zeros(4, u, dtype=torch.float64)
        batch_max = torch.empty(b, u)
        flat_tokens = tokens.reshape(-1).long()
        for first in range(0, b, per_chunk):
            rows = slice(first * p, min(first + per_chunk, b) * p)
            chunk = flat[rows]
            torch.amax(chunk.view(-1, p, u), dim=1, out=batch_max[first : first + per_chunk])
            if self.lookup_sums is not None:
                self.lookup_sums.index_add_(0, flat_tokens[rows], chunk)
            centered, powers = (buffer[: chunk.shape[0]] for buffer in self._scratch)
            torch.sub(chunk, shift, out=centered)
            power_sums[0] += centered.sum(dim=0)
            torch.mul(centered, centered, out=powers)
            power_sums[1] += powers.sum(dim=0)
            power_sums[2] += centered.mul_(powers).sum(dim=0)
            power_sums[3] += powers.square_().sum(dim=0)
        if self.lookup_counts is not None:
            self.lookup_counts.index_add_(0, flat_tokens, torch.ones_like(flat_tokens))
        self._merge_moments(b * p, shift.double(), power_sums)
        return batch_max.T

    def _update_top(self, activations: torch.Tensor, tokens: torch.Tensor, sources: torch.Tensor,
                    batch_max: torch.Tensor) -> None:
        """Slots are unordered during streaming (sorted in `finalize`): only slots that change are written.

        Per unit, the k largest of (kept maxima, batch maxima) stay; each batch excerpt that gets in takes the
        slot of one that drops out. `nonzero` lists both unit-major, so the i-th evicted slot and the i-th
        incoming excerpt belong to the same unit.
        """
        k = self.settings.top_k
        filled, b = self.n_excerpts, activations.shape[0]
        if filled + b <= k:  # still filling: every excerpt is kept by every unit, one transposing copy
            self.top_values[:, filled : filled + b] = batch_max
            self.top_activations[:, filled : filled + b] = activations.permute(2, 0, 1)
            self.top_tokens[:, filled : filled + b] = tokens
            self.top_sources[:, filled : filled + b] = sources
            return
        if not bool((batch_max.amax(dim=1) > self.top_values.amin(dim=1)).any()):
            return
        candidates = torch.cat([self.top_values, batch_max], dim=1)
        kept = torch.zeros(candidates.shape, dtype=torch.bool)
        kept.scatter_(1, torch.topk(candidates, k, dim=1, sorted=False).indices, True)
        evicted_unit, evicted_slot = (~kept[:, :k]).nonzero(as_tuple=True)
        incoming_unit, incoming_excerpt = kept[:, k:].nonzero(as_tuple=True)
        self.top_values[evicted_unit, evicted_slot] = batch_max[incoming_unit, incoming_excerpt]
        self.top_activations[evicted_unit, evicted_slot] = activations[incoming_excerpt, :, incoming_unit]
        self.top_tokens[evicted_unit, evicted_slot] = tokens[incoming_excerpt]
        self.top_sources[evicted_unit, evicted_slot] = sources[incoming_excerpt]

    def _update_pool(self, activations: torch.Tensor, tokens: torch.Tensor, excerpt_ids: torch.Tensor,
                     sources: torch.Tensor, keys: torch.Tensor) -> None:
        pool = self.pool_keys.numel()
        combined = torch.cat([self.pool_keys, keys])
        kept = torch.topk(combined, pool, largest=False).indices
        is_kept = torch.zeros(combined.numel(), dtype=torch.bool)
        is_kept[kept] = True
        evicted_slots = (~is_kept[:pool]).nonzero().squeeze(1)
        incoming = (is_kept[pool:]).nonzero().squeeze(1)
        if incoming.numel() == 0:
            return
        self.pool_keys[evicted_slots] = keys[incoming]
        self.pool_activations[evicted_slots] = activations[incoming]
        self.pool_tokens[evicted_slots] = tokens[incoming]
        self.pool_ids[evicted_slots] = excerpt_ids[incoming]
        self.pool_sources[evicted_slots] = sources[incoming]

    def _merge_moments(self, nb: int, shift: torch.Tensor, power_sums: torch.Tensor) -> None:
        """Merge a batch, given as its power sums about `shift`, into the running (n, mean, M2, M3, M4)
        (Pébay 2008, pairwise update; float64)."""
        s1, s2, s3, s4 = power_sums
        offset = s1 / nb  # batch mean - shift
        mean_b = shift + offset
        m2b = s2 - nb * offset**2
        m3b = s3 - 3 * offset * s2 + 2 * nb * offset**3
        m4b = s4 - 4 * offset * s3 + 6 * offset**2 * s2 - 3 * nb * offset**4
        na = self.n_activations
        if na == 0:
            self.mean, self.m2, self.m3, self.m4 = mean_b, m2b, m3b, m4b
            self.n_activations = nb
            return
        n = na + nb
        delta = mean_b - self.mean
        m2a, m3a, m4a = self.m2, self.m3, self.m4
        self.m4 = (m4a + m4b + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
                   + 6 * delta**2 * (na * na * m2b + nb * nb * m2a) / n**2 + 4 * delta * (na * m3b - nb * m3a) / n)
        self.m3 = m3a + m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * m2a) / n
        self.m2 = m2a + m2b + delta**2 * na * nb / n
        self.mean = self.mean + delta * nb / n
        self.n_activations = n

    # --- resume -----------------------------------------------------------------------------------

    _STATE_FIELDS = ("top_values", "top_activations", "top_tokens", "top_sources", "pool_keys", "pool_activations",
                     "pool_tokens", "pool_ids", "pool_sources", "mean", "m2", "m3", "m4", "lookup_sums",
                     "lookup_counts")

    def state_dict(self) -> dict[str, object]:
        state: dict[str, object] = {name: getattr(self, name) for name in self._STATE_FIELDS}
        state["n_excerpts"] = self.n_excerpts
        state["n_activations"] = self.n_activations
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        for name in self._STATE_FIELDS:
            if name not in state:
                raise DataError(f"saved collation state has no {name!r}: another version of neuroscribe wrote it; "
                                "delete it to restart")
            current = getattr(self, name)
            saved = state[name]
            if (current is None) != (saved is None) or (
                isinstance(current, torch.Tensor) and isinstance(saved, torch.Tensor) and current.shape != saved.shape
            ):
                raise DataError(f"saved collation state does not match this collection ({name}); delete it to restart")
            setattr(self, name, saved)
        n_excerpts, n_activations = state["n_excerpts"], state["n_activations"]
        assert isinstance(n_excerpts, int) and isinstance(n_activations, int)
        self.n_excerpts, self.n_activations = n_excerpts, n_activations

    # --- results ----------------------------------------------------------------------------------

    def finalize(self) -> CollationResult:
        if self.n_excerpts == 0:
            raise DataError("no excerpts were collated: the corpus gave no excerpt of the requested length")
        s = self.settings
        k = min(s.top_k, self.n_excerpts)
        top_values, top_order = torch.sort(self.top_values, dim=1, descending=True, stable=True)
        top_order = top_order[:, :k]
        top_sources = self.top_sources.gather(1, top_order[..., None].expand(-1, -1, 2))
        filled = min(self.pool_keys.numel(), self.n_excerpts)
        by_key = torch.argsort(self.pool_keys)[:filled]
        pool_acts = self.pool_activations[by_key]
        pool_tokens = self.pool_tokens[by_key]
        pool_sources = self.pool_sources[by_key]
        # each unit's order of the pool; rows from a document of the unit's top excerpts come last, unused
        eligible = ~_shares_document(pool_sources[:, 0], top_sources[..., 0])  # [R, U]
        keys = unit_keys(s.seed, self.pool_ids[by_key], self.unit_ids).masked_fill(~eligible, math.inf)
        order = torch.argsort(keys, dim=0, stable=True)  # [R, U]
        n_random = min(s.n_random, filled)
        random_rows = order[:n_random].masked_fill(~eligible.gather(0, order[:n_random]), -1)
        boundaries, chosen = _quantile_samples(pool_acts.amax(dim=1), order, eligible, s.n_quantiles,
                                               s.n_per_quantile)
        variance = self.m2 / self.n_activations
        skewness = torch.where(variance > 0, math.sqrt(self.n_activations) * self.m3 / self.m2**1.5, math.nan)
        kurtosis = torch.where(variance > 0, self.n_activations * self.m4 / self.m2**2 - 3.0, math.nan)
        lookup_ids, lookup_avg = self._lookup_table()
        return CollationResult(
            top_values=top_values[:, :k],
            top_activations=self.top_activations.gather(1, top_order[..., None].expand(-1, -1, self.n_positions)),
            top_tokens=self.top_tokens.gather(1, top_order[..., None].expand(-1, -1, self.excerpt_tokens)),
            top_sources=top_sources, random_rows=random_rows, quantile_boundaries=boundaries, quantile_chosen=chosen,
            pool_activations=pool_acts, pool_tokens=pool_tokens, pool_sources=pool_sources, mean=self.mean,
            variance=variance,
            skewness=skewness, kurtosis=kurtosis, lookup_token_ids=lookup_ids, lookup_averages=lookup_avg,
            n_excerpts=self.n_excerpts, n_activations=self.n_activations,
        )  # fmt: skip

    def _lookup_table(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.lookup_sums is None or self.lookup_counts is None:
            return None, None
        seen = self.lookup_counts >= self.settings.lookup_min_count
        n_seen = int(seen.sum())
        if n_seen == 0:
            return None, None
        averages = self.lookup_sums[seen] / self.lookup_counts[seen, None]  # [V_seen, U]
        values, rows = torch.topk(averages, min(self.settings.lookup_tokens, n_seen), dim=0)
        token_ids = seen.nonzero().squeeze(1)[rows]
        return token_ids.T.contiguous(), values.T.contiguous()


def _shares_document(pool_documents: torch.Tensor, top_documents: torch.Tensor) -> torch.Tensor:
    """`[R, U]`: pool row r comes from a document that holds one of unit u's top excerpts (`[U, k]`)."""
    known = top_documents.sort(dim=1).values
    asked = pool_documents[None].expand(known.shape[0], -1).contiguous()
    at = torch.searchsorted(known, asked).clamp(max=known.shape[1] - 1)
    return (known.gather(1, at) == asked).T


def _quantile_samples(pool_max: torch.Tensor, order: torch.Tensor, eligible: torch.Tensor, n_quantiles: int,
                      n_per_quantile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin the pool's excerpt maxima `[R, U]` by their own quantiles; take the first n eligible rows of
    each bin in each unit's `order` (`[R, U]`, pool rows), so a bin's sample is a uniform sample of it.

    Boundaries come from the whole pool. Bin j holds boundary[j-1] <= max < boundary[j] (open at both ends).
    """
    levels = torch.arange(1, n_quantiles, dtype=torch.float64) / n_quantiles
    boundaries = torch.quantile(pool_max.double(), levels, dim=0)  # [Q-1, U]
    bins = (pool_max.double()[None] >= boundaries[:, None, :]).sum(dim=0)  # [R, U]
    in_bin = (bins[None] == torch.arange(n_quantiles)[:, None, None]) & eligible  # [Q, R, U]
    by_order = order[None].expand(n_quantiles, -1, -1)
    in_bin_ordered = in_bin.gather(1, by_order)
    chosen_ordered = in_bin_ordered & (in_bin_ordered.long().cumsum(dim=1) <= n_per_quantile)
    return boundaries.float(), torch.zeros_like(in_bin).scatter_(1, by_order, chosen_ordered)
