import pytest
import torch

from sodeep.benchmark.rankers import (
    Ranker,
    available_families,
    neuralsort_permutation,
    permutation_binary_cross_entropy,
    ranker_families,
    ranks_from_permutation,
    row_cross_entropy,
    softsort_permutation,
    true_permutation,
)
from sodeep.ranks import rank
from sodeep.sorters import neuralsort_rank, softsort_rank

FAMILIES, MISSING = available_families()
BY_NAME = {family.name: family for family in FAMILIES}
# Settings sharp enough to give the exact ranks of well-separated scores.
SHARP = {
    "pairwise_sigmoid": 1e-4,
    "neuralsort": 1e-4,
    "softsort": 1e-4,
    "torchsort": 1e-4,
    "diffsort": 1e4,
    "sodeep (shipped)": 0.01,
}


def separated_scores(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(batch)]).double() * 0.5


@pytest.mark.parametrize("name", sorted(SHARP))
@pytest.mark.parametrize("n", [3, 8, 16])
def test_sharp_rankers_give_exact_ranks_in_the_convention(name, n):
    if name not in BY_NAME:
        pytest.skip(MISSING.get(name, "not available"))
    scores = separated_scores(4, n)
    ranker = BY_NAME[name].build(SHARP[name])
    torch.testing.assert_close(ranker.rank(scores).double(), rank(scores), atol=2e-3, rtol=0)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_setting_returns_ranks_of_the_input_shape_with_gradients(name):
    family = BY_NAME[name]
    for value in family.settings("grid") + family.settings("default+sharp"):
        ranker = family.build(value)
        n = ranker.lengths[0] if ranker.lengths[1] is not None and ranker.lengths[1] < 16 else max(ranker.lengths[0], 8)
        scores = torch.randn(3, n, requires_grad=True)
        ranks = ranker.rank(scores)
        assert ranks.shape == (3, n) and torch.isfinite(ranks).all()
        if not name.startswith("original_lstm"):  # a linear layer regresses its ranks: unbounded
            assert ranks.min() > 0 and ranks.max() <= 1 + 1e-3
        if ranker.kind != "exact":
            ranks.sum().backward()


@pytest.mark.parametrize("temperature", [1.0, 0.1, 0.01])
def test_permutations_match_the_library_rank_functions(temperature):
    scores = torch.randn(5, 9, dtype=torch.float64)
    torch.testing.assert_close(
        ranks_from_permutation(neuralsort_permutation(scores, temperature)), neuralsort_rank(scores, temperature)
    )
    torch.testing.assert_close(
        ranks_from_permutation(softsort_permutation(scores, temperature)), softsort_rank(scores, temperature)
    )


def test_true_permutation_against_a_loop():
    values = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    permutation = true_permutation(values)
    for b in range(2):
        ordered = sorted(range(3), key=lambda i: -values[b, i].item())
        for k, i in enumerate(ordered):
            assert permutation[b, k, i] == 1 and permutation[b, k].sum() == 1
    torch.testing.assert_close(ranks_from_permutation(permutation), rank(values))


@pytest.mark.parametrize("loss", [row_cross_entropy, permutation_binary_cross_entropy])
def test_native_losses_are_smallest_at_the_true_permutation(loss):
    target = true_permutation(torch.tensor([[0.3, 2.0, 1.0, -4.0]]))
    uniform = torch.full_like(target, 0.25)
    assert loss(target, target) < 1e-6 < loss(uniform, target)


def test_diffsort_permutation_is_descending_when_installed():
    if "diffsort" not in BY_NAME:
        pytest.skip(MISSING.get("diffsort", ""))
    scores = separated_scores(3, 6)
    permutation = BY_NAME["diffsort"].build(1e4).permutation(scores)
    assert torch.equal(permutation.argmax(-1), true_permutation(scores).argmax(-1))


def test_every_family_states_default_sharp_and_grid():
    for family in ranker_families():
        if family.default is not None:
            assert family.settings("grid")[0] == family.default
            assert family.sharp is not None and len(family.grid) >= 2


