import itertools
import re

import numpy as np
import pytest
import scipy.stats
import torch

from sodeep.synthetic import FAMILIES, SyntheticSequences, generate_sequences, make_generator


def scipy_ranks(scores: torch.Tensor) -> np.ndarray:
    """sodeep's convention from scipy: descending, ties averaged, normalized by n."""
    n = scores.shape[-1]
    return (n + 1 - scipy.stats.rankdata(scores.double().numpy(), method="average", axis=-1)) / n


def assert_exact_ranks(scores: torch.Tensor, ranks: torch.Tensor) -> None:
    np.testing.assert_allclose(ranks.double().numpy(), scipy_ranks(scores), rtol=0, atol=1e-6)


def natural(family: str, rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """Scores of one family without the random affine map."""
    return generate_sequences(rows, length, seed, families=[family], affine_probability=0.0)[0]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("affine_probability", [0.0, 1.0])
def test_each_family_is_finite_float32_with_exact_ranks(family, affine_probability):
    scores, ranks, index = generate_sequences(
        24, 40, make_generator(1), families=[family], affine_probability=affine_probability
    )
    assert scores.shape == ranks.shape == (24, 40) and index.shape == (24,)
    assert scores.dtype == ranks.dtype == torch.float32 and index.dtype == torch.int64
    assert torch.isfinite(scores).all() and (index == 0).all()
    assert_exact_ranks(scores, ranks)


@pytest.mark.parametrize("length", [1, 2, 7, 100, 300])
def test_ranks_of_mixed_batches_are_exact(length):
    scores, ranks, _ = generate_sequences(60, length, make_generator(length))
    assert_exact_ranks(scores, ranks)


def test_same_seed_same_batch_and_different_seed_differs():
    a = generate_sequences(16, 50, make_generator(3))
    b = generate_sequences(16, 50, make_generator(3))
    c = generate_sequences(16, 50, make_generator(4))
    by_int_seed = generate_sequences(16, 50, 3)
    for first, second, third in zip(a, b, by_int_seed):
        assert torch.equal(first, second) and torch.equal(first, third)
    assert not torch.equal(a[0], c[0])


def test_families_are_drawn_uniformly_from_the_list_and_come_grouped():
    family = generate_sequences(6000, 2, make_generator(2))[2]
    assert (family.diff() >= 0).all()
    assert scipy.stats.chisquare(np.bincount(family.numpy(), minlength=len(FAMILIES))).pvalue > 1e-3
    scores, _, index = generate_sequences(200, 20, make_generator(2), families=["reverse_sorted", "sorted"])
    assert set(index.tolist()) == {0, 1}
    steps = scores.diff(dim=-1)
    assert (steps[index == 0] <= 0).all() and (steps[index == 1] >= 0).all()


def test_order_families_and_affine_maps_keep_order():
    # A positive affine map keeps every row's order: sorted rows stay sorted with it.
    for affine_probability in (0.0, 1.0):
        rows = generate_sequences(50, 30, 0, families=["sorted"], affine_probability=affine_probability)[0]
        assert (rows.diff(dim=-1) >= 0).all()
        rows = generate_sequences(50, 30, 0, families=["reverse_sorted"], affine_probability=affine_probability)[0]
        assert (rows.diff(dim=-1) <= 0).all()
    linear = natural("linear", 100, 8).double()
    steps = linear.diff(dim=-1)
    np.testing.assert_allclose(steps, steps[:, :1].expand_as(steps), atol=1e-6)  # an arithmetic range


def test_shuffled_ranges_are_ranges_at_uniform_positions():
    scores = natural("shuffled_linear", 4000, 8, seed=5)
    steps = scores.double().sort(-1).values.diff(dim=-1)
    np.testing.assert_allclose(steps, steps[:, :1].expand_as(steps), atol=1e-6)
    counts = np.bincount(scores.argmax(-1).numpy(), minlength=8)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3  # the maximum sits in any column alike
    mixed = natural("shuffled_linear+uniform", 2000, 8, seed=6)
    assert (mixed.abs() <= 1).all() and scipy_ranks(mixed).std() > 0


def test_ties_repeated_and_near_constant_rows():
    n = 30
    ties = natural("ties", 200, n)
    assert torch.equal(ties, ties.floor()) and (ties >= 0).all()
    distinct = torch.tensor([len(row.unique()) for row in ties])
    assert (distinct <= n // 2 + 2).all() and (distinct < n).all()
    assert (ties.max(-1).values >= 1).all()  # at least two levels drawn, over 30 entries
    repeated = natural("repeated", 200, n)
    share_with_copies = np.mean([len(row.unique()) < n for row in repeated])
    assert 0.5 < share_with_copies < 1.0  # copy fraction 0.5 U per row: a few rows copy nothing
    near = natural("near_constant", 200, n).double()
    level = near.mean(-1)
    assert ((level > 0.99) & (level < 2.01)).all()
    assert (near.std(-1) / level < 1e-2).all() and (near.std(-1) > 0).all()


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
    draws = natural(family, 400, 10).double().flatten().numpy()
    assert scipy.stats.kstest(draws, cdf).pvalue > 1e-3


def test_lognormal_and_outliers_follow_their_construction():
    logs = np.log(natural("lognormal", 2000, 50).double().numpy())
    spread = logs.std(-1)
    assert 0.15 < spread.min() < 0.35 and 1.8 < spread.max() < 2.8  # sigma ~ U(0.25, 2) per row, 50 draws
    standardized = (logs - logs.mean(-1, keepdims=True)) / spread[:, None]
    assert scipy.stats.kstest(standardized.flatten(), scipy.stats.norm.cdf).statistic < 0.02
    outliers = natural("outliers", 400, 100).numpy()
    assert 0.03 < np.mean(np.abs(outliers) > 8) < 0.06  # 5% outliers times P(|z| 10^(1+2v) > 8) ~ 0.9
    assert np.abs(outliers).max() < 1000 * 6


def test_affine_scales_span_the_documented_range():
    scores = generate_sequences(2000, 8, make_generator(0), families=["normal"], affine_probability=1.0)[0]
    spread = scores.double().std(-1)
    assert spread.min() < 1e-3 and spread.max() > 1e3
    untouched = generate_sequences(2000, 8, make_generator(0), families=["normal"], affine_probability=0.0)[0]
    assert untouched.abs().max() < 7


def test_stream_yields_batch_k_in_order_and_resumes():
    stream = SyntheticSequences(3, [2, 7, 40, 300], seed=5)
    got = list(itertools.islice(iter(stream), 30))
    for index, (scores, ranks) in enumerate(got):
        expected_scores, expected_ranks = stream.batch(index)
        assert torch.equal(scores, expected_scores) and torch.equal(ranks, expected_ranks)
        assert scores.shape[0] == 3
        assert_exact_ranks(scores, ranks)
    assert {scores.shape[-1] for scores, _ in got} == {2, 7, 40, 300}
    resumed = SyntheticSequences(3, [2, 7, 40, 300], seed=5, start_batch=12)
    for expected, again in zip(got[12:], itertools.islice(iter(resumed), 5)):
        assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    other_seed = SyntheticSequences(3, [2, 7, 40, 300], seed=6)
    assert not torch.equal(other_seed.batch(0)[0], got[0][0])


def test_stream_passes_families_and_affine_probability_on():
    stream = SyntheticSequences(16, [20], seed=1, families=["sorted"], affine_probability=0.0)
    scores, _ = stream.batch(3)
    assert (scores.diff(dim=-1) >= 0).all() and scores.abs().max() < 7


def test_dataloader_workers_interleave_into_the_same_stream():
    stream = SyntheticSequences(2, [4, 6], seed=3, start_batch=1)
    alone = list(itertools.islice(iter(stream), 6))
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    shared = list(itertools.islice(iter(loader), 6))
    for (scores, ranks), (expected_scores, expected_ranks) in zip(shared, alone):
        assert torch.equal(scores, expected_scores) and torch.equal(ranks, expected_ranks)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="families"):
        generate_sequences(2, 5, make_generator(0), families=["zipf"])
    for wrong in ([], [["ties"]]):
        with pytest.raises(ValueError, match="families"):
            generate_sequences(2, 5, make_generator(0), families=wrong)
    for probability in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="affine_probability"):
            generate_sequences(2, 5, make_generator(0), affine_probability=probability)
    for batch_size, length, error, words in (
        (0, 5, ValueError, "batch_size must be >= 1, got 0"),
        (2, 0, ValueError, "length must be >= 1, got 0"),
        (2.5, 5, TypeError, "batch_size must be an integer, got float 2.5"),
        (2, True, TypeError, "length must be an integer, got bool True"),
    ):
        with pytest.raises(error, match=words):
            generate_sequences(batch_size, length, make_generator(0))
    for generator in (None, True, 1.5):
        with pytest.raises(TypeError, match="torch.Generator or an int seed"):
            generate_sequences(2, 5, generator)
    torch.testing.assert_close(generate_sequences(2, 5, np.int64(3)), generate_sequences(2, 5, 3))
    with pytest.raises(ValueError, match=r"seed must be in -9223372036854775808\.\.18446744073709551615, got 1844"):
        generate_sequences(2, 5, 2**64)


