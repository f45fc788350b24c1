"""The convolutional sorter: tie groups as the band's unit, numerical range, compilation."""

import math

import pytest
import torch

from sodeep import load_sorter, rank
from sodeep.sorters import ConvSorter, conv
from sodeep.sorters.conv import MAX_LENGTH, distinct_value_groups, soft_group_ranks
from sodeep.synthetic import generate_sequences, make_generator


def soft_ranks_by_loop(row: torch.Tensor, log_tau_of_value: dict, reach: int) -> list[float]:
    """Descending soft ranks of one row, element by element: soft comparisons with the elements
    of the ``reach`` nearest distinct values on either side, exact ones with the rest."""
    distinct = sorted(set(row.tolist()))
    index = {value: g for g, value in enumerate(distinct)}
    ranks = []
    for x in row.tolist():
        total = 0.5
        for y in row.tolist():
            if abs(index[y] - index[x]) > reach:
                total += 1.0 if y > x else 0.0
            elif y == x:
                total += 0.5
            else:
                tau = math.sqrt(math.exp(log_tau_of_value[x]) * math.exp(log_tau_of_value[y]))
                logit = (y - x) / tau
                total += 1 / (1 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1 + math.exp(logit))
        ranks.append(total)
    return ranks


@pytest.fixture(params=["by window", "by offset"])
def comparisons(request, monkeypatch):
    """Both ways of summing the band's comparisons: by windows (small eager batches) and by offset
    (compiled code and large CPU batches), whatever the batch's size."""
    if request.param == "by offset":
        monkeypatch.setattr(conv, "BY_OFFSET_MIN_ELEMENTS", 0)
    return request.param


@pytest.mark.parametrize("log_sharpness", [1.0, 8.0])  # logits of order 1, and up to thousands
@pytest.mark.parametrize("family", ["normal", "ties", "repeated"])
@pytest.mark.parametrize("n,reach", [(2, 1), (2, 8), (7, 2), (30, 4), (40, 16), (40, 39)])
def test_soft_group_ranks_match_a_loop(family, n, reach, log_sharpness, comparisons):
    scores = generate_sequences(3, n, make_generator(n), families=[family])[0].double()
    sorted_scores = scores.sort(-1).values
    group_id, sizes = distinct_value_groups(sorted_scores)
    values = torch.zeros_like(sorted_scores).scatter_add(-1, group_id, sorted_scores) / sizes.clamp_min(1)
    log_tau = torch.randn_like(values) * 0.5 + values.std(-1, keepdim=True).log() - log_sharpness
    group_ranks = soft_group_ranks(values, sizes, log_tau, reach)
    for row in range(3):
        distinct = int(sizes[row].gt(0).sum())
        log_tau_of_value = dict(zip(values[row, :distinct].tolist(), log_tau[row, :distinct].tolist()))
        expected = soft_ranks_by_loop(scores[row], log_tau_of_value, reach)
        got = group_ranks[row].gather(0, group_id[row])[scores[row].argsort().argsort()]
        # Logits beyond LOGIT_LIMIT count as decided: a change below 1e-12 positions.
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-11)


