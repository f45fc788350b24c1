import itertools

import numpy as np
import pytest
import scipy.stats
import torch

from sodeep import rank
from sodeep import synthetic_kernels as kernels
from sodeep.synthetic import (
    FAMILIES,
    PARALLEL_MIN_ENTRIES,
    SyntheticSequences,
    generate_sequences,
    make_generator,
)


def test_same_seed_same_batch_and_different_seed_differs():
    a = generate_sequences(16, 50, make_generator(3))
    b = generate_sequences(16, 50, make_generator(3))
    c = generate_sequences(16, 50, make_generator(4))
    for first, second in zip(a, b):
        assert torch.equal(first, second)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_is_finite_and_targets_are_exact_ranks(family):
    scores, ranks, index = generate_sequences(32, 40, make_generator(1), families=[family])
    assert scores.shape == ranks.shape == (32, 40)
    assert torch.isfinite(scores).all()
    assert torch.equal(ranks, rank(scores))
    assert (index == 0).all()


def test_family_properties():
    gen = make_generator(0)
    sorted_rows = generate_sequences(8, 30, gen, families=["sorted"], affine_probability=0)[0]
    assert (sorted_rows.diff(dim=-1) >= 0).all()
    reverse = generate_sequences(8, 30, gen, families=["reverse_sorted"], affine_probability=0)[0]
    assert (reverse.diff(dim=-1) <= 0).all()
    ties = generate_sequences(8, 30, gen, families=["ties"], affine_probability=0)[0]
    assert all(len(row.unique()) < 30 for row in ties)
    cauchy = generate_sequences(64, 100, gen, families=["cauchy"], affine_probability=0)[0]
    assert cauchy.abs().max() > 50  # heavy tail
    lognormal = generate_sequences(8, 30, gen, families=["lognormal"], affine_probability=0)[0]
    assert (lognormal > 0).all()


def test_affine_scales_span_the_documented_range():
    scores = generate_sequences(2000, 8, make_generator(0), families=["normal"], affine_probability=1.0)[0]
    spread = scores.std(-1)
    assert spread.min() < 1e-3 and spread.max() > 1e3


def test_iterable_dataset_resumes_the_same_stream():
    full = SyntheticSequences(4, [5, 9], seed=7)
    first = [batch for _, batch in zip(range(5), iter(full))]
    resumed = SyntheticSequences(4, [5, 9], seed=7, start_batch=3)
    again = [batch for _, batch in zip(range(2), iter(resumed))]
    for expected, got in zip(first[3:], again):
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert {batch[0].shape[-1] for batch in first} <= {5, 9}


@pytest.mark.parametrize("block_entries", [1, 300, 2**18])
def test_iterating_in_blocks_gives_each_index_its_own_batch(block_entries):
    # Iteration builds blocks of batches, the batches of one length in one call; every batch must
    # still be exactly batch(k), whatever the block holds: one batch, a few, several lengths.
    stream = SyntheticSequences(3, [2, 7, 7, 40, 300], seed=5, start_batch=2)  # 300: wide keys
    stream.BLOCK_ENTRIES = block_entries
    got = list(itertools.islice(iter(stream), 40))
    for index, (scores, ranks) in enumerate(got, start=2):
        expected_scores, expected_ranks = stream.batch(index)
        assert torch.equal(scores, expected_scores) and torch.equal(ranks, expected_ranks)
        assert scores.is_contiguous() and ranks.is_contiguous()
    assert {scores.shape[-1] for scores, _ in got} == {2, 7, 40, 300}


@pytest.mark.parametrize("choice_range", [1, 3, 255, 70_000])
def test_torch_first_draws_are_torchs_own(choice_range):
    # The stream reproduces, for a block of batches at once, what each batch's torch generator
    # draws first; batch(k) asks torch itself.
    rng = np.random.default_rng(choice_range)
    torch_seeds = np.concatenate([rng.integers(0, 2**63 - 1, 300, dtype=np.uint64), np.arange(4, dtype=np.uint64)])
    choices, seeds = kernels.torch_first_draws(torch_seeds, choice_range)
    wide = torch.empty(1, dtype=torch.int64)
    for torch_seed, choice, seed in zip(torch_seeds.tolist(), choices, seeds):
        generator = make_generator(torch_seed)
        assert int(torch.randint(0, choice_range, (1,), generator=generator)) == choice
        wide.random_(-(2**63), 2**63 - 1, generator=generator)
        assert wide.numpy().view(np.uint64)[0] == seed


