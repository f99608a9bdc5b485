"""Streaming per-unit statistics over excerpts, for all units at once, on tensors.

`StreamingCollator.update` takes one batch of activations `[excerpts, positions, units]` and folds it
into state whose size does not depend on how many excerpts have been seen:

- top-k excerpts by maximum activation, per unit (values, activations, tokens, sources and excerpt ids:
  units x k x positions), ties going to the smaller excerpt id;
- a uniform pool of excerpts shared by every unit: each excerpt gets a pseudo-random key that is a
  pure function of (seed, excerpt number), and the pool keeps the smallest keys. The pool is
  therefore independent of batch size, order and of interruptions (resume gives the same pool);
- the moments of all activations: each batch's central moments 2-4 (float32 power sums about the batch's
  own first values), merged in float64 with the pairwise formulas of Chan and Pébay along a binary tree
  over the batches (a binary counter), so the merge order depends only on the batches' positions;
- per-token sums (int64 fixed point: exact, so any grouping gives the same sums) and counts for the
  token look-up table (vocabulary x units), when positions are tokens.

`merge` folds in another collator's state. Top-k, pool and look-up sums merge exactly in any order; the
moments merge exactly when the earlier collator saw a whole number of aligned blocks of 2^m batches and the
later one at most 2^m batches (what `distributed` shards are), so shards merged in order give the bits of one
collator that saw every batch.

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

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuroscribe.errors import DataError

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_CHUNK_VALUES = 1 << 20
"""Values per chunk of `StreamingCollator._scan` (4 MiB of float32): small enough to stay in cache."""
LOOKUP_SCALE = 2.0**24
"""Look-up sums hold activations rounded to multiples of 2^-24 as int64: integer sums are exact whatever
the grouping (float32 sums are not), off by at most 3e-8 per activation, and overflow only past 5e11."""
_NO_EXCERPT = 1 << 62
"""Excerpt id of an empty top-k slot (its value is -inf, so it never wins)."""


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


def unit_id(layer: int, index: int, sae: str = "") -> int:
    """The id that keys a unit's samples: a unit's samples do not depend on which other units are collected.
    Latents of autoencoders with an id (`saes`) add a hash of it, so two autoencoders on one layer draw apart."""
    salt = 0 if not sae else (int.from_bytes(hashlib.sha256(sae.encode()).digest()[:2], "big") + 1) << 40
    return salt | layer << 32 | index


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
class Moments:
    """Count, mean and central moment sums M2-M4 of a set of activations, per unit (float64)."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor
    m3: torch.Tensor
    m4: torch.Tensor

    @classmethod
    def of_power_sums(cls, n: int, shift: torch.Tensor, power_sums: torch.Tensor) -> Moments:
        """From the sums of (x - shift)^1..4 over `n` values."""
        s1, s2, s3, s4 = power_sums
        offset = s1 / n  # mean - shift
        return cls(n, shift + offset, s2 - n * offset**2, s3 - 3 * offset * s2 + 2 * n * offset**3,
                   s4 - 4 * offset * s3 + 6 * offset**2 * s2 - 3 * n * offset**4)

    def then(self, later: Moments) -> Moments:
        """Both sets together (Pébay 2008, pairwise update)."""
        na, nb = self.n, later.n
        n = na + nb
        delta = later.mean - self.mean
        m2a, m3a, m4a, m2b, m3b, m4b = self.m2, self.m3, self.m4, later.m2, later.m3, later.m4
        m4 = (m4a + m4b + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
              + 6 * delta**2 * (na * na * m2b + nb * nb * m2a) / n**2 + 4 * delta * (na * m3b - nb * m3a) / n)
        m3 = m3a + m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * m2a) / n
        return Moments(n, self.mean + delta * nb / n, m2a + m2b + delta**2 * na * nb / n, m3, m4)


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
        self.top_ids = torch.full((u, k), _NO_EXCERPT, dtype=torch.int64)
        self.pool_keys = torch.full((pool,), math.inf, dtype=torch.float64)
        self.pool_activations = torch.zeros((pool, p, u))
        self.pool_tokens = torch.zeros((pool, t), dtype=torch.int32)
        self.pool_ids = torch.full((pool,), -1, dtype=torch.int64)
        self.pool_sources = torch.zeros((pool, 2), dtype=torch.int64)
        self.n_excerpts = 0
        self.n_activations = 0
        self.moments: list[tuple[int, Moments]] = []
        """Binary counter of batch moments: (level, moments of 2^level consecutive batches), levels falling."""
        self._scratch: tuple[torch.Tensor, torch.Tensor] | None = None
        use_lookup = settings.lookup_tokens > 0 and vocab_size is not None and n_positions == excerpt_tokens
        self.lookup_sums = torch.zeros((vocab_size, u), dtype=torch.int64) if use_lookup and vocab_size else None
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
        excerpt_ids = excerpt_ids.to(torch.int64)
        batch_max = self._scan(activations, tokens)
        self._update_top(activations, tokens, sources, excerpt_ids, batch_max)
        self._update_pool(activations, tokens, excerpt_ids, sources, excerpt_keys(self.settings.seed, excerpt_ids))
        self.n_excerpts += b

    def _scan(self, activations: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One pass over the batch, a cache-sized chunk of excerpts at a time: excerpt maxima `[U, B]`
        (returned), the power sums that update the moments, and the token look-up sums.

        Whole-batch operations would read the batch (50 MB for 32 x 64 tokens x 6,144 units) from memory
        once per operation, about ten times; chunk by chunk it is read once (measured 2x faster).
        The power sums are taken about the batch's first values' mean, so that float32 sums lose nothing to
        cancellation, and a batch's moments depend on that batch alone.
        """
        b, p, u = activations.shape
        per_chunk = max(1, _CHUNK_VALUES // (p * u))
        flat = activations.reshape(b * p, u)
        shift = flat[: per_chunk * p].mean(dim=0)
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
                self.lookup_sums.index_add_(0, flat_tokens[rows], chunk.mul(LOOKUP_SCALE).round_().long())
            centered, powers = (buffer[: chunk.shape[0]] for buffer in self._scratch)
            torch.sub(chunk, shift, out=centered)
            power_sums[0] += centered.sum(dim=0)
            torch.mul(centered, centered, out=powers)
            power_sums[1] += powers.sum(dim=0)
            power_sums[2] += centered.mul_(powers).sum(dim=0)
            power_sums[3] += powers.square_().sum(dim=0)
        if self.lookup_counts is not None:
            self.lookup_counts.index_add_(0, flat_tokens, torch.ones_like(flat_tokens))
        self._push_moments(0, Moments.of_power_sums(b * p, shift.double(), power_sums))
        self.n_activations += b * p
        return batch_max.T

    def _update_top(self, activations: torch.Tensor, tokens: torch.Tensor, sources: torch.Tensor,
                    excerpt_ids: torch.Tensor, batch_max: torch.Tensor) -> None:
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
            self.top_ids[:, filled : filled + b] = excerpt_ids
            return
        # Only units whose batch maximum reaches their smallest kept one can change: the ranking runs on those rows.
        units = (batch_max.amax(dim=1) >= self.top_values.amin(dim=1)).nonzero().squeeze(1)
        if units.numel() == 0:
            return
        candidates = torch.cat([self.top_values[units], batch_max[units]], dim=1)
        candidate_ids = torch.cat([self.top_ids[units], excerpt_ids.expand(units.numel(), -1)], dim=1)
        kept = torch.zeros(candidates.shape, dtype=torch.bool)
        kept.scatter_(1, _largest_first(candidates, candidate_ids, k), True)
        evicted_row, evicted_slot = (~kept[:, :k]).nonzero(as_tuple=True)
        incoming_row, incoming_excerpt = kept[:, k:].nonzero(as_tuple=True)
        evicted_unit, incoming_unit = units[evicted_row], units[incoming_row]
        self.top_values[evicted_unit, evicted_slot] = batch_max[incoming_unit, incoming_excerpt]
        self.top_activations[evicted_unit, evicted_slot] = activations[incoming_excerpt, :, incoming_unit]
        self.top_tokens[evicted_unit, evicted_slot] = tokens[incoming_excerpt]
        self.top_sources[evicted_unit, evicted_slot] = sources[incoming_excerpt]
        self.top_ids[evicted_unit, evicted_slot] = excerpt_ids[incoming_excerpt]

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

    def _push_moments(self, level: int, moments: Moments) -> None:
        """Add 2^level batches' moments to the binary counter: equal levels merge, older on the left."""
        while self.moments and self.moments[-1][0] == level:
            moments = self.moments.pop()[1].then(moments)
            level += 1
        self.moments.append((level, moments))

    def _total_moments(self) -> Moments:
        total = self.moments[-1][1]
        for _level, older in reversed(self.moments[:-1]):
            total = older.then(total)
        return total

    # --- merging shards ---------------------------------------------------------------------------

    def merge(self, later: StreamingCollator) -> None:
        """Fold in the state of a collator of the same units that saw other excerpts (later ones in the
        excerpt order): the same state as one collator that saw both (see the module docstring)."""
        if (later.settings != self.settings or not torch.equal(later.unit_ids, self.unit_ids)
                or (later.n_positions, later.excerpt_tokens) != (self.n_positions, self.excerpt_tokens)
                or (later.lookup_sums is None) != (self.lookup_sums is None)):
            raise DataError("collation: cannot merge the states of different collections (settings, units or "
                            "excerpt shape differ)")
        if self.moments and later.moments and self.moments[-1][0] < later.moments[0][0]:
            raise DataError("collation: the earlier state's batches do not end on a block of the later one's "
                            "size; shards must be aligned blocks of 2^m batches")
        k = self.settings.top_k
        values = torch.cat([self.top_values, later.top_values], dim=1)
        ids = torch.cat([self.top_ids, later.top_ids], dim=1)
        best = _largest_first(values, ids, k)
        for name in ("top_values", "top_ids", "top_activations", "top_tokens", "top_sources"):
            both = torch.cat([getattr(self, name), getattr(later, name)], dim=1)
            index = best.view(*best.shape, *[1] * (both.dim() - 2)).expand(-1, -1, *both.shape[2:])
            setattr(self, name, both.gather(1, index))
        keys = torch.cat([self.pool_keys, later.pool_keys])
        kept = torch.topk(keys, self.pool_keys.numel(), largest=False, sorted=False).indices
        for name in ("pool_keys", "pool_activations", "pool_tokens", "pool_ids", "pool_sources"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(later, name)])[kept])
        if self.lookup_sums is not None and later.lookup_sums is not None:
            self.lookup_sums += later.lookup_sums
        if self.lookup_counts is not None and later.lookup_counts is not None:
            self.lookup_counts += later.lookup_counts
        for level, moments in later.moments:
            self._push_moments(level, moments)
        self.n_excerpts += later.n_excerpts
        self.n_activations += later.n_activations

    # --- resume -----------------------------------------------------------------------------------

    _STATE_FIELDS = ("top_values", "top_activations", "top_tokens", "top_sources", "top_ids", "pool_keys",
                     "pool_activations", "pool_tokens", "pool_ids", "pool_sources", "lookup_counts")

    def state_dict(self) -> dict[str, object]:
        """Tensors and plain values; the look-up sums only for tokens seen (a shard sees few of the vocabulary)."""
        state: dict[str, object] = {name: getattr(self, name) for name in self._STATE_FIELDS}
        seen = None if self.lookup_counts is None else self.lookup_counts.nonzero().squeeze(1)
        state["lookup_rows"] = seen
        state["lookup_sums"] = None if self.lookup_sums is None or seen is None else self.lookup_sums[seen]
        state["moments"] = [(level, (m.n, m.mean, m.m2, m.m3, m.m4)) for level, m in self.moments]
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
        rows, sums = state.get("lookup_rows"), state.get("lookup_sums")
        if self.lookup_sums is not None and isinstance(rows, torch.Tensor) and isinstance(sums, torch.Tensor):
            self.lookup_sums.zero_()
            self.lookup_sums[rows] = sums
        saved_moments = state.get("moments")
        if not isinstance(saved_moments, list):
            raise DataError("saved collation state has no 'moments': another version of neuroscribe wrote it; "
                            "delete it to restart")
        self.moments = [(level, Moments(*values)) for level, values in saved_moments]
        n_excerpts, n_activations = state["n_excerpts"], state["n_activations"]
        assert isinstance(n_excerpts, int) and isinstance(n_activations, int)
        self.n_excerpts, self.n_activations = n_excerpts, n_activations

    # --- results ----------------------------------------------------------------------------------

    def finalize(self) -> CollationResult:
        if self.n_excerpts == 0:
            raise DataError("no excerpts were collated: the corpus gave no excerpt of the requested length")
        s = self.settings
        k = min(s.top_k, self.n_excerpts)
        top_order = _largest_first(self.top_values, self.top_ids, k)
        top_values = self.top_values.gather(1, top_order)
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
        moments = self._total_moments()
        variance = moments.m2 / moments.n
        skewness = torch.where(variance > 0, math.sqrt(moments.n) * moments.m3 / moments.m2**1.5, math.nan)
        kurtosis = torch.where(variance > 0, moments.n * moments.m4 / moments.m2**2 - 3.0, math.nan)
        lookup_ids, lookup_avg = self._lookup_table()
        return CollationResult(
            top_values=top_values,
            top_activations=self.top_activations.gather(1, top_order[..., None].expand(-1, -1, self.n_positions)),
            top_tokens=self.top_tokens.gather(1, top_order[..., None].expand(-1, -1, self.excerpt_tokens)),
            top_sources=top_sources, random_rows=random_rows, quantile_boundaries=boundaries, quantile_chosen=chosen,
            pool_activations=pool_acts, pool_tokens=pool_tokens, pool_sources=pool_sources, mean=moments.mean,
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
        averages = (self.lookup_sums[seen].double() / LOOKUP_SCALE / self.lookup_counts[seen, None]).float()
        values, rows = torch.topk(averages, min(self.settings.lookup_tokens, n_seen), dim=0)
        token_ids = seen.nonzero().squeeze(1)[rows]
        return token_ids.T.contiguous(), values.T.contiguous()


def _largest_first(values: torch.Tensor, ids: torch.Tensor, k: int) -> torch.Tensor:
    """Columns of the k largest `values` per row `[U, n]`, largest first, ties to the smaller excerpt id in
    `ids`: a function of the (value, id) pairs only, whatever their order (what makes merges exact)."""
    by_id = torch.argsort(ids, dim=1, stable=True)
    by_value = torch.argsort(values.gather(1, by_id), dim=1, descending=True, stable=True)
    return by_id.gather(1, by_value[:, :k])


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
