"""Exact (non-differentiable) ranks and the rank convention used everywhere in sodeep.

The convention
--------------
SoDeep (Engilberge et al., CVPR 2019) regresses *normalized descending ranks*: along the ranked
dimension of length ``n``, the largest value gets rank ``1`` and the smallest gets rank ``n``;
normalized ranks divide by ``n``, so they lie in ``[1/n, 1]``.  Ties get the average of the
positions they occupy (``scipy.stats.rankdata(method="average")``).  Every sorter in
:mod:`sodeep.sorters` returns ranks in this convention, and every loss compares against it.
:data:`DEFAULT_RANK_CONVENTION` names it in one place.
"""

from __future__ import annotations

from numbers import Integral
from typing import Literal

import torch

from sodeep.argsort import argsort
from sodeep.checks import check_dense, require

TieMethod = Literal["average", "min", "max", "dense", "ordinal"]
TIE_METHODS: tuple[str, ...] = ("average", "min", "max", "dense", "ordinal")

_RANKED_DTYPES = (
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
)

#: The convention every sorter and loss uses: descending, normalized, average ties.
DEFAULT_RANK_CONVENTION = {"descending": True, "ties": "average", "normalized": True}


@torch.no_grad()
def rank(
    x: torch.Tensor,
    dim: int = -1,
    *,
    descending: bool = True,
    ties: TieMethod = "average",
    normalized: bool = True,
) -> torch.Tensor:
    """Exact ranks of ``x`` along ``dim``, tie-aware, on the input's device.

    Args:
        x: tensor of any shape with at least one dimension; ``x.shape[dim] = n >= 0`` (an empty
            dimension gives an empty result).
        dim: dimension to rank along.
        descending: if ``True`` (SoDeep's convention) the largest value gets rank 1.
        ties: ``"average"``, ``"min"``, ``"max"``, ``"dense"`` or ``"ordinal"``, as in
            ``scipy.stats.rankdata`` (``"ordinal"`` breaks ties by position).
        normalized: divide by ``n`` so ranks lie in ``[1/n, 1]`` (``"dense"`` ranks too: with
            ties their largest is the number of distinct values over ``n``, below 1).

    Returns:
        Tensor of the same shape as ``x``: float64 for float64 input, else float32 (whatever
        ``torch.get_default_dtype()`` is), which holds every whole rank exactly up to n = 2**24 (16,777,216; beyond it
        unnormalized ranks round to even numbers) and the half ranks of ties averaged over an even
        number of values up to n = 2**23: pass float64 scores for longer rows; float16 holds whole
        numbers only up to 2048 and overflows at 65504, bfloat16 holds them up to 256.  No
        gradient flows through it.

    Example:
        >>> rank(torch.tensor([0.5, 2.0, -1.0, 2.0]))
        tensor([0.7500, 0.3750, 1.0000, 0.3750])
        >>> rank(torch.tensor([0.5, 2.0, -1.0, 2.0]), descending=False, ties="min", normalized=False)
        tensor([2., 3., 1., 3.])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_dense(x, "x")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension, got a 0-d tensor")
    if ties not in TIE_METHODS:
        raise ValueError(f"ties must be one of {TIE_METHODS}, got {ties!r}")
    for name, flag in (("descending", descending), ("normalized", normalized)):
        numpy_boolean = type(flag).__module__ == "numpy" and type(flag).__name__ in ("bool", "bool_")
        if not (isinstance(flag, bool) or numpy_boolean):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    descending, normalized = bool(descending), bool(normalized)
    if isinstance(dim, bool) or not isinstance(dim, Integral):  # NumPy integers too
        raise TypeError(f"dim must be an integer, got {dim!r}")
    if not -x.dim() <= dim < x.dim():
        raise IndexError(f"dim must be in -{x.dim()}..{x.dim() - 1} for a {x.dim()}-d tensor, got {dim}")
    dim = int(dim)
    if x.is_complex():
        raise TypeError("x must be real, got a complex tensor")
    if x.dtype in (torch.uint16, torch.uint32):  # few kernels take them; int64 holds them exactly
        x = x.to(torch.int64)
    if x.dtype not in _RANKED_DTYPES:
        raise TypeError(f"x must be a bool, integer (up to uint32 and int64) or float16-64 tensor, got {x.dtype}")
    if x.is_floating_point():
        require(~torch.isnan(x), "x contains NaN; ranks of NaN are undefined")
    # float32 whatever the default dtype: a float16 default would round ranks above 2048.
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    moved = x.movedim(dim, -1)
    n = moved.shape[-1]
    if n == 0:
        return torch.empty_like(moved, dtype=out_dtype).movedim(-1, dim)
    # Sorting gives each element its position; a stable sort keeps equal elements in their original
    # order (ordinal ties by position), which no other tie method needs.  Sorting descending, not
    # negated values: the negation of unsigned and boolean values, or of the most negative
    # integer, is not in reverse order.
    if ties == "ordinal":
        sorted_key, order = torch.sort(moved, dim=-1, descending=descending, stable=True)
    else:
        order = argsort(moved, descending=descending)
        sorted_key = moved.gather(-1, order)
    positions = torch.arange(1, n + 1, device=x.device, dtype=out_dtype).expand_as(sorted_key)

    if ties == "ordinal":
        sorted_ranks = positions
    else:
        starts_group = torch.ones_like(sorted_key, dtype=torch.bool)
        starts_group[..., 1:] = sorted_key[..., 1:] != sorted_key[..., :-1]
        if ties == "dense":
            sorted_ranks = torch.cumsum(starts_group, dim=-1).to(out_dtype)
        else:
            # Each element's tie group runs from the last group start at or before it to the first
            # group end at or after it: a running maximum forwards, a running minimum backwards.
            ends_group = torch.ones_like(starts_group)
            ends_group[..., :-1] = starts_group[..., 1:]
            first = torch.where(starts_group, positions, 0).cummax(dim=-1).values
            last = torch.where(ends_group, positions, n + 1).flip(-1).cummin(dim=-1).values.flip(-1)
            sorted_ranks = {"min": first, "max": last, "average": (first + last) / 2}[ties]

    ranks = torch.empty_like(sorted_ranks).scatter(-1, order, sorted_ranks)
    if normalized:
        ranks = ranks / n
    return ranks.movedim(-1, dim)
