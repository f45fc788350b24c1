"""Compiled row kernels of the synthetic generator: sequences whose exact ranks come from how they
are built, not from sorting their values.

Every family draws one uniform key per entry.  The values of a row are non-decreasing functions of
the keys (an inverse CDF such as the normal quantile, ``tan`` for Cauchy, a table for Student-t,
``floor`` for ties, an affine map), or two such lists side by side (mixtures, outliers), or copies
of such values (repeated).  So one sort of the integer keys (NumPy's vectorized sort of the whole batch, with
each key packed with its column) puts every row in the order of its values; what remains is a walk
along each sorted row: compute the values, merge two sorted lists, average the ranks of tie groups
and write each entry back to its column.  That walk is a loop along the row with no vectorized form
in torch or NumPy, so Numba compiles it (``nogil``: the rows of a batch split over threads).

Nothing is trusted blindly: the walk checks that the float32 values it wrote are non-decreasing in
the order it claims, and averages the ranks of equal float32 values (float rounding merges close
draws).  A row that fails the check is ranked by a sort of its values, in the same walk.

Randomness: the caller draws one 64-bit seed per batch from its ``torch.Generator``;
:func:`draw_rows` derives each row's seed and family from it (for one batch or several at once).
Each row then has two SplitMix64 streams (Steele, Lea and Flood, OOPSLA 2014): one for the keys,
one for the row's parameters and per-entry draws.  A row depends only on its seed, never on
threads or batch layout.  Rows live in flat arrays, row ``r`` at ``starts[r]:starts[r + 1]``, so
one call builds batches of several lengths.

Keys: for n <= 256, a 24-bit key (the resolution of ``torch.rand`` in float32) packed over an 8-bit
column into a uint32; above, a 32-bit key over a 32-bit column in a uint64.  Equal keys in a row
are possible (about 3e-4 rows at n=100) and give equal values: a genuine tie, ranked as one.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy import special

# Family codes, in the order of sodeep.synthetic.FAMILIES (which checks the two agree).
UNIFORM, NORMAL, LINEAR, SHUFFLED_LINEAR, UNIFORM_NORMAL, SHUFFLED_LINEAR_UNIFORM = 0, 1, 2, 3, 4, 5
TIES, REPEATED, CAUCHY, STUDENT_T, LOGNORMAL, OUTLIERS = 6, 7, 8, 9, 10, 11
SORTED, REVERSE_SORTED, NEAR_CONSTANT = 12, 13, 14
FAMILY_COUNT = 15
# Relative cost of one row of each family, by code (its keys, their sort and its walk; measured at
# n=100 with experiments/benchmarks/bench_generator.py).  Only used to give threads equal work.
ROW_COST = np.array([1.0, 1.4, 1.1, 1.0, 2.9, 2.5, 2.0, 2.1, 1.3, 1.5, 1.8, 3.0, 1.5, 1.5, 1.8])

# SplitMix64's increment (2^64 / golden ratio) and output mixers.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
# The parameter stream starts from the seed xor this odd constant, far from the key stream; the
# batch's family draws likewise from the batch seed xor another.
_PARAMETER_STREAM = np.uint64(0xD1B54A32D192ED03)
_FAMILY_STREAM = np.uint64(0x8CB92BA72F3D8DD7)
_LOW_32_BITS = np.uint64(0xFFFFFFFF)

# Random positive scales are log-uniform over +-SCALE_DECADES decades; shifts are at most
# MAX_RELATIVE_SHIFT times the scale (a shift of 1e4 on values of 1e-4 would fall below float32
# resolution: ties made by the representation, not by the data).
SCALE_DECADES = 4.0
MAX_RELATIVE_SHIFT = 10.0
# Share of entries of the "outliers" family multiplied by 10 to 1000.
OUTLIER_FRACTION = 0.05
# Level of the "near_constant" rows' noise relative to their constant (in [1, 2)).
NEAR_CONSTANT_NOISE = 1e-3

# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9): a central
# branch for 0.02425 <= p <= 0.97575 and a tail branch below it (and by symmetry above).
_TAIL = 0.02425
_LN_10 = math.log(10.0)


@njit(inline="always")
def _mix(z):
    """SplitMix64's output function: 64 random bits from a state."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _next(state):
    """One SplitMix64 step: the new state and 64 random bits."""
    state = state + _GOLDEN
    return state, _mix(state)