@pytest.mark.parametrize("batch,length,reach", [(3, 2, 8), (4, 9, 3), (2, 50, 8), (1, 300, 16)])
def test_comparisons_by_offset_and_by_window_agree_with_their_gradients(batch, length, reach):
    """The two ways of summing a band's comparisons, on rows that end in padding groups (size 0),
    with ties, and with bands wider than the row."""
    generator = torch.Generator().manual_seed(length)
    values = torch.randn(batch, length, generator=generator, dtype=torch.float64).sort(-1).values
    sizes = torch.randint(1, 4, (batch, length), generator=generator).double()
    sizes[0, length // 2 :] = 0  # padding groups: the first row has fewer distinct values
    values[0, length // 2 :] = 0.0
    root = torch.rand(batch, length, generator=generator, dtype=torch.float64) * 10 + 0.1
    weights = torch.randn(batch, length, generator=generator, dtype=torch.float64)
    results = []
    for compare in (conv._soft_comparisons_by_window, conv._soft_comparisons_by_offset):
        leaves = (values.clone().requires_grad_(), root.clone().requires_grad_())
        soft = compare(leaves[0], sizes, leaves[1], reach)
        results.append((soft, *torch.autograd.grad((soft * weights).sum(), leaves)))
    for by_window, by_offset in zip(*results):
        torch.testing.assert_close(by_offset, by_window, rtol=1e-12, atol=1e-12)


def test_distinct_value_groups():
    sorted_scores = torch.tensor([[1.0, 1.0, 2.0, 3.0, 3.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    group_id, sizes = distinct_value_groups(sorted_scores)
    assert group_id.tolist() == [[0, 0, 1, 2, 2, 2], [0, 1, 2, 3, 4, 5]]
    assert sizes.tolist() == [[2, 1, 3, 0, 0, 0], [1] * 6]


@pytest.mark.parametrize("n", [2, 3, 33, 100, 257, 1000, 4096, MAX_LENGTH])
def test_equal_scores_get_equal_ranks_at_every_n(n):
    """Integers 0..n/4: tie groups of about four; the shipped sorter is trained on n <= 256."""
    generator = torch.Generator().manual_seed(n)
    scores = torch.randint(0, max(2, n // 4), (2, n), generator=generator).float()
    ranks = load_sorter()(scores)
    exact = rank(scores)
    for row in range(2):
        spread = ranks[row].new_zeros(n).scatter_reduce(0, scores[row].long(), ranks[row], "amax")
        spread -= ranks[row].new_zeros(n).scatter_reduce(0, scores[row].long(), ranks[row], "amin", include_self=False)
        assert spread.abs().max() * n < 1e-3
    assert (ranks - exact).abs().max() * n < 0.75
    if n <= 256:
        assert (ranks - exact).abs().mean() * n < 0.1


@pytest.mark.parametrize("value", [0.0, 5.0, -1e6])
def test_a_row_of_equal_scores_teaches_like_a_row_of_nearly_equal_ones(value):
    """With a temperature floor (the rank losses' sorter) an all-tied row, such as a model's constant
    output at its start, is compared at the floor: the limit of rows whose scores nearly agree."""
    from sodeep import SpearmanLoss

    n = 9  # within the band (8 distinct values on either side): every pair is compared softly
    targets = torch.randn(2, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # Distinct multiples of the jitter (several units in the last place of 1e6), no tie among them.
    noise = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(row)) for row in (1, 2)]).double()
    loss = SpearmanLoss()
    gradients = []
    for jitter in (0.0, 1e-9):
        predictions = (value + jitter * noise).requires_grad_()
        torch.testing.assert_close(loss.sorter(predictions), torch.full((2, n), (n + 1) / 2 / n, dtype=torch.float64))
        loss(predictions, targets).backward()
        gradients.append(predictions.grad)
    assert gradients[0].abs().max() > 0.1
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("floor", [None, 0.1])
def test_the_float32_gradient_is_the_float64_one_beside_close_pairs_and_on_random_rows(floor):
    """Comparisons whose sigmoid rounds to 1 in float32 (logits beyond about 17) keep their
    derivative on both sides, and terms that cancel exactly (a value against itself) add no
    rounding: the sharp sorter's couplings for a pair 1e-10 apart are about 1e8."""
    from sodeep import SpearmanLoss

    close = torch.tensor([[0.0, 1e-10, 1.0, 2.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    random = torch.randn(4, 100, generator=generator, dtype=torch.float64)
    for scores in (close, random):
        targets = torch.randn(scores.shape, generator=generator, dtype=torch.float64)
        gradients = []
        for dtype in (torch.float32, torch.float64):
            predictions = scores.to(dtype).requires_grad_()
            sorter = load_sorter(temperature_floor=floor).to(dtype)
            SpearmanLoss(sorter=sorter, l1_weight=0.0)(predictions, targets.to(dtype)).backward()
            gradients.append(predictions.grad.double())
        error = (gradients[0] - gradients[1]).norm() / gradients[1].norm()
        assert gradients[1].norm() > 1e-6 and error < 1e-3, (scores.shape, gradients)


@pytest.mark.parametrize(
    "row,dtype",
    [
        ([0.0, 1e-45] + list(range(1, 101)), torch.float32),
        ([0.0, 1e-38, 1.0, 2.0, 1e38], torch.float32),
        ([-3e38, 3e38] + [1e-30 * k for k in range(20)], torch.float32),
        ([0.0, 1e-300, 1e300], torch.float64),
        ([-1e308, 1e308, 0.0, 1e-320], torch.float64),
    ],
)
def test_finite_scores_of_any_spread_give_finite_ranks_and_gradients(row, dtype, comparisons):
    scores = torch.tensor(row, dtype=dtype, requires_grad=True)
    soft = load_sorter()
    soft.softness = 4.0
    learning = load_sorter(trainable=True, depth=0)
    learning.network[-1].weight.data.normal_()
    torch.nn.functional.l1_loss(learning(scores.detach().unsqueeze(0)), rank(scores.detach().unsqueeze(0))).backward()
    assert all(
        torch.isfinite(parameter.grad).all() for parameter in learning.parameters() if parameter.grad is not None
    )
    for sorter in (load_sorter(), soft):
        ranks = sorter(scores)
        (grad,) = torch.autograd.grad((ranks * torch.linspace(0, 1, len(row), dtype=dtype)).sum(), scores)
        assert torch.isfinite(ranks).all() and torch.isfinite(grad).all()
        if sorter is not soft:
            # Within a position of the exact ranks: values closer than e^-80 (1e-45 next to 0
            # among unit gaps) are compared as nearly tied, half a position each.
            assert (ranks - rank(scores)).abs().max() * len(row) <= 1.0


def test_length_limits_and_the_error_beyond():
    sorter = load_sorter()
    assert sorter(torch.randn(1, MAX_LENGTH)).shape == (1, MAX_LENGTH)
    with pytest.raises(ValueError, match="PairwiseSigmoidSorter"):
        sorter(torch.randn(1, MAX_LENGTH + 1))
    with pytest.raises(ValueError, match="capacity"):
        ConvSorter(capacity=MAX_LENGTH + 1)


def test_memory_grows_linearly_with_n():
    """The band's working set is O(n band): no (n, n) tensor at any n."""
    sorter = load_sorter()
    largest = {}
    for n in (1024, 4096):
        scores = torch.randn(1, n, requires_grad=True)
        sizes = []

        def pack(tensor, sizes=sizes):
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            sorter(scores).sum().backward()
        largest[n] = max(sizes)
    assert largest[4096] <= 4 * largest[1024] and largest[4096] < 4096 * 64


@pytest.mark.parametrize("family", ["normal", "ties", "cauchy"])
def test_temperatures_carry_no_gradient_to_the_scores(family, comparisons):
    """Gradients reach the scores through the soft comparisons at fixed temperatures: the same
    as autograd through ``soft_group_ranks`` with the temperatures of the input held constant."""
    sorter = ConvSorter(band=3).double()
    sorter.network[-1].weight.data.normal_()  # a non-trivial temperature network
    x = torch.randn(2, 9, dtype=torch.float64, requires_grad=True)
    frozen = sorter.group_log_temperature
    held = {}

    def hold(values, sizes, n):
        held.setdefault("log_tau", frozen(values, sizes, n).detach())
        return held["log_tau"]

    sorter.group_log_temperature = hold
    assert torch.autograd.gradcheck(sorter, (x,))


def test_frozen_sorter_works_under_torch_func_grad():
    frozen = load_sorter().double()
    scores = torch.randn(4, 20, dtype=torch.float64)
    grad = torch.func.grad(lambda x: frozen(x).square().sum())(scores)
    x = scores.clone().requires_grad_()
    frozen(x).square().sum().backward()
    torch.testing.assert_close(grad, x.grad)


def test_compiles_with_fullgraph_and_matches_eager():
    sorter = load_sorter()
    compiled = torch.compile(sorter, fullgraph=True, dynamic=False)
    scores = torch.randint(0, 12, (4, 40)).float() + 0.25 * torch.randn(4, 40)
    scores[0, :5] = 3.0  # a tie group
    for x in (scores, scores * 1e-20):
        eager_input, compiled_input = x.clone().requires_grad_(), x.clone().requires_grad_()
        expected, got = sorter(eager_input), compiled(compiled_input)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        weights = torch.linspace(-1, 1, 40)
        (expected * weights).sum().backward()
        (got * weights).sum().backward()
        torch.testing.assert_close(
            compiled_input.grad, eager_input.grad, rtol=1e-4, atol=1e-4 * x.abs().max().reciprocal()
        )


def test_compiled_with_dynamic_shapes_short_rows_of_every_length_stay_within_the_recompile_limit():
    """The band's windows keep their width at every n: eleven lengths from 2 to 100 compile a few
    graphs, not one per n (which hit torch's limit of 8 under fullgraph)."""
    torch._dynamo.reset()
    sorter = load_sorter()
    compiled = torch.compile(sorter, fullgraph=True, dynamic=True, backend="aot_eager")
    generator = torch.Generator().manual_seed(0)
    for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 17, 100):
        x = torch.randn(3, n, generator=generator)
        torch.testing.assert_close(compiled(x), sorter(x))


def test_a_sorter_with_hidden_layers_compiled_with_dynamic_shapes_does_not_recompile_for_every_n():
    """log n reaches the temperature network as a tensor: ten lengths compile a few graphs, not one
    per n (the ninth would fail under fullgraph)."""
    torch._dynamo.reset()
    sorter = ConvSorter(depth=2, softness=0.1)
    sorter.network[-1].weight.data.normal_()  # log n then moves the temperatures
    compiled = torch.compile(sorter, fullgraph=True, dynamic=True, backend="aot_eager")
    generator = torch.Generator().manual_seed(0)
    for n in range(20, 30):
        x = torch.randn(4, n, generator=generator)
        torch.testing.assert_close(compiled(x), sorter(x))


@pytest.mark.parametrize(
    ("band", "n", "reach"), [(8, 3, 8), (16, 5, 16), (256, 5, 4), (16384, 100, 99), (256, 300, 256)]
)
def test_short_rows_keep_narrow_windows_and_wide_bands_reach_only_the_row(monkeypatch, band, n, reach):
    """Windows up to SHORT_ROW_REACH keep their width (one compiled graph for short rows); a wide
    band on a short row costs n^2, not n * band."""
    import sodeep.sorters.conv as conv

    seen = []
    original = conv.soft_group_ranks
    monkeypatch.setattr(conv, "soft_group_ranks", lambda *args: seen.append(args[-1]) or original(*args))
    x = torch.randn(2, n)
    torch.testing.assert_close(ConvSorter(band=band)(x), ConvSorter(band=None)(x), rtol=0, atol=1e-6)
    assert seen[0] == reach


def test_compiled_sorter_refuses_nan_without_a_host_check():
    compiled = torch.compile(load_sorter(), fullgraph=True, dynamic=False)
    with pytest.raises(RuntimeError, match="NaN"):
        compiled(torch.tensor([[1.0, float("nan"), 2.0]]))


def log_temperature_by_features(sorter, sorted_scores: torch.Tensor) -> torch.Tensor:
    """The temperature network as first written: a feature tensor [gap window, log multiplicity,
    log n / log capacity] through ``sorter.network``, centred with multiplicity weights."""
    n = sorted_scores.shape[-1]
    starts = torch.ones_like(sorted_scores, dtype=torch.bool)
    starts[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    group_id = starts.cumsum(-1) - 1
    values = torch.zeros_like(sorted_scores).scatter_(-1, group_id, sorted_scores)
    multiplicity = torch.zeros_like(sorted_scores).scatter_add_(-1, group_id, torch.ones_like(sorted_scores))
    has_gap = multiplicity[:, 1:] > 0
    log_gap = torch.where(has_gap, (values[:, 1:] - values[:, :-1]).clamp_min(1e-300).log(), 0.0)
    row_log_gap = log_gap.sum(-1, keepdim=True) / has_gap.sum(-1, keepdim=True).clamp_min(1)  # a constant row has none
    relative = torch.where(has_gap, log_gap - row_log_gap, 8.0)
    window = torch.nn.functional.pad(relative, (sorter.radius, sorter.radius), value=8.0).unfold(
        -1, 2 * sorter.radius, 1
    )
    log_n = torch.full_like(sorted_scores, math.log(n) / math.log(sorter.max_length))
    features = torch.cat([window, multiplicity.clamp_min(1).log()[..., None], log_n[..., None]], -1)
    offset = sorter.network(features).squeeze(-1)
    offset = offset - (offset * multiplicity).sum(-1, keepdim=True) / n
    below, above = window[..., sorter.radius - 1], window[..., sorter.radius]
    return row_log_gap + math.log(sorter.softness) + torch.minimum(below, above) + offset


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("family", ["normal", "ties", "repeated"])
def test_temperature_network_matches_the_feature_formulation(depth, family):
    sorter = ConvSorter(depth=depth, width=8).double()
    generator = torch.Generator().manual_seed(depth)
    for parameter in sorter.network.parameters():
        parameter.data = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.5
    for n in (2, 5, 60):
        scores = generate_sequences(4, n, make_generator(n), families=[family])[0].double()
        sorted_scores = scores.sort(-1).values
        group_id, sizes = distinct_value_groups(sorted_scores)
        values = torch.zeros_like(sorted_scores).scatter_add(-1, group_id, sorted_scores) / sizes.clamp_min(1)
        log_tau = sorter.group_log_temperature(values, sizes, n)
        expected = log_temperature_by_features(sorter, sorted_scores)
        distinct = sizes > 0
        torch.testing.assert_close(log_tau[distinct], expected[distinct])


def test_vmap_of_grad_matches_a_loop_and_checks_every_sample():
    """torch.func: per-sample gradients through the shipped sorter and SpearmanLoss equal a loop
    of autograd calls, and a bad sample is refused as in eager mode."""
    from torch.func import grad, vmap

    from sodeep import SpearmanLoss

    sorter = load_sorter(temperature_floor=0.1).double()
    scores, targets = torch.randn(5, 12, dtype=torch.float64), torch.randn(5, 12, dtype=torch.float64)
    per_sample = vmap(grad(lambda row: sorter(row).square().sum()))(scores)
    loop = []
    for row in scores:
        row = row.clone().requires_grad_()
        loop.append(torch.autograd.grad(sorter(row).square().sum(), row)[0])
    torch.testing.assert_close(per_sample, torch.stack(loop))
    loss = SpearmanLoss()
    through_loss = vmap(grad(lambda p, t: loss(p[None], t[None])))(scores, targets)
    expected = []
    for p, t in zip(scores, targets):
        p = p.clone().requires_grad_()
        expected.append(torch.autograd.grad(loss(p[None], t[None]), p)[0])
    torch.testing.assert_close(through_loss, torch.stack(expected))
    scores[3, 4] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        vmap(grad(lambda row: sorter(row).square().sum()))(scores)
    assert torch.equal(vmap(rank)(targets), rank(targets))
    # Compiled over the transforms too (vmap of the module's forward: vmap names a module by its
    # repr, which torch.compile cannot trace).
    torch._dynamo.reset()
    compiled = torch.compile(vmap(sorter.forward), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(targets), vmap(sorter)(targets))


def test_vmap_on_a_device_other_than_the_cpu_takes_the_asynchronous_check():
    # The meta device stands in for an accelerator: the NaN check is an asynchronous assertion,
    # made on all of vmap's samples at once.
    sorter = load_sorter().to("meta")
    mapped = torch.func.vmap(sorter)(torch.empty(3, 10, device="meta"))
    assert mapped.shape == (3, 10) and mapped.device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("multiple", [1, 2, 3])
def test_rows_of_the_smallest_subnormal_numbers_rank_as_at_unit_scale(dtype, multiple):
    """Gaps of the dtype's smallest subnormal (which halves to 0) still set the row's scale."""
    tiny = multiple * torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    scores = torch.tensor([[tiny, 0.0, -tiny, tiny]], dtype=dtype)
    sorter = load_sorter().to(dtype)
    torch.testing.assert_close(sorter(scores), rank(scores), atol=1e-4, rtol=0)
    torch.testing.assert_close(sorter(scores / tiny), sorter(scores), atol=1e-6, rtol=0)


def test_scores_on_another_device_than_the_sorter_are_refused_in_one_line():
    # The meta device stands in for an accelerator holding the scores while the sorter stayed on the CPU.
    with pytest.raises(ValueError) as raised:
        load_sorter()(torch.empty(2, 8, device="meta"))
    assert (
        str(raised.value)
        == "the sorter is on cpu and the scores on meta: move the sorter with the model, sorter.to('meta')"
    )
    # A sorter moved to the meta device holds no values: to_empty, not to, brings it back.
    with pytest.raises(ValueError) as raised:
        load_sorter().to("meta")(torch.randn(2, 8))
    assert str(raised.value).endswith("sorter.to_empty(device='cpu')")
