"""The interface every sorter implements: scores ``(n,)`` or ``(B, n)`` -> ranks, same shape.

Ranks follow :data:`sodeep.ranks.DEFAULT_RANK_CONVENTION` (descending, normalized by ``n``, ties
averaged), so any sorter can stand in for another inside a loss.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, ClassVar

import torch
from torch import nn

from sodeep.checks import beneath_transforms, check_dense, check_float_dtype, ranks_described, require
from sodeep.wording import shown_float


def check_positive_setting(value: Any, name: str) -> None:
    """A sorter setting that is a finite number ``> 0`` (a bool or a string is refused)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite number > 0, got {type(value).__name__} {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_scores(scores: Any, *, min_length: int, max_length: int | None, name: str = "scores") -> None:
    """Raise a ``TypeError``/``ValueError`` naming ``name`` unless ``scores`` is a finite real
    tensor of shape ``(n,)`` or ``(B, n)`` with ``B >= 1`` and ``min_length <= n <= max_length``."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    check_dense(scores, name)
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {scores.dtype}")
    check_float_dtype(scores, name)
    if scores.dim() not in (1, 2):
        shape = tuple(scores.shape)
        hint = f": rows of {shape[-1]} are {name}.reshape(-1, {shape[-1]})" if scores.dim() > 2 else ""
        raise ValueError(f"{name} must have shape (n,) or (B, n), got shape {shape}{hint}")
    if scores.dim() == 2 and scores.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch: shape {tuple(scores.shape)}")
    n = scores.shape[-1]
    if n < min_length or (max_length is not None and n > max_length):
        if max_length is None:
            accepted = f"any n >= {min_length}"
        elif max_length == min_length:
            accepted = f"only n = {min_length}"
        else:
            accepted = f"n >= {min_length} and n <= {max_length} (its capacity)"
        hint = ""
        if max_length is not None and n > max_length:
            hint = (
                "; PairwiseSigmoidSorter, NeuralSortSorter and SoftSortSorter accept any n "
                "(memory B * n^2), and sodeep.rank gives exact ranks without gradients"
            )
        raise ValueError(f"{name} has length n={n} (shape {tuple(scores.shape)}); this sorter accepts {accepted}{hint}")
    check_finite(scores, name)


def check_finite(scores: torch.Tensor, name: str = "scores") -> None:
    """Refuse NaN and infinite ``scores`` without stalling an accelerator (:func:`sodeep.checks.require`)."""
    message = f"{name} contains NaN or infinite values; ranks of non-finite scores are undefined"
    scores = scores.detach()
    if scores.device.type != "cpu" or torch.compiler.is_compiling():
        require(torch.isfinite(scores), message)
        return
    scores = beneath_transforms(scores)  # under torch.func.vmap: every sample at once
    # A finite sum means finite scores (one number to read, not a mask of (B, n)); a sum that
    # overflowed may still come from finite scores, so min and max (which propagate NaN and show
    # an infinity) decide then.
    if not math.isfinite(scores.sum().item()) and not all(
        math.isfinite(bound) for bound in torch.stack(torch.aminmax(scores)).tolist()
    ):
        raise ValueError(message)


#: Too narrow for soft sorters' temperatures (1/tau passes float16's 65504 at spacings of ~1e-5):
#: sorters compute in float32 for these and return the input's dtype.
HALF_PRECISION = (torch.float16, torch.bfloat16)


def scale_rows_by_power_of_two(scores: torch.Tensor, log2_size: torch.Tensor) -> torch.Tensor:
    """``scores * 2 ** -round(log2_size)``, row by row, so that rows of any magnitude come out of
    size ~1.  A product with a power of two rounds nothing (while it stays a normal float), so
    ranks, and the output of any scale-free sorter, do not change; only overflow and underflow in
    the sorter's own arithmetic (temperatures of 1e-40 or 1e40) are avoided.

    Args:
        scores: ``(B, n)``, differentiable (gradients come back through the same factors).
        log2_size: ``(B, 1)``, finite: log2 of each row's size (a typical gap, its largest value).

    Returns:
        ``(B, n)``, same dtype.
    """
    exponent = torch.round(-log2_size).to(scores.dtype)
    first = torch.floor(exponent / 2)
    # Two factors: one power alone may leave the dtype (2**149 lifts float32's smallest subnormal to 1).
    return scores * torch.exp2(first) * torch.exp2(exponent - first)


class Sorter(nn.Module):
    """Base class of differentiable sorters.

    Subclasses implement :meth:`rank_rows` on a ``(B, n)`` tensor and :meth:`config`, a JSON-able
    dict from which ``type(self)(**config)`` rebuilds the architecture (used by checkpoints).  A
    sorter of your own that checkpoints save and load sets an ``architecture`` name of its own and
    is registered under it before it is saved or loaded: ``sodeep.sorters.SORTERS[name] = cls``.

    Class attributes say what a sorter guarantees: ``permutation_equivariant`` (permuting the input
    permutes the output the same way) and ``affine_invariant`` (``a * x + b`` with ``a > 0`` gives
    the same ranks).
    """

    architecture: ClassVar[str] = ""
    permutation_equivariant: ClassVar[bool] = False
    affine_invariant: ClassVar[bool] = False
    min_length: int = 2
    max_length: int | None = None
    #: Built or loaded on the meta device: its weights hold no values until :meth:`reset_parameters`
    #: or ``load_state_dict`` sets them (``to_empty`` gives them uninitialised memory only).
    weights_unset: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_post_hook(_weights_set_by_a_complete_load)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Ranks of ``scores`` along the last dimension.

        Args:
            scores: ``(n,)`` or ``(B, n)``, finite, floating point, ``min_length <= n <= max_length``.

        Returns:
            Approximate normalized descending ranks in ``[1/n, 1]`` (roughly), same shape and dtype.
        """
        check_scores(scores, min_length=self.min_length, max_length=self.max_length)
        if self.weights_unset and scores.device.type != "meta":  # (meta scores: shapes only)
            raise RuntimeError(UNSET_WEIGHTS)
        weights = next(iter(self.parameters()), None)
        if weights is None:
            weights = next(iter(self.buffers()), None)
        if weights is not None and weights.device != scores.device:
            move = "to_empty(device=" if weights.is_meta else "to("  # meta weights hold no values to move
            raise ValueError(
                f"the sorter is on {weights.device} and the scores on {scores.device}: move the sorter with the model, "
                f"sorter.{move}{str(scores.device)!r})"
            )
        rows = scores.unsqueeze(0) if scores.dim() == 1 else scores
        ranks = self.rank_rows(rows)
        if not isinstance(ranks, torch.Tensor) or ranks.shape != rows.shape or ranks.dtype != rows.dtype:
            raise TypeError(
                f"{type(self).__name__}.rank_rows must return ranks of the dtype and shape of its (B, n) scores, "
                f"{ranks_described(rows)}, got {ranks_described(ranks)}"
            )
        return ranks.squeeze(0) if scores.dim() == 1 else ranks

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        """Ranks of ``(B, n)`` ``scores``, same shape and dtype (each sorter implements it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement rank_rows(scores) -> ranks, as Sorter says")

    def config(self) -> dict[str, Any]:
        """The settings that rebuild the sorter, ``type(self)(**config)`` (each sorter implements it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement config() -> its settings, as Sorter says")

    def reset_parameters(self) -> None:
        """Put back the weights the sorter was loaded with (:func:`sodeep.load_sorter`: the
        checkpoint's), or those it starts with when built (freshly initialized layers; weights a
        subclass makes itself take the values of a sorter built with its ``config()``).  As for
        torch's own modules, this is the step after ``to_empty`` for a model built on the meta
        device, whose weights ``to_empty`` leaves uninitialised::

            with torch.device("meta"):
                sorter = load_sorter()  # no memory yet
            sorter.to_empty(device="cpu")
            sorter.reset_parameters()  # the checkpoint's weights
        """
        loaded = getattr(self, "checkpoint_weights", None)
        if loaded is not None:
            self.load_state_dict(loaded)
            return
        for module in self.modules():
            if module is not self and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
        self._reset_own_weights()
        self.initialize()
        self.weights_unset = self.has_meta_weights()

    def _reset_own_weights(self) -> None:
        """Weights a subclass makes itself in ``__init__`` (not in a layer), given the values a
        sorter built with the same settings starts with: no layer's ``reset_parameters`` reaches them."""
        own = dict(self.named_parameters(recurse=False)) | dict(self.named_buffers(recurse=False))
        if not own or all(tensor.is_meta for tensor in own.values()):
            return
        device = next(iter(own.values())).device
        try:
            with torch.device(device):
                fresh = type(self)(**self.config())
        except (TypeError, ValueError, NotImplementedError) as error:
            raise ValueError(
                f"{type(self).__name__}.reset_parameters cannot rebuild its weights {sorted(own)} from config() "
                f"({error}); set their starting values in initialize()"
            ) from None
        starting = dict(fresh.named_parameters(recurse=False)) | dict(fresh.named_buffers(recurse=False))
        with torch.no_grad():
            for name, tensor in own.items():
                if name in starting:
                    tensor.copy_(starting[name])

    def has_meta_weights(self) -> bool:
        """Whether any weight is on the meta device (built there, holding no values)."""
        return any(tensor.is_meta for tensor in (*self.parameters(), *self.buffers()))

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Sorter:
        # Weights that leave the meta device (to_empty) get memory, not values.
        was_meta = self.has_meta_weights()
        super()._apply(fn, *args, **kwargs)
        if was_meta and not self.has_meta_weights():
            self.weights_unset = True
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Whether the load gives every weight (also when a model holding the sorter loads its
        # own): then, once its layers have loaded too, the weights are set.
        self._complete_load = all(prefix + name in state_dict for name in self.state_dict())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def initialize(self) -> None:
        """Give the weights a subclass sets itself their starting values (after its layers'
        own initialisation); nothing by default."""

    def extra_repr(self) -> str:
        return ", ".join(
            f"{key}={shown_float(value) if isinstance(value, float) else repr(value)}"
            for key, value in self.config().items()
        )


def _weights_set_by_a_complete_load(sorter: Sorter, incompatible_keys: Any) -> None:
    """After ``load_state_dict`` (its layers' too, ``assign=True`` included): a load that gave every
    weight, in memory, sets them; a partial one leaves an unset sorter unset."""
    if getattr(sorter, "_complete_load", False):
        sorter.weights_unset = sorter.has_meta_weights()


#: Why a sorter whose weights were never set refuses to rank or be saved.
UNSET_WEIGHTS = (
    "the sorter was built on the meta device and its weights were never set (to_empty gives them uninitialised "
    "memory): call sorter.reset_parameters() (a loaded sorter gets its checkpoint's weights) or load_state_dict"
)


def row_scale(scores: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each row ``(..., 1)``, as a constant (no gradient, in reverse or
    forward mode); 1 where a row is constant (or has one element), since any positive scale ranks
    an all-tied row correctly."""
    scores = scores.detach()
    if scores.shape[-1] < 2:
        return torch.ones_like(scores[..., :1])
    spread = scores.std(dim=-1, keepdim=True)
    return torch.where(spread > 0, spread, torch.ones_like(spread))


class FixedTemperatureSorter(Sorter):
    """Base of untrained sorters with one ``temperature`` (in units of the row's std):
    permutation-equivariant and affine-invariant, any ``n >= 2``, memory ``B * n^2``.  Rows are
    first brought to a largest magnitude ~1 by an exact power of two, and half-precision scores
    are ranked in float32, so rows of any finite magnitude and floating dtype rank alike.
    Subclasses set ``rank_function(scores, temperature)``."""

    permutation_equivariant = True
    affine_invariant = True

    def __init__(self, temperature: float = 0.01) -> None:
        super().__init__()
        check_positive_setting(temperature, "temperature")
        self.temperature = float(temperature)

    @staticmethod
    def rank_function(scores: torch.Tensor, temperature: float) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dtype in HALF_PRECISION:
            return self.rank_rows(scores.float()).to(scores.dtype)
        # Rows brought to a largest magnitude ~1 by an exact power of two: the row's standard
        # deviation and 1 / (temperature * std) then stay in range (rows of 1e-40 or 1e300 work).
        largest = scores.detach().abs().amax(-1, keepdim=True)
        log2_size = torch.where(largest > 0, largest, 1.0).log2()
        return self.rank_function(scale_rows_by_power_of_two(scores, log2_size), self.temperature)

    def config(self) -> dict[str, Any]:
        return {"temperature": self.temperature}
