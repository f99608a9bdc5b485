"""Streaming collation against brute force on small inputs (everything held in memory at once)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroscribe.datasets.collect.collation import (
    CollationResult,
    CollationSettings,
    StreamingCollator,
    excerpt_keys,
    unit_keys,
)
from neuroscribe.errors import DataError

N_EXCERPTS, T, U, VOCAB = 97, 8, 5, 23
PER_DOCUMENT = 4
"""Excerpts per document of the synthetic corpus: excerpt i is window i % 4 of document i // 4."""


def _sources(excerpt_ids: torch.Tensor) -> torch.Tensor:
    return torch.stack([excerpt_ids // PER_DOCUMENT, excerpt_ids % PER_DOCUMENT * T], dim=1)


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    acts = torch.randn(N_EXCERPTS, T, U, generator=generator) * torch.linspace(0.5, 3, U)
    acts = acts + torch.rand(N_EXCERPTS, 1, 1, generator=generator) * 2  # excerpts differ in level
    tokens = torch.randint(0, VOCAB, (N_EXCERPTS, T), generator=generator)
    return acts, tokens


SETTINGS = CollationSettings(top_k=7, n_random=6, n_quantiles=4, n_per_quantile=3, quantile_pool=24,
                             lookup_tokens=5, lookup_min_count=2, seed=3)


def _collate(acts: torch.Tensor, tokens: torch.Tensor, batch_sizes: list[int],
             collation: CollationSettings = SETTINGS) -> CollationResult:
    collator = StreamingCollator(collation, n_units=acts.shape[2], n_positions=acts.shape[1],
                                 excerpt_tokens=tokens.shape[1], vocab_size=VOCAB)
    start = 0
    sizes = iter(batch_sizes * len(acts))
    while start < len(acts):
        stop = min(len(acts), start + next(sizes))
        ids = torch.arange(start, stop)
        collator.update(acts[start:stop], tokens[start:stop], ids, _sources(ids))
        start = stop
    return collator.finalize()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return _data()


@pytest.fixture(scope="module")
def result(data: tuple[torch.Tensor, torch.Tensor]) -> CollationResult:
    return _collate(*data, batch_sizes=[5, 1, 16])


def test_top_k_matches_brute_force(data: tuple[torch.Tensor, torch.Tensor], result: CollationResult) -> None:
    acts, tokens = data
    for unit in range(U):
        maxima = acts[:, :, unit].amax(dim=1)
        expected = torch.argsort(maxima, descending=True)[: SETTINGS.top_k]
        torch.testing.assert_close(result.top_values[unit], maxima[expected])
        torch.testing.assert_close(result.top_activations[unit], acts[expected, :, unit])
        assert torch.equal(result.top_tokens[unit].long(), tokens[expected])


def _pool() -> torch.Tensor:
    """Excerpt ids of the shared pool (the smallest keys), in key order."""
    return torch.argsort(excerpt_keys(SETTINGS.seed, torch.arange(N_EXCERPTS)))[: SETTINGS.quantile_pool]


def _eligible_in_unit_order(acts: torch.Tensor, unit: int) -> list[int]:
    """Pool rows from documents without a top excerpt of `unit`, in the unit's own key order."""
    pool = _pool()
    top = torch.argsort(acts[:, :, unit].amax(dim=1), descending=True)[: SETTINGS.top_k]
    top_documents = set((top // PER_DOCUMENT).tolist())
    keys = unit_keys(SETTINGS.seed, pool, torch.arange(U))[:, unit]
    return [row for row in torch.argsort(keys).tolist() if int(pool[row]) // PER_DOCUMENT not in top_documents]


def test_each_unit_draws_its_own_random_sample_away_from_its_top_documents(
        data: tuple[torch.Tensor, torch.Tensor], result: CollationResult) -> None:
    acts, _ = data
    pool = _pool()
    torch.testing.assert_close(result.pool_activations, acts[pool])
    assert torch.equal(result.pool_sources, _sources(pool))
    samples = []
    for unit in range(U):
        expected = _eligible_in_unit_order(acts, unit)[: SETTINGS.n_random]
        assert len(expected) == SETTINGS.n_random  # 24 pool excerpts, at most 7 top documents of 25
        assert result.random_rows[:, unit].tolist() == expected
        top_documents = set(result.top_sources[unit, :, 0].tolist())
        assert not top_documents & set(result.pool_sources[expected, 0].tolist())
        samples.append(frozenset(expected))
    assert len(set(samples)) == U  # every unit its own sample


def test_a_pool_too_small_leaves_the_sample_short_never_leaking() -> None:
    acts, tokens = _data()
    ids = torch.arange(N_EXCERPTS)
    collator = StreamingCollator(SETTINGS, n_units=U, n_positions=T, excerpt_tokens=T, vocab_size=VOCAB)
    collator.update(acts, tokens, ids, torch.stack([ids % 3, ids], dim=1))  # only 3 documents
    out = collator.finalize()
    for unit in range(U):
        rows = out.random_rows[:, unit]
        kept = rows[rows >= 0]
        assert set(out.pool_sources[kept, 0].tolist()).isdisjoint(out.top_sources[unit, :, 0].tolist())
        assert bool((rows[len(kept):] == -1).all())
        for q in range(SETTINGS.n_quantiles):
            chosen = out.quantile_chosen[q, :, unit].nonzero().squeeze(1)
            assert set(out.pool_sources[chosen, 0].tolist()).isdisjoint(out.top_sources[unit, :, 0].tolist())
    assert int((out.random_rows >= 0).sum()) < SETTINGS.n_random * U  # 7 top excerpts cover most of 3 documents


def test_keys_are_uniform_and_depend_on_seed() -> None:
    keys = excerpt_keys(0, torch.arange(20_000)).numpy()
    assert scipy.stats.kstest(keys, "uniform").pvalue > 1e-3
    assert not np.array_equal(keys[:100], excerpt_keys(1, torch.arange(100)).numpy())
    assert np.array_equal(keys[50:60], excerpt_keys(0, torch.arange(50, 60)).numpy())


def test_unit_keys_are_uniform_per_unit_and_unrelated_across_units() -> None:
    keys = unit_keys(0, torch.arange(5_000), torch.tensor([0, 1, 1 << 32])).numpy()
    for unit in range(3):
        assert scipy.stats.kstest(keys[:, unit], "uniform").pvalue > 1e-3
    assert abs(scipy.stats.spearmanr(keys[:, 0], keys[:, 1]).statistic) < 0.05
    assert abs(scipy.stats.spearmanr(keys[:, 0], excerpt_keys(0, torch.arange(5_000)).numpy()).statistic) < 0.05
    assert np.array_equal(keys[10:20, 2], unit_keys(0, torch.arange(10, 20), torch.tensor([1 << 32]))[:, 0].numpy())


def test_quantile_samples_match_brute_force(data: tuple[torch.Tensor, torch.Tensor], result: CollationResult) -> None:
    acts, _ = data
    pool = _pool()
    n_chosen = 0
    for unit in range(U):
        maxima = acts[pool, :, unit].amax(dim=1).double().numpy()
        boundaries = np.quantile(maxima, [0.25, 0.5, 0.75])  # from the whole pool
        np.testing.assert_allclose(result.quantile_boundaries[:, unit].numpy(), boundaries, rtol=1e-6)
        bins = np.searchsorted(boundaries, maxima, side="right")
        ordered = _eligible_in_unit_order(acts, unit)
        for q in range(SETTINGS.n_quantiles):
            expected_rows = sorted([row for row in ordered if bins[row] == q][: SETTINGS.n_per_quantile])
            chosen_rows = result.quantile_chosen[q, :, unit].nonzero().squeeze(1).numpy()
            assert chosen_rows.tolist() == expected_rows
            n_chosen += len(chosen_rows)
            torch.testing.assert_close(result.pool_activations[chosen_rows, :, unit], acts[pool[chosen_rows], :, unit])
    assert n_chosen > U * SETTINGS.n_quantiles * SETTINGS.n_per_quantile // 2  # most bins filled, some short


def test_moments_match_scipy(data: tuple[torch.Tensor, torch.Tensor], result: CollationResult) -> None:
    acts, _ = data
    flat = acts.reshape(-1, U).double().numpy()
    np.testing.assert_allclose(result.mean.numpy(), flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.variance.numpy(), flat.var(axis=0), rtol=1e-5)
    np.testing.assert_allclose(result.skewness.numpy(), scipy.stats.skew(flat, axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.kurtosis.numpy(), scipy.stats.kurtosis(flat, axis=0), rtol=1e-4, atol=1e-6)
    assert result.n_activations == N_EXCERPTS * T


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=4, max_size=60),
    split=st.integers(1, 10),
    offset=st.floats(-1e4, 1e4, width=32),
)
def test_merged_moments_equal_one_pass(values: list[float], split: int, offset: float) -> None:
    column = torch.tensor(values, dtype=torch.float32) + offset
    acts = column.reshape(-1, 1, 1).expand(-1, 1, 2).contiguous()  # one token per excerpt, two units
    collator = StreamingCollator(CollationSettings(top_k=1, n_random=1, n_quantiles=1, n_per_quantile=1,
                                                   quantile_pool=2, lookup_tokens=0), n_units=2, n_positions=1,
                                 excerpt_tokens=1, vocab_size=None)
    for start in range(0, len(values), split):
        part = acts[start:start + split]
        ids = torch.arange(start, start + len(part))
        collator.update(part, torch.zeros(len(part), 1), ids, torch.stack([ids, ids * 0], dim=1))
    out = collator.finalize()
    reference = column.double().numpy()
    scale = max(1.0, float(np.abs(reference).max()))
    assert abs(float(out.mean[0]) - reference.mean()) <= 1e-5 * scale
    assert abs(float(out.variance[0]) - reference.var()) <= 1e-4 * scale**2
    if reference.var() > 1e-3 * scale**2:
        assert float(out.skewness[0]) == pytest.approx(scipy.stats.skew(reference), rel=1e-3, abs=1e-3)
        assert float(out.kurtosis[0]) == pytest.approx(scipy.stats.kurtosis(reference), rel=1e-3, abs=1e-3)


def test_constant_unit_has_undefined_shape_moments() -> None:
    acts = torch.ones(6, 4, 1)
    out = _collate(acts, torch.zeros(6, 4, dtype=torch.long), [2],
                   CollationSettings(top_k=2, n_random=2, n_quantiles=2, n_per_quantile=1, quantile_pool=4))
    assert float(out.variance[0]) == 0.0
    assert torch.isnan(out.skewness[0]) and torch.isnan(out.kurtosis[0])


def test_token_lookup_table_matches_brute_force(data: tuple[torch.Tensor, torch.Tensor],
                                                result: CollationResult) -> None:
    acts, tokens = data
    assert result.lookup_token_ids is not None and result.lookup_averages is not None
    flat_tokens = tokens.reshape(-1).numpy()
    for unit in range(U):
        flat = acts[:, :, unit].reshape(-1).numpy()
        averages = {t: flat[flat_tokens == t].mean() for t in np.unique(flat_tokens)
                    if (flat_tokens == t).sum() >= SETTINGS.lookup_min_count}
        best = sorted(averages, key=averages.__getitem__, reverse=True)[: SETTINGS.lookup_tokens]
        assert result.lookup_token_ids[unit].tolist() == best
        np.testing.assert_allclose(result.lookup_averages[unit].numpy(), [averages[t] for t in best], rtol=1e-5)


def test_result_does_not_depend_on_batching(data: tuple[torch.Tensor, torch.Tensor], result: CollationResult) -> None:
    other = _collate(*data, batch_sizes=[97])
    for name in ("top_values", "top_activations", "top_tokens", "top_sources", "random_rows", "quantile_boundaries",
                 "quantile_chosen", "lookup_token_ids"):
        assert torch.equal(getattr(result, name), getattr(other, name)), name
    torch.testing.assert_close(result.kurtosis, other.kurtosis, rtol=1e-5, atol=1e-6)


def test_same_seed_same_result_other_seed_other_sample(data: tuple[torch.Tensor, torch.Tensor],
                                                       result: CollationResult) -> None:
    again = _collate(*data, batch_sizes=[5, 1, 16])
    assert torch.equal(again.random_rows, result.random_rows)
    assert torch.equal(again.quantile_chosen, result.quantile_chosen)
    reseeded = _collate(*data, batch_sizes=[5, 1, 16], collation=CollationSettings(
        top_k=7, n_random=6, n_quantiles=4, n_per_quantile=3, quantile_pool=24, seed=4))
    assert not torch.equal(reseeded.pool_sources, result.pool_sources)
    assert torch.equal(reseeded.top_activations, result.top_activations)


def test_fewer_excerpts_than_k_and_pool() -> None:
    acts, tokens = _data()
    out = _collate(acts[:3], tokens[:3], [2])
    assert out.top_values.shape == (U, 3)
    assert out.random_rows.shape[0] == 3 and out.pool_activations.shape[0] == 3


def test_state_round_trip_resumes_identically(data: tuple[torch.Tensor, torch.Tensor],
                                              result: CollationResult) -> None:
    acts, tokens = data
    first = StreamingCollator(SETTINGS, n_units=U, n_positions=T, excerpt_tokens=T, vocab_size=VOCAB)
    first.update(acts[:40], tokens[:40], torch.arange(40), _sources(torch.arange(40)))
    second = StreamingCollator(SETTINGS, n_units=U, n_positions=T, excerpt_tokens=T, vocab_size=VOCAB)
    second.load_state_dict(first.state_dict())
    second.update(acts[40:], tokens[40:], torch.arange(40, N_EXCERPTS), _sources(torch.arange(40, N_EXCERPTS)))
    resumed = second.finalize()
    for name in ("top_activations", "top_sources", "random_rows", "quantile_chosen", "pool_sources"):
        assert torch.equal(getattr(resumed, name), getattr(result, name)), name


def test_a_state_without_excerpt_sources_is_refused() -> None:
    acts, tokens = _data()
    collator = StreamingCollator(SETTINGS, n_units=U, n_positions=T, excerpt_tokens=T, vocab_size=VOCAB)
    collator.update(acts[:8], tokens[:8], torch.arange(8), _sources(torch.arange(8)))
    stale = {k: v for k, v in collator.state_dict().items() if k not in {"top_sources", "pool_ids", "pool_sources"}}
    fresh = StreamingCollator(SETTINGS, n_units=U, n_positions=T, excerpt_tokens=T, vocab_size=VOCAB)
    with pytest.raises(DataError, match="has no 'top_sources': another version of neuroscribe wrote it; delete it"):
        fresh.load_state_dict(stale)


def test_a_units_samples_do_not_depend_on_the_other_units(data: tuple[torch.Tensor, torch.Tensor],
                                                          result: CollationResult) -> None:
    acts, tokens = data
    alone = StreamingCollator(SETTINGS, n_units=1, n_positions=T, excerpt_tokens=T, vocab_size=VOCAB, unit_ids=[3])
    alone.update(acts[:, :, 3:4], tokens, torch.arange(N_EXCERPTS), _sources(torch.arange(N_EXCERPTS)))
    out = alone.finalize()
    assert torch.equal(out.random_rows[:, 0], result.random_rows[:, 3])
    assert torch.equal(out.quantile_chosen[:, :, 0], result.quantile_chosen[:, :, 3])


def test_fast_record_json_equals_the_serializer(result: CollationResult) -> None:
    from neuroscribe.datasets.collect.writer import RecordBuilder, record_json
    from neuroscribe.records import NeuronId, UnitKind
    from neuroscribe.serialization import dumps

    builder = RecordBuilder(result, lambda ids: [f" t{i}" for i in ids], UnitKind.MLP_NEURON)
    record = builder.record(2, NeuronId(layer_index=1, neuron_index=2))
    assert record_json(record) == dumps(record)
    sources = builder.sources(2)
    assert record_json(sources) == dumps(sources)
    assert len(sources.random_sample) == len(record.random_sample) == SETTINGS.n_random
