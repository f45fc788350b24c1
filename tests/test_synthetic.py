import pytest
import scipy.stats
import torch

from sodeep import rank
from sodeep.synthetic import (
    FAMILIES,
    SyntheticSequences,
    exact_ranks_cpu,
    generate_sequences,
    make_generator,
    student_t,
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


def test_rejects_unknown_family_and_bad_sizes():
    with pytest.raises(ValueError, match="families"):
        generate_sequences(2, 5, make_generator(0), families=["zipf"])
    with pytest.raises(ValueError, match="batch_size"):
        generate_sequences(0, 5, make_generator(0))
    with pytest.raises(ValueError, match="batch_size"):
        SyntheticSequences(0, [5])
    with pytest.raises(TypeError, match="torch.Generator or an int seed"):
        generate_sequences(2, 5, None)


def test_an_int_seed_is_the_generator_it_seeds():
    by_seed = generate_sequences(16, 20, 7)
    by_generator = generate_sequences(16, 20, make_generator(7))
    for ours, theirs in zip(by_seed, by_generator):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 5])
def test_student_t_matches_scipy(dof):
    draws = student_t(torch.full((4000, 1), dof), 1, make_generator(dof)).flatten().numpy()
    assert scipy.stats.kstest(draws, scipy.stats.t(dof).cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [(1, 2), (7, 13), (64, 256)])
def test_fast_cpu_ranks_equal_the_reference_ranks(shape):
    gen = make_generator(0)
    values = torch.randint(-4, 5, shape, generator=gen).float() * torch.tensor(1e-3)  # many ties
    values[-1, 0], values[-1, -1] = -0.0, 0.0  # equal values with different bits
    values[0] = torch.randn(shape[-1], generator=gen)  # one row without ties
    assert torch.equal(exact_ranks_cpu(values), rank(values))
    heavy = torch.randn(shape, generator=gen) ** 7
    assert torch.equal(exact_ranks_cpu(heavy), rank(heavy))