@njit(inline="always")
def _unit(z):
    """A float64 in the open interval (0, 1) from the top 53 of 64 random bits."""
    return (np.float64(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(inline="always")
def _scaled(z, bound):
    """An integer in [0, bound), bound < 2^32, from the top 32 of 64 random bits (Lemire's
    multiply-shift, bias < 2^-32 * bound)."""
    return np.int64(((z >> np.uint64(32)) * np.uint64(bound)) >> np.uint64(32))


@njit(inline="always")
def _uniform(state):
    """A float64 uniform in the open interval (0, 1), 53 random bits."""
    state, z = _next(state)
    return state, _unit(z)


@njit(inline="always")
def _uniforms(state, count, out):
    """``out[:count]`` = the next ``count`` uniforms of :func:`_uniform` (one vectorized loop:
    SplitMix64's i-th output depends on its state plus i increments only); the new state."""
    for i in range(count):
        z = _mix(state + np.uint64(i + 1) * _GOLDEN)
        out[i] = _unit(z)
    return state + np.uint64(count) * _GOLDEN


@njit(inline="always")
def _below(state, bound):
    """A uniform integer in [0, bound), bound < 2^32."""
    state, z = _next(state)
    return state, _scaled(z, bound)


@njit(inline="always")
def _normal_central(q):
    """Acklam's central branch at ``q = p - 1/2``."""
    r = q * q
    top = (((((-39.69683028665376 * r + 220.9460984245205) * r - 275.9285104469687) * r + 138.3577518672690) * r
            - 30.66479806614716) * r + 2.506628277459239) * q  # fmt: skip
    bottom = ((((-54.47609879822406 * r + 161.5858368580409) * r - 155.6989798598866) * r + 66.80131188771972) * r
              - 13.28068155288572) * r + 1.0  # fmt: skip
    return top / bottom


@njit(inline="always")
def _normal_lower_tail(p):
    """Acklam's tail branch, for ``p < 0.02425`` (the upper tail is ``-_normal_lower_tail(1 - p)``)."""
    q = math.sqrt(-2.0 * math.log(p))
    top = ((((-0.007784894002430293 * q - 0.3223964580411365) * q - 2.400758277161838) * q - 2.549732539343734) * q
           + 4.374664141464968) * q + 2.938163982698783  # fmt: skip
    bottom = (((0.007784695709041462 * q + 0.3224671290700398) * q + 2.445134137142996) * q
              + 3.754408661907416) * q + 1.0  # fmt: skip
    return top / bottom


@njit(inline="always")
def _normal_quantiles_ascending(u, count, out):
    """``out[:count] = normal quantiles of u[:count]``, for ascending ``u``: the central branch for
    all (a loop the compiler vectorizes), then the few tail entries at both ends."""
    for i in range(count):
        out[i] = _normal_central(u[i] - 0.5)
    i = 0
    while i < count and u[i] < _TAIL:
        out[i] = _normal_lower_tail(u[i])
        i += 1
    i = count - 1
    while i >= 0 and u[i] > 1.0 - _TAIL:
        out[i] = -_normal_lower_tail(1.0 - u[i])
        i -= 1


@njit(inline="always")
def _tan(x):
    """tan(x) for |x| <= pi/4: Cephes' rational approximation (relative error 2.2e-16 measured),
    plain arithmetic that the compiler vectorizes, unlike libm's ``tan``."""
    z = x * x
    top = (-13093.6939181383777646 * z + 1153516.64838587416140) * z - 17956525.1976484877988
    bottom = (((z + 13681.2963470692954678) * z - 1320892.34440210967447) * z + 25008380.1823357915839) * z
    return x + x * (z * top / (bottom - 53869575.5929454629881))


@njit(inline="always")
def _tan_pi(q):
    """tan(pi q) for -1/2 < q < 1/2 (the Cauchy quantile at q + 1/2), branch-free: beyond
    |q| = 1/4 it is sign(q) / tan(pi (1/2 - |q|))."""
    near = abs(q) <= 0.25
    reduced = _tan(math.pi * (q if near else 0.5 - abs(q)))
    return reduced if near else math.copysign(1.0, q) / reduced


@njit(inline="always")
def _exp(x):
    """exp(x) for |x| <= 16 (relative error ~1e-13): Taylor's series of exp(x / 64) to degree 10,
    squared six times; plain arithmetic the compiler vectorizes, unlike libm's ``exp``."""
    y = x * (1.0 / 64.0)
    p = 2.755731922398589e-07  # 1 / 10!
    p = p * y + 2.7557319223985893e-06
    p = p * y + 2.48015873015873e-05
    p = p * y + 0.0001984126984126984
    p = p * y + 0.001388888888888889
    p = p * y + 0.008333333333333333
    p = p * y + 0.041666666666666664
    p = p * y + 0.16666666666666666
    p = p * y + 0.5
    p = p * y + 1.0
    p = p * y + 1.0
    for _ in range(6):
        p = p * p
    return p


def _student_t_tables(degrees_of_freedom, lowest_binade):
    """Grid points ``(points,)`` of :func:`student_t_quantiles`, Student-t quantiles there for each
    of ``degrees_of_freedom`` ``(len(dof), points)`` (SciPy's ``stdtrit``) and the slopes between
    them ``(len(dof), points - 1)``, all float64."""
    points = lowest_binade * _CELLS_PER_BINADE + 1
    lowest_bits = np.float64(2.0**-lowest_binade).view(np.uint64)
    grid = (lowest_bits + (np.arange(points, dtype=np.uint64) << np.uint64(_CELL_SHIFT))).view(np.float64)
    quantiles = np.stack([special.stdtrit(dof, grid) for dof in degrees_of_freedom])
    quantiles[:, -1] = 0.0  # the median, exactly
    return grid, quantiles, np.diff(quantiles, axis=-1) / np.diff(grid)


# Student-t quantiles for 3, 4 and 5 degrees of freedom (no closed form for 3 and 5; 4 has one, but
# a table is cheaper than its cubic root), tabulated on p in [2^-40, 1/2]: 64 cells per binade of
# p, so cells shrink with p as the quantile steepens.  Keys give p >= 2^-33.
_CELL_SHIFT = 46  # float64 bits below the 6 mantissa bits that number the cells of a binade
_CELLS_PER_BINADE = 64
_LOWEST_P = 2.0**-40
_LOWEST_BITS = np.float64(_LOWEST_P).view(np.uint64)
_STUDENT_T_GRID, _STUDENT_T_QUANTILES, _STUDENT_T_SLOPES = _student_t_tables((3, 4, 5), 40)


@njit(inline="always")
def student_t_quantiles(u, count, dof, lower, out):
    """``out[:count]`` = Student-t quantiles at ``u[:count]`` in (0, 1) for 1 to 5 degrees of
    freedom: closed forms for 1 and 2, for 3 to 5 a linear interpolation of the table (so a
    non-decreasing function of ``u``; relative error below 4e-5, tested against SciPy).
    ``lower`` is a float64 scratch of ``count`` entries."""
    if dof == 1:
        for i in range(count):
            out[i] = _tan_pi(u[i] - 0.5)
        return
    if dof == 2:
        for i in range(count):
            out[i] = (2.0 * u[i] - 1.0) / math.sqrt(2.0 * u[i] * (1.0 - u[i]))
        return
    for i in range(count):  # the quantile is odd around p = 1/2: tabulated below it
        lower[i] = max(min(u[i], 1.0 - u[i]), _LOWEST_P)
    bits = lower[:count].view(np.uint64)
    table = dof - 3
    last_cell = _STUDENT_T_SLOPES.shape[1] - 1
    for i in range(count):
        cell = min(np.int64((bits[i] - _LOWEST_BITS) >> np.uint64(_CELL_SHIFT)), last_cell)
        value = _STUDENT_T_QUANTILES[table, cell] + _STUDENT_T_SLOPES[table, cell] * (lower[i] - _STUDENT_T_GRID[cell])
        out[i] = value if u[i] < 0.5 else -value


@njit(inline="always")
def _merge(first, first_where, first_count, second, second_where, second_count, out, out_where):
    """Merge two ascending lists (values and their columns) into ``out``/``out_where``.

    Each list holds its entries at ``1 .. count`` and needs the slots ``0`` and ``count + 1``
    for sentinels (-inf, +inf) that make the loop branch-free.  The merge runs from both ends at
    once, smallest entries forward and largest backward: two independent chains of loads and
    compares that the processor overlaps (measured: 1.5x faster than one chain).  Equal values
    go first-list first from both ends, so the two halves meet exactly.
    """
    first[0] = -np.inf
    second[0] = -np.inf
    first[first_count + 1] = np.inf
    second[second_count + 1] = np.inf
    total = first_count + second_count
    i, j = 1, 1  # the next smallest entries
    i_back, j_back = first_count, second_count  # the next largest entries
    for k in range(total // 2):
        take_second = second[j] < first[i]
        out[k] = second[j] if take_second else first[i]
        out_where[k] = second_where[j] if take_second else first_where[i]
        j += take_second
        i += not take_second
        take_second_back = second[j_back] >= first[i_back]
        back = total - 1 - k
        out[back] = second[j_back] if take_second_back else first[i_back]
        out_where[back] = second_where[j_back] if take_second_back else first_where[i_back]
        j_back -= take_second_back
        i_back -= not take_second_back
    if total % 2:  # the middle entry
        take_second = second[j] < first[i]
        out[total // 2] = second[j] if take_second else first[i]
        out_where[total // 2] = second_where[j] if take_second else first_where[i]


@njit(inline="always")
def _merge_few(first, first_where, first_count, second, second_where, second_count, out, out_where):
    """:func:`_merge` (same layout) when ``second`` is short: a branch that is almost always
    taken the same way costs less than the branch-free selects."""
    first[first_count + 1] = np.inf
    second[second_count + 1] = np.inf
    i = 1
    j = 1
    for k in range(first_count + second_count):
        if second[j] < first[i]:
            out[k] = second[j]
            out_where[k] = second_where[j]
            j += 1
        else:
            out[k] = first[i]
            out_where[k] = first_where[i]
            i += 1


@njit(inline="always")
def _insertion_sort(values, where, count):
    """Sort the first ``count`` values ascending, carrying their columns (for a handful of entries)."""
    for i in range(1, count):
        value = values[i]
        column = where[i]
        t = i - 1
        while t >= 0 and values[t] > value:
            values[t + 1] = values[t]
            where[t + 1] = where[t]
            t -= 1
        values[t + 1] = value
        where[t + 1] = column


@njit(inline="always")
def _sorted_ranks(values, count, group_start, out):
    """Descending normalized ranks, ties averaged, of ascending float32 ``values[:count]``, in the
    sorted order.  Returns False if ``values`` is not non-decreasing (the row needs a sort)."""
    decreasing = False
    tied = False
    for i in range(count - 1):
        decreasing |= values[i + 1] < values[i]
        tied |= values[i + 1] == values[i]
    inverse = 1.0 / count
    if not tied:
        for i in range(count):
            out[i] = np.float32((count - i) * inverse)
        return not decreasing
    # Entries start..stop of a tie group hold ascending positions start+1..stop+1: each gets their
    # mean, made descending.  One pass finds each group's start (a running max of the indices
    # where a group starts), one pass back its stop (a running min); max and min, not branches,
    # which tie groups of random sizes would mispredict.
    start = 0
    group_start[0] = 0
    for i in range(1, count):
        start = max(start, np.int64(values[i] != values[i - 1]) * i)
        group_start[i] = start
    stop = count - 1
    out[count - 1] = np.float32((count - 0.5 * (group_start[count - 1] + stop)) * inverse)
    for i in range(count - 2, -1, -1):
        ends = np.int64(values[i] != values[i + 1])
        stop = min(stop, ends * i + (1 - ends) * (count - 1))
        out[i] = np.float32((count - 0.5 * (group_start[i] + stop)) * inverse)
    return not decreasing


@njit(inline="always")
def _sort_carrying_columns(values, where, count, keys):
    """Sort float32 ``values[:count]`` ascending, carrying their columns ``where``: one sort of
    uint64 keys, the float's order-preserving bits over the entry's position (for the rare rows
    that float rounding leaves out of order, or whose repeated bases are equal)."""
    bits = values.view(np.uint32)
    for i in range(count):
        # Negative floats: all bits flipped (more negative, smaller); others: the sign bit set.
        flip = np.uint32(0xFFFFFFFF) if bits[i] >> np.uint32(31) else np.uint32(0x80000000)
        keys[i] = (np.uint64(bits[i] ^ flip) << np.uint64(32)) | np.uint64(i)
    keys[:count].sort()
    for i in range(count):
        position = np.int64(keys[i] & _LOW_32_BITS)
        keys[i] = (keys[i] & ~_LOW_32_BITS) | np.uint64(where[position])
    for i in range(count):
        flipped = np.uint32(keys[i] >> np.uint64(32))
        bits[i] = flipped ^ (np.uint32(0x80000000) if flipped >> np.uint32(31) else np.uint32(0xFFFFFFFF))
        where[i] = np.int64(keys[i] & _LOW_32_BITS)


@njit(inline="always")
def _draw_batch_rows(batch_seed, family_codes, seeds, family_index, codes):
    """:func:`draw_rows` for the rows of one batch."""
    rows = seeds.shape[0]
    family_count = family_codes.shape[0]
    counts = np.zeros(family_count, np.int64)
    family_stream = batch_seed ^ _FAMILY_STREAM
    for row in range(rows):
        seeds[row] = _mix(batch_seed + np.uint64(row + 1) * _GOLDEN)
        z = _mix(family_stream + np.uint64(row + 1) * _GOLDEN)
        counts[_scaled(z, family_count)] += 1
    row = 0
    for family in range(family_count):
        family_index[row : row + counts[family]] = family
        codes[row : row + counts[family]] = family_codes[family]
        row += counts[family]


@njit(nogil=True, cache=True)
def draw_rows(batch_seeds, lengths, family_codes, seeds, family_index, codes, starts):
    """Fill ``seeds`` ``(rows,)`` uint64 with each row's seed, ``family_index`` ``(rows,)`` int64
    with each row's family, uniform over ``0 .. len(family_codes) - 1``, ``codes`` ``(rows,)``
    int64 with ``family_codes[family_index]``, and ``starts`` ``(rows + 1,)`` int64 with where
    each row begins in the flat arrays of entries (``starts[-1]`` entries in all).

    The rows are ``len(batch_seeds)`` batches of ``rows // len(batch_seeds)`` rows, one after the
    other: batch ``b``'s rows have ``lengths[b]`` entries each and come from the 64-bit
    ``batch_seeds[b]`` alone, its family indices sorted (a count per family, then each family's
    rows in turn).
    """
    rows_per_batch = seeds.shape[0] // batch_seeds.shape[0]
    starts[0] = 0
    for batch in range(batch_seeds.shape[0]):
        low, high = batch * rows_per_batch, (batch + 1) * rows_per_batch
        _draw_batch_rows(batch_seeds[batch], family_codes, seeds[low:high], family_index[low:high], codes[low:high])
        for row in range(low, high):
            starts[row + 1] = starts[row] + lengths[batch]


# The Mersenne Twister (MT19937) that torch's CPU generator runs: its seeding multiplier, the
# twist's constant, its tempering masks.
_MT_SEED_MULTIPLIER = np.uint64(1812433253)
_MT_TWIST = np.uint64(0x9908B0DF)
_MT_TEMPER_B = np.uint64(0x9D2C5680)
_MT_TEMPER_C = np.uint64(0xEFC60000)


@njit(cache=True)
def torch_first_draws(torch_seeds, choice_range):
    """What a torch CPU generator draws first after ``manual_seed(torch_seeds[b])``, for each
    ``b``: ``torch.randint(0, choice_range, (1,))``, then the 64 bits of
    ``random_(-2**63, 2**63 - 1)``, as ``(choices (K,) int64, seeds (K,) uint64)``.

    torch seeds its MT19937 with the seed's low 32 bits and twists the whole state before the
    first draw; the first three outputs need only the first 400 state words (output ``i``
    twists words ``i``, ``i + 1`` and ``i + 397``).  randint below 2^32 takes one output modulo
    the range; the 64-bit draw joins the next two (high, low), modulo ``2^64 - 1``, plus
    ``-2^63``.  ~0.7 us per seed here, against ~3.5 us for torch's own seeding and draws (which
    the tests compare it with).
    """
    count = torch_seeds.shape[0]
    choices = np.empty(count, np.int64)
    seeds = np.empty(count, np.uint64)
    state = np.empty(400, np.uint64)
    outputs = np.empty(3, np.uint64)
    for b in range(count):
        state[0] = torch_seeds[b] & _LOW_32_BITS
        for j in range(1, 400):
            previous = state[j - 1]
            state[j] = (_MT_SEED_MULTIPLIER * (previous ^ (previous >> np.uint64(30))) + np.uint64(j)) & _LOW_32_BITS
        for i in range(3):
            mixed = (state[i] & np.uint64(0x80000000)) | (state[i + 1] & np.uint64(0x7FFFFFFF))
            y = state[i + 397] ^ (mixed >> np.uint64(1))
            if state[i + 1] & np.uint64(1):
                y ^= _MT_TWIST
            y ^= y >> np.uint64(11)
            y ^= (y << np.uint64(7)) & _MT_TEMPER_B
            y ^= (y << np.uint64(15)) & _MT_TEMPER_C
            y ^= y >> np.uint64(18)
            outputs[i] = y & _LOW_32_BITS
        choices[b] = np.int64(outputs[0] % np.uint64(choice_range))
        wide = (outputs[1] << np.uint64(32)) | outputs[2]
        if wide == np.uint64(0xFFFFFFFFFFFFFFFF):  # modulo 2^64 - 1
            wide = np.uint64(0)
        seeds[b] = wide ^ np.uint64(0x8000000000000000)  # plus -2^63, modulo 2^64
    return choices, seeds


@njit(nogil=True, cache=True)
def split_rows(codes, starts, parts):
    """``parts + 1`` row bounds that cut rows of family ``codes`` and entries ``starts`` (see
    :func:`draw_rows`) into contiguous chunks of about equal cost: a row costs its
    :data:`ROW_COST` times its length (rows come grouped by family, and families differ in cost)."""
    rows = codes.shape[0]
    total = 0.0
    for row in range(rows):
        total += ROW_COST[codes[row]] * (starts[row + 1] - starts[row])
    bounds = np.empty(parts + 1, np.int64)
    bounds[0] = 0
    part = 1
    running = 0.0
    for row in range(rows):
        running += ROW_COST[codes[row]] * (starts[row + 1] - starts[row])
        while part < parts and running >= total * part / parts:
            bounds[part] = row + 1
            part += 1
    bounds[part:] = rows
    return bounds


@njit(nogil=True, cache=True)
def draw_keys(seeds, starts, keys, index_bits):
    """Fill each row's entries of the flat ``keys`` (uint32 with ``index_bits=8``, or uint64 with
    32), ``keys[starts[r]:starts[r + 1]]`` for row ``r`` of ``seeds``, with its random keys
    shifted over their column: ``key << index_bits | column``."""
    shift = np.uint64(index_bits)
    # Keys have 24 bits in a uint32 (8 for the column), 32 bits in a uint64: drop the rest.
    drop = np.uint64(32 - (keys.itemsize * 8 - index_bits))
    for row in range(seeds.shape[0]):
        state = seeds[row]
        row_keys = keys[starts[row] : starts[row + 1]]
        n = row_keys.shape[0]
        # The k-th SplitMix64 output gives keys 2k and 2k + 1; it depends on the seed plus k + 1
        # increments only, so the loop vectorizes.
        for k in range(n // 2):
            z = _mix(state + np.uint64(k + 1) * _GOLDEN)
            row_keys[2 * k] = (((z >> np.uint64(32)) >> drop) << shift) | np.uint64(2 * k)
            row_keys[2 * k + 1] = (((z & _LOW_32_BITS) >> drop) << shift) | np.uint64(2 * k + 1)
        if n % 2:
            z = _mix(state + np.uint64(n // 2 + 1) * _GOLDEN)
            row_keys[n - 1] = (((z >> np.uint64(32)) >> drop) << shift) | np.uint64(n - 1)


@njit(nogil=True, cache=True)
def draw_batch(batch_seeds, lengths, family_codes, seeds, family_index, codes, starts, keys, index_bits):
    """:func:`draw_rows`, then :func:`draw_keys` for every row: one call where the batches are
    built on one thread (each call from Python costs about half a microsecond)."""
    draw_rows(batch_seeds, lengths, family_codes, seeds, family_index, codes, starts)
    draw_keys(seeds, starts, keys, index_bits)


@njit(nogil=True, cache=True, error_model="numpy")
def finish_rows(codes, seeds, starts, sorted_keys, index_bits, affine_probability, values, ranks):
    """Build each row's values from its sorted keys and write values and exact ranks by column.

    Args:
        codes: ``(rows,)`` int64 family codes.
        seeds: ``(rows,)`` uint64, the seeds :func:`draw_keys` used.
        starts: ``(rows + 1,)`` int64: row ``r``'s entries are ``starts[r]:starts[r + 1]`` of
            the flat arrays below (see :func:`draw_rows`).
        sorted_keys: ``(entries,)`` the keys of :func:`draw_keys`, each row sorted ascending.
        index_bits: 8 (uint32 keys) or 32 (uint64 keys).
        affine_probability: chance that a row gets a random positive affine map.
        values, ranks: ``(entries,)`` float32 outputs: the scores and their descending normalized
            ranks with ties averaged (the convention of ``sodeep.rank``), row by row.

    Returns:
        The number of rows that were ranked by a sort of their values (rows whose float32 values
        failed the order check, or whose repeated bases were equal).
    """
    rows = codes.shape[0]
    longest = 1
    for row in range(rows):
        longest = max(longest, starts[row + 1] - starts[row])
    shift = np.uint64(index_bits)
    column_mask = (np.uint64(1) << shift) - np.uint64(1)
    key_scale = 1.0 / float(2 ** (sorted_keys.itemsize * 8 - index_bits))
    u = np.empty(longest)  # uniform of each sorted key, ascending
    columns = np.empty(longest, np.int64)  # column of each sorted key
    x = np.empty(longest)  # values of the row before the affine map, ascending
    where = np.empty(longest, np.int64)  # column of each entry of x
    first = np.empty(longest + 2)  # the two parts of a row that is merged, at 1 .. count (see _merge)
    first_where = np.empty(longest + 2, np.int64)
    second = np.empty(longest + 2)
    second_where = np.empty(longest + 2, np.int64)
    scores = np.empty(longest, np.float32)  # x after the affine map and float32 rounding
    sorted_rank = np.empty(longest, np.float32)
    group_start = np.empty(longest, np.int64)
    copies = np.empty(longest, np.int64)
    shown = np.empty(longest, np.int64)
    base_rank = np.empty(longest, np.float32)
    sort_keys = np.empty(longest, np.uint64)
    draws = np.empty(longest)
    outlier_draw = np.empty(longest)
    sorted_rows = 0
    in_order_rank = np.empty(longest, np.float32)  # the rank of the i-th smallest of n distinct values
    table_length = 0  # the n that in_order_rank holds
    for row in range(rows):
        key_row = sorted_keys[starts[row] : starts[row + 1]]
        value_row = values[starts[row] : starts[row + 1]]
        rank_row = ranks[starts[row] : starts[row + 1]]
        n = key_row.shape[0]
        if n != table_length:  # rows of a batch share their length: once per batch at most
            inverse = 1.0 / n
            for i in range(n):
                in_order_rank[i] = np.float32((n - i) * inverse)
            table_length = n
        code = codes[row]
        state = seeds[row] ^ _PARAMETER_STREAM
        for i in range(n):
            key = np.uint64(key_row[i])
            u[i] = (np.float64(key >> shift) + 0.5) * key_scale
            columns[i] = np.int64(key & column_mask)
        state, draw = _uniform(state)
        scale = 1.0
        offset = 0.0
        if draw < affine_probability:
            state, draw = _uniform(state)
            scale = _exp(_LN_10 * SCALE_DECADES * (2.0 * draw - 1.0))  # libm's pow costs more
            state, draw = _uniform(state)
            offset = scale * MAX_RELATIVE_SHIFT * (2.0 * draw - 1.0)
        must_sort = False
        for i in range(n):
            where[i] = columns[i]
        if code == UNIFORM:
            for i in range(n):
                x[i] = 2.0 * u[i] - 1.0
        elif code == NORMAL or code == SORTED or code == REVERSE_SORTED:
            _normal_quantiles_ascending(u, n, x)
            if code == SORTED:  # the i-th smallest value goes to column i
                for i in range(n):
                    where[i] = i
            elif code == REVERSE_SORTED:
                for i in range(n):
                    where[i] = n - 1 - i
        elif code == NEAR_CONSTANT:
            state, draw = _uniform(state)
            level = 1.0 + draw
            _normal_quantiles_ascending(u, n, x)
            for i in range(n):
                x[i] = level + NEAR_CONSTANT_NOISE * x[i]
        elif code == LOGNORMAL:
            state, draw = _uniform(state)
            sigma = 0.25 + 1.75 * draw
            _normal_quantiles_ascending(u, n, x)
            for i in range(n):
                x[i] = _exp(sigma * x[i])
        elif code == CAUCHY:
            for i in range(n):
                x[i] = _tan_pi(u[i] - 0.5)
        elif code == TIES:
            # Integer scores from 2 to n/2 + 2 levels, as ratings or votes.
            state, levels = _below(state, n // 2 + 1)
            levels += 2
            for i in range(n):
                x[i] = math.floor(u[i] * levels)
        elif code == LINEAR or code == SHUFFLED_LINEAR:
            # SoDeep's arange(a, b, (b - a) / n) with a, b ~ U(0, 1): in column order for "linear";
            # for "shuffled_linear" the i-th smallest key takes the i-th smallest value, a uniform
            # random shuffle.
            state, start = _uniform(state)
            state, stop = _uniform(state)
            step = (stop - start) / n
            for i in range(n):
                position = i if step >= 0 else n - 1 - i  # ascending values
                x[i] = start + step * position
                if code == LINEAR:
                    where[i] = position
        elif code == UNIFORM_NORMAL or code == SHUFFLED_LINEAR_UNIFORM:
            # A prefix of `split` columns from one family and the rest from another: each part is
            # ascending in key order, and a merge orders the row.
            state, split = _below(state, n)
            split += 1
            state, start = _uniform(state)
            state, stop = _uniform(state)
            step = (stop - start) / split
            if code == UNIFORM_NORMAL:
                _normal_quantiles_ascending(u, n, x)
            first_count = 0
            second_count = 0
            for i in range(n):
                in_prefix = columns[i] < split
                if code == UNIFORM_NORMAL:
                    first[1 + first_count] = 2.0 * u[i] - 1.0
                    second[1 + second_count] = x[i]
                else:  # SoDeep's shuffled arange(a, b, (b - a) / split) (written below), then U(-1, 1)
                    second[1 + second_count] = 2.0 * u[i] - 1.0
                first_where[1 + first_count] = columns[i]
                second_where[1 + second_count] = columns[i]
                first_count += in_prefix
                second_count += not in_prefix
            if code == SHUFFLED_LINEAR_UNIFORM:
                for i in range(first_count):
                    first[1 + i] = start + step * (i if step >= 0 else first_count - 1 - i)
            _merge(first, first_where, first_count, second, second_where, second_count, x, where)
        elif code == OUTLIERS:
            # Normal scores; each entry is an outlier with probability 5%, multiplied by 10 to 1000
            # (log-uniform).  Inliers stay in key order; the few outliers are sorted, then merged.
            _normal_quantiles_ascending(u, n, x)
            state = _uniforms(state, n, draws)
            inliers = 0
            outliers = 0
            for i in range(n):  # branch-free: both stores happen, one count moves
                is_outlier = draws[i] < OUTLIER_FRACTION
                first[1 + inliers] = x[i]
                first_where[1 + inliers] = columns[i]
                second[1 + outliers] = x[i]
                second_where[1 + outliers] = columns[i]
                outlier_draw[outliers] = draws[i]
                inliers += not is_outlier
                outliers += is_outlier
            for k in range(outliers):
                # An outlier's draw, rescaled, is again uniform: the exponent of 10 is in [1, 3).
                second[1 + k] *= _exp(_LN_10 * (1.0 + 2.0 * outlier_draw[k] / OUTLIER_FRACTION))
            _insertion_sort(second[1:], second_where[1:], outliers)
            _merge_few(first, first_where, inliers, second, second_where, outliers, x, where)
        elif code == STUDENT_T:
            state, dof = _below(state, 5)
            dof += 1
            student_t_quantiles(u, n, dof, first, x)
        elif code == REPEATED:
            # Normal scores where a random fraction (up to half) of entries copy another entry:
            # column c shows base shown[c].  Bases in key order are ascending and base m appears
            # copies[m] times, so its ascending positions follow from a running count.
            _normal_quantiles_ascending(u, n, x)
            for i in range(n):
                scores[i] = np.float32(x[i] * scale + offset)
                copies[i] = 0
            state, draw = _uniform(state)
            threshold = np.uint64(0.5 * draw * 4294967296.0)  # copy with probability 0.5 * draw
            for column in range(n):  # vectorized: the i-th SplitMix64 output needs no other
                z = _mix(state + np.uint64(column + 1) * _GOLDEN)
                copied = (z >> np.uint64(32)) < threshold
                other = np.int64(((z & _LOW_32_BITS) * np.uint64(n)) >> np.uint64(32))
                shown[column] = other if copied else column
            state += np.uint64(n) * _GOLDEN
            for column in range(n):
                copies[shown[column]] += 1
            tied_or_decreasing = False
            for i in range(n - 1):
                tied_or_decreasing |= scores[i + 1] <= scores[i]
            before = 0
            for i in range(n):
                base = columns[i]
                base_rank[base] = np.float32((n - before - 0.5 * (copies[base] - 1)) / n)
                x[base] = scores[i]  # x now holds the score of each base, by column
                before += copies[base]
            if not tied_or_decreasing:
                for column in range(n):
                    value_row[column] = x[shown[column]]
                    rank_row[column] = base_rank[shown[column]]
                continue
            # Equal bases would merge tie groups (rare): rank the row's final values by a sort.
            for column in range(n):
                scores[column] = x[shown[column]]
                where[column] = column
            must_sort = True
        if code != REPEATED:  # repeated rows hold their final scores already
            for i in range(n):
                scores[i] = np.float32(x[i] * scale + offset)
        strictly_increasing = not must_sort
        for i in range(n - 1):
            strictly_increasing &= scores[i + 1] > scores[i]
        if strictly_increasing:  # most rows: no ties, in order; ranks n/n, (n-1)/n, ... in one pass
            for i in range(n):
                column = where[i]
                value_row[column] = scores[i]
                rank_row[column] = in_order_rank[i]
            continue
        if must_sort or not _sorted_ranks(scores, n, group_start, sorted_rank):
            _sort_carrying_columns(scores, where, n, sort_keys)
            _sorted_ranks(scores, n, group_start, sorted_rank)
            sorted_rows += 1
        for i in range(n):
            value_row[where[i]] = scores[i]
            rank_row[where[i]] = sorted_rank[i]
    return sorted_rows