def test_stream_batches_the_caller_holds_survive_later_blocks():
    stream = SyntheticSequences(8, [30], seed=1)
    batches = iter(stream)
    held = [next(batches) for _ in range(3)]
    expected = [(scores.clone(), ranks.clone()) for scores, ranks in held]
    held[0][0].add_(1.0)  # a batch is its own memory: writing to it changes no other batch
    for _ in range(20 * (stream.BLOCK_ENTRIES // (8 * 30))):
        next(batches)
    assert torch.equal(held[0][0], expected[0][0] + 1.0)
    for (scores, ranks), (expected_scores, expected_ranks) in zip(held[1:], expected[1:]):
        assert torch.equal(scores, expected_scores) and torch.equal(ranks, expected_ranks)


def test_dataloader_workers_interleave_into_the_same_stream():
    stream = SyntheticSequences(2, [4, 6], seed=3)
    alone = list(itertools.islice(iter(stream), 6))
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    shared = list(itertools.islice(iter(loader), 6))
    for (scores, ranks), (expected_scores, expected_ranks) in zip(shared, alone):
        assert torch.equal(scores, expected_scores) and torch.equal(ranks, expected_ranks)


def test_rejects_unknown_family_and_bad_sizes():
    with pytest.raises(ValueError, match="families"):
        generate_sequences(2, 5, make_generator(0), families=["zipf"])
    for wrong in ([], [["ties"]]):  # family names are checked once per tuple: unhashable too
        with pytest.raises(ValueError, match="families"):
            generate_sequences(2, 5, make_generator(0), families=wrong)
    with pytest.raises(ValueError, match="batch_size"):
        generate_sequences(0, 5, make_generator(0))
    with pytest.raises(ValueError, match="batch_size"):
        SyntheticSequences(0, [5])
    for lengths in ([], [1, 5], [2.5, 4], ["5"], [True, 3]):  # a float length is not truncated
        with pytest.raises(ValueError, match="lengths"):
            SyntheticSequences(2, lengths)
    with pytest.raises(ValueError, match="families"):  # at construction, not at the first batch
        SyntheticSequences(2, [5], families=["zipf"])
    with pytest.raises(ValueError, match="affine_probability"):
        SyntheticSequences(2, [5], affine_probability=1.5)
    with pytest.raises(TypeError, match="torch.Generator or an int seed"):
        generate_sequences(2, 5, None)


def test_an_int_seed_is_the_generator_it_seeds():
    by_seed = generate_sequences(16, 20, 7)
    by_generator = generate_sequences(16, 20, make_generator(7))
    for ours, theirs in zip(by_seed, by_generator):
        assert torch.equal(ours, theirs)


def natural_draws(family: str, rows: int = 400, length: int = 10, seed: int = 0) -> np.ndarray:
    """All entries of ``rows`` sequences of ``family`` without the affine map, as float64."""
    scores = generate_sequences(rows, length, make_generator(seed), families=[family], affine_probability=0)[0]
    return scores.double().flatten().numpy()


def student_t_mixture_cdf(values: np.ndarray) -> np.ndarray:
    """Each row draws its degrees of freedom uniformly from 1..5: the pooled CDF is the average."""
    return np.mean([scipy.stats.t(dof).cdf(values) for dof in range(1, 6)], axis=0)


@pytest.mark.parametrize(
    "family, cdf",
    [
        ("uniform", scipy.stats.uniform(-1, 2).cdf),
        ("normal", scipy.stats.norm.cdf),
        ("cauchy", scipy.stats.cauchy.cdf),
        ("student_t", student_t_mixture_cdf),
    ],
)
def test_family_values_follow_their_distribution(family, cdf):
    # Values are built as quantiles of sorted keys (Acklam's normal quantile, a rational tan, closed
    # forms for Student-t with 1 and 2 dof, a table for 3 to 5): the pooled draws must pass a KS
    # test against scipy.
    assert scipy.stats.kstest(natural_draws(family), cdf).pvalue > 1e-3


def test_lognormal_and_outliers_follow_their_construction():
    # log of a lognormal row is N(0, sigma^2) with sigma ~ U(0.25, 2) per row: standardized by the
    # row's own spread the pooled logs are close to N(0, 1) in shape, and all values are positive.
    logs = np.log(natural_draws("lognormal", rows=2000, length=50).reshape(2000, 50))
    assert scipy.stats.kstest(((logs - logs.mean(1, keepdims=True)) / logs.std(1, keepdims=True)).flatten(),
                              scipy.stats.norm.cdf).statistic < 0.02  # fmt: skip
    outliers = natural_draws("outliers", rows=400, length=100)
    share_beyond_8 = np.mean(np.abs(outliers) > 8)  # normal draws alone: 1e-15
    assert 0.03 < share_beyond_8 < 0.06  # 5% outliers times P(|z| 10^(1+2v) > 8) ~ 0.9


def test_shuffles_are_uniform_over_positions():
    # shuffled_linear puts each value at a uniformly random position: the column of the row maximum
    # is uniform over the 8 columns (chi-square test), as is the prefix of shuffled_linear+uniform.
    scores = generate_sequences(4000, 8, make_generator(5), families=["shuffled_linear"], affine_probability=0)[0]
    counts = np.bincount(scores.argmax(-1).numpy(), minlength=8)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    linear = generate_sequences(100, 8, make_generator(5), families=["linear"], affine_probability=0)[0]
    steps = linear.diff(dim=-1)
    assert ((steps >= 0).all(-1) | (steps <= 0).all(-1)).all()  # in order, ascending or descending


def test_rows_do_not_depend_on_threads_or_batch_layout():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = generate_sequences(700, 100, make_generator(9))
        torch.set_num_threads(2)
        split = generate_sequences(700, 100, make_generator(9))  # 70,000 entries: two threads
    finally:
        torch.set_num_threads(threads)
    assert 700 * 100 >= PARALLEL_MIN_ENTRIES
    for first, second in zip(alone, split):
        assert torch.equal(first, second)


@pytest.mark.parametrize("length", [1, 2, 256, 257, 400])
def test_every_length_is_exact_including_wide_keys(length):
    # Above 256 columns the keys move from 24 + 8 bits in a uint32 to 32 + 32 bits in a uint64.
    scores, ranks, _ = generate_sequences(90, length, make_generator(length), affine_probability=1.0)
    assert torch.equal(ranks, rank(scores)) and torch.isfinite(scores).all()


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 5])
def test_student_t_quantiles_match_scipy_and_never_decrease(dof):
    # 3 to 5 dof interpolate a table (64 cells per binade of p): relative error below 4e-5, down
    # to the smallest p that 32-bit keys give, and a non-decreasing function of p.
    rng = np.random.default_rng(dof)
    extremes = [0.5 / 2**32, 0.5 / 2**24, 0.02, 0.25, 0.5 - 2**-30, 0.5, 0.5 + 2**-30, 0.75, 1 - 0.5 / 2**24]
    p = np.sort(np.concatenate([rng.random(20_000), extremes]))
    quantiles = np.empty_like(p)
    kernels.student_t_quantiles(p, len(p), dof, np.empty_like(p), quantiles)
    reference = scipy.stats.t(dof).ppf(p)  # loses digits within 1e-9 of p = 1/2: atol covers it
    np.testing.assert_allclose(quantiles, reference, rtol=4e-5, atol=1e-8)
    assert (np.diff(quantiles) >= 0).all()