def test_stream_rejects_bad_settings_at_construction():
    with pytest.raises(ValueError, match="batch_size"):
        SyntheticSequences(0, [5])
    for lengths in ([], [1, 5], [2.5, 4], ["5"], [True, 3]):
        with pytest.raises(ValueError, match="lengths"):
            SyntheticSequences(2, lengths)
    with pytest.raises(ValueError, match="families"):
        SyntheticSequences(2, [5], families=["zipf"])
    with pytest.raises(ValueError, match="affine_probability"):
        SyntheticSequences(2, [5], affine_probability=1.5)
    assert SyntheticSequences(2, [np.int64(5)]).batch(0)[0].shape == (2, 5)
    for settings, error, words in (
        ({"seed": "a"}, TypeError, "seed must be an integer, got str 'a'"),
        ({"seed": 1.5}, TypeError, "seed must be an integer, got float 1.5"),
        ({"rank": 0.5, "world_size": 2}, TypeError, "rank must be an integer, got float 0.5"),
        ({"rank": 2, "world_size": 2}, ValueError, r"rank must be in 0..1, got 2"),
        ({"world_size": 0}, ValueError, "world_size must be >= 1, got 0"),
        ({"start_batch": -1}, ValueError, r"start_batch must be in 0..4611686018427387904, got -1"),
        (
            {"start_batch": 2**64},
            ValueError,
            r"start_batch must be in 0..4611686018427387904, got 18446744073709551616",
        ),
    ):
        with pytest.raises(error, match=words):
            SyntheticSequences(2, [5], **settings)
    torch.testing.assert_close(
        SyntheticSequences(2, [5], seed=np.int64(7)).batch(0), SyntheticSequences(2, [5], 7).batch(0)
    )
    # NumPy integers are kept as Python ints: fixed-width ones would overflow in the batch arithmetic.
    big = SyntheticSequences(2, [5], seed=np.int64(10**13), start_batch=np.int32(2**31 - 1))
    assert big.process_batch_index(1) == 2**31
    assert torch.equal(big.batch(0)[0], SyntheticSequences(2, [5], 10**13).batch(0)[0])
    assert SyntheticSequences(2, [5], start_batch=np.uint8(250)).process_batch_index(10) == 260
    assert next(iter(SyntheticSequences(2, [5], seed=np.uint8(7))))[0].shape == (2, 5)
    assert SyntheticSequences(2, np.array([5, 10])).lengths == [5, 10]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_generator_gives_cuda_batches():
    generator = torch.Generator(device="cuda")
    generator.manual_seed(0)
    scores, ranks, index = generate_sequences(32, 50, generator)
    assert scores.is_cuda and ranks.is_cuda and index.is_cuda
    assert_exact_ranks(scores.cpu(), ranks.cpu())