@pytest.mark.parametrize(
    "lengths,words", [((100, 100), "n = 100 only"), ((2, 256), "n in 2..256"), ((2, None), "n >= 2")]
)
def test_the_lengths_a_ranker_accepts_read_as_words(lengths, words):
    ranker = Ranker("r", "", "rank", rank, lengths=lengths)
    assert ranker.accepted_lengths == words
    assert ranker.accepts(lengths[0]) and not ranker.accepts(lengths[0] - 1)


def _own(kind, function, setting=""):
    return Ranker(family="mine", setting=setting, kind=kind, rank=function)


def test_a_ranker_of_ones_own_is_refused_in_one_line_where_its_ranks_cannot_be_used():
    from sodeep.benchmark.fidelity import run_fidelity
    from sodeep.benchmark.regression import run_regression
    from sodeep.benchmark.speed import run_speed

    def argsort_ranks(scores):  # exact ranks with no gradient
        return (scores.argsort(-1, descending=True).argsort(-1) + 1).to(scores.dtype) / scores.shape[-1]

    with pytest.raises(ValueError, match="ranker 'mine' returned ranks with no gradient, so nothing trains through"):
        run_regression([_own("rank", argsort_ranks)], [0], steps=1, batch=10, learning_rate=0.01)
    with pytest.raises(ValueError, match=r"returned torch.int64 of shape \(4, 5\) for scores of shape \(4, 5\)"):
        run_fidelity([_own("exact", lambda scores: scores.argsort(-1).argsort(-1))], [5], 4, progress=lambda _: None)
    with pytest.raises(ValueError, match=r"returned torch.float32 of shape \(2, 2\) for scores of shape \(2, 5\)"):
        run_speed([_own("rank", lambda s: s.softmax(-1)[:, :2])], [5], [2], 1, 0.001, 1.0, 1e6, progress=print)
    with pytest.raises(TypeError, match="rankers must be sodeep.benchmark.rankers.Ranker objects, got function: wrap"):
        run_fidelity([argsort_ranks], [5], 4)
    with pytest.raises(ValueError, match=r"rankers need labels of their own .*\['mine'\] more than once"):
        run_fidelity([_own("exact", argsort_ranks), _own("exact", argsort_ranks)], [5], 4)
    with pytest.raises(ValueError, match="a Ranker needs kind in"):
        _own("soft", argsort_ranks)
    for call in (
        lambda: run_fidelity([_own("exact", argsort_ranks)], [], 4),
        lambda: run_regression([_own("exact", argsort_ranks)], [], steps=1, batch=10, learning_rate=0.01),
        lambda: run_speed([_own("exact", argsort_ranks)], [5], [2], 0, 0.001, 1.0, 1e6),
    ):
        with pytest.raises(ValueError, match="^need "):
            call()
    rows, _ = run_fidelity([_own("exact", argsort_ranks)], [5], 4, progress=lambda _: None)
    normal = [row for row in rows if row["distribution"] == "normal"]
    assert normal and all(row["spearman"] == pytest.approx(1.0) and row["rank_error"] == 0 for row in normal)


def test_speed_checks_a_ranker_of_ones_own_at_its_first_call_also_where_it_is_too_slow_to_time():
    from sodeep.benchmark.speed import run_speed

    detached = _own("rank", lambda scores: rank(scores).detach())
    with pytest.raises(ValueError, match="ranker 'mine' returned ranks with no gradient"):
        run_speed([detached], [8], [4], 1, 0.001, 5.0, 1e9, progress=lambda _: None)
    summed = _own("rank", lambda scores: scores.sum(-1))
    with pytest.raises(ValueError, match=r"returned torch.float32 of shape \(4,\) for scores of shape \(4, 8\)"):
        run_speed([summed], [8], [4], 1, 0.001, 1e-9, 1e9, progress=lambda _: None)  # every call "too slow"