def test_rows_out_of_order_are_sorted_with_their_columns():
    # The walk's fallback for rows whose float32 values are not in key order: a sort of the
    # values' order-preserving bits, carrying each entry's column.
    rng = np.random.default_rng(0)
    values = rng.choice(np.float32([-2.5, -1e-30, -0.0, 0.0, 1e-30, 3.0, np.inf, -np.inf]), 64).astype(np.float32)
    values[:16] = rng.standard_normal(16).astype(np.float32)
    original = values.copy()
    columns = np.arange(64, dtype=np.int64) * 3
    kernels._sort_carrying_columns(values, columns, 64, np.empty(64, np.uint64))
    assert np.array_equal(values, np.sort(original))
    assert (values[1:] >= values[:-1]).all() and sorted(columns // 3) == list(range(64))
    assert np.array_equal(original[columns // 3], values)


def test_families_are_drawn_uniformly_and_come_grouped():
    family = generate_sequences(15_000, 2, make_generator(2))[2]
    assert (family.diff() >= 0).all()
    assert scipy.stats.chisquare(np.bincount(family.numpy(), minlength=len(FAMILIES))).pvalue > 1e-3


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_thread_chunks_have_about_equal_cost(parts):
    # A row costs its family's ROW_COST times its length: rows of several batches may differ in both.
    rng = np.random.default_rng(parts)
    codes = np.sort(rng.integers(0, len(FAMILIES), 500))
    lengths = rng.integers(2, 300, 500)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    bounds = kernels.split_rows(codes, starts, parts)
    assert bounds[0] == 0 and bounds[-1] == len(codes) and (np.diff(bounds) >= 0).all()
    cost = kernels.ROW_COST[codes] * lengths
    chunk_costs = [cost[low:high].sum() for low, high in zip(bounds[:-1], bounds[1:])]
    assert max(chunk_costs) - min(chunk_costs) <= 2 * cost.max()


def test_outputs_the_caller_holds_are_never_overwritten():
    # Output memory is recycled once nothing refers to it; a batch, or a view of it, that the
    # caller keeps must survive many later batches.
    gen = make_generator(0)
    scores, ranks, _ = generate_sequences(64, 50, gen)
    view, array = scores[:, :10], ranks.numpy()
    expected_view, expected_array = view.clone(), array.copy()
    del scores, ranks
    for _ in range(12):
        generate_sequences(64, 50, gen)
    assert torch.equal(view, expected_view) and np.array_equal(array, expected_array)


def test_memory_of_dropped_outputs_is_used_again():
    scores, ranks, _ = generate_sequences(64, 50, 0)
    addresses = {scores.data_ptr(), ranks.data_ptr()}
    del scores, ranks
    # Blocks of the same size, held while the next batch is drawn, take whatever the allocator
    # freed: the batch gets the same memory back only from the generator's own pool.
    held = [torch.empty(64, 50) for _ in range(8)]
    scores, ranks, _ = generate_sequences(64, 50, 1)
    assert {scores.data_ptr(), ranks.data_ptr()} == addresses
    assert not addresses & {block.data_ptr() for block in held}


@pytest.mark.parametrize("first_count, second_count", [(0, 3), (3, 0), (1, 1), (4, 7), (50, 51), (30, 2)])
def test_merges_from_both_ends_equal_a_stable_sort(first_count, second_count):
    # The mixtures' merge runs from both ends at once; with ties across and within the lists it
    # must still equal a stable sort of the two lists, first list before second on equal values.
    rng = np.random.default_rng(first_count * 100 + second_count)
    first_values = np.sort(rng.integers(0, 6, first_count)).astype(float)
    second_values = np.sort(rng.integers(0, 6, second_count)).astype(float)
    for merge in (kernels._merge, kernels._merge_few):
        first, second = np.empty(first_count + 2), np.empty(second_count + 2)
        first[1:-1], second[1:-1] = first_values, second_values
        first_where = np.arange(-1, first_count + 1)  # columns 0 .. first_count - 1 at 1 .. count
        second_where = np.arange(-1, second_count + 1) + 1000
        total = first_count + second_count
        out, out_where = np.empty(total), np.empty(total, np.int64)
        merge(first, first_where, first_count, second, second_where, second_count, out, out_where)
        columns = np.concatenate([np.arange(first_count), 1000 + np.arange(second_count)])
        order = np.argsort(np.concatenate([first_values, second_values]), kind="stable")
        assert np.array_equal(out, np.concatenate([first_values, second_values])[order])
        assert np.array_equal(out_where, columns[order])