@pytest.mark.parametrize(
    ("lengths", "shown"),
    [(5, "got 5 (one length is a list of one: [5])"), ("2-8", "got '2-8' (parse a text like '2-8'")],
)
def test_bad_lengths_are_shown_as_given(lengths, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        SyntheticSequences(2, lengths)


@pytest.mark.parametrize(
    ("index", "error"), [(1.5, TypeError), (-1, ValueError), (True, TypeError), (2**63 - 1, ValueError)]
)
def test_a_batch_index_is_a_whole_number_from_zero(index, error):
    with pytest.raises(error, match="index must be"):
        SyntheticSequences(2, [2, 8]).batch(index)


def test_streams_of_seeds_less_than_a_thousand_apart_share_no_batch_within_the_documented_offset():
    """torch's CPU generator keeps a seed's low 32 bits: two streams meet where their batch seeds
    agree modulo 2**32, which for seeds less than 1,000 apart is STREAMS_APART batches away at least."""
    from sodeep.synthetic import STREAMS_APART, make_generator, stream_batch_seed

    assert stream_batch_seed(0, 12) == 12  # seed 0's stream, which trained the shipped sorter
    assert torch.equal(torch.rand(4, generator=make_generator(5)), torch.rand(4, generator=make_generator(5 + 2**32)))
    step = stream_batch_seed(1, 0) % 2**32  # the offset between the streams of neighbouring seeds
    apart = [min(x, 2**32 - x) for x in (d * step % 2**32 for d in range(1, 1000))]
    assert min(apart) == STREAMS_APART
    closest = 1 + apart.index(STREAMS_APART)  # those seeds meet there, as the draws show
    k = STREAMS_APART if closest * step % 2**32 > 2**31 else 0
    k_other = (closest * step + k) % 2**32
    assert torch.equal(
        SyntheticSequences(4, [8], seed=closest).batch(k)[0], SyntheticSequences(4, [8]).batch(k_other)[0]
    )
    a, b = SyntheticSequences(4, [8], seed=1), SyntheticSequences(4, [8], seed=0)
    assert not any(torch.equal(a.batch(index)[0], b.batch(index)[0]) for index in range(5))
    assert not torch.equal(
        SyntheticSequences(4, [8], seed=-1).batch(0)[0], SyntheticSequences(4, [8], seed=-(2**63)).batch(0)[0]
    )


def test_families_given_as_an_iterator_are_read_once_and_kept():
    stream = SyntheticSequences(2, [5], families=iter(["uniform", "sorted"]))
    assert stream.families == ["uniform", "sorted"]
    assert stream.batch(0)[0].shape == (2, 5)
    for wrong in ("uniform", b"uniform", {"uniform": 1}):
        with pytest.raises(TypeError, match="families must be a list of names"):
            SyntheticSequences(2, [5], families=wrong)
    # A set's order (which the seeded draws follow) changes with the process's string hashing.
    for unordered in ({"uniform", "sorted"}, frozenset({"ties"})):
        with pytest.raises(TypeError, match="families must be a list of names, not a .*set: the draws follow"):
            SyntheticSequences(2, [5], families=unordered)
        with pytest.raises(TypeError, match="give sorted"):
            generate_sequences(2, 5, torch.Generator().manual_seed(0), families=unordered)
