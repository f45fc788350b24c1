"""Brain-age regressors: an MLP for tables of regional features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sodeep.checks import check_integer


def hidden_widths(hidden: Sequence[int]) -> tuple[int, ...]:
    """Layer widths as Python ints, each checked to be an integer >= 1 (none: a linear model); a
    list, tuple, range or 1-D NumPy array of them."""
    if type(hidden).__module__ == "numpy":  # an array of widths
        hidden = hidden.tolist()
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a sequence of layer widths such as (256, 64), got {hidden!r}")
    for width in hidden:
        check_integer(width, "each hidden width", 1)
    return tuple(int(width) for width in hidden)


class AgeMLP(nn.Module):
    """Multi-layer perceptron from standardized features to age (years).

    The output is ``age_offset + network(x)``, with ``age_offset`` set to the training mean so an
    untrained network starts at the mean prediction rather than at 0 years.

    Args:
        in_features: number of features ``F``.
        hidden: widths of the hidden layers.
        dropout: dropout before each hidden linear layer (after the input too).
        age_offset: initial output (years).

    Shapes: ``(B, F)`` -> ``(B,)``.

    Example:
        >>> AgeMLP(5, age_offset=40.0)(torch.zeros(3, 5)).shape
        torch.Size([3])
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (256, 64), dropout: float = 0.2, age_offset: float = 0.0
    ) -> None:
        super().__init__()
        check_integer(in_features, "in_features", 1)
        hidden = hidden_widths(hidden)
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, size), nn.GELU()]
            width = size
        layers += [nn.Linear(width, 1)]
        self.network = nn.Sequential(*layers)
        self.register_buffer("age_offset", torch.tensor(float(age_offset)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2:
            raise ValueError(f"features must be (B, F), got shape {tuple(features.shape)}")
        return self.network(features).squeeze(-1) + self.age_offset


#: SFCN's block widths by default; each block halves the grid.
SFCN_CHANNELS = (8, 16, 48, 128, 256)


def check_grid_fits(
    grid: Sequence[int], channels: Sequence[int] | None, advice: str = "give fewer channels= or a larger shape="
) -> None:
    """Refuse (``ValueError``, one line ending in ``advice``) a volume grid that SFCN's blocks,
    each halving it, would shrink below one voxel: each side needs ``2 ** len(channels)``."""
    blocks = len(channels) if channels is not None else len(SFCN_CHANNELS)
    if min(grid) < 2**blocks:
        raise ValueError(
            f"the grid {tuple(grid)} is too small for SFCN's {blocks} blocks (channels "
            f"{list(channels or SFCN_CHANNELS)}), each of which halves it: each side needs >= {2**blocks} voxels; "
            f"{advice}"
        )


class SFCN(nn.Module):
    """Simple Fully Convolutional Network for brain age (Peng et al., "Accurate brain age
    prediction with lightweight deep neural networks", Medical Image Analysis 2021), narrowed for
    CPU training at 4 mm: blocks of ``Conv3d 3^3 -> MaxPool 2 -> BatchNorm -> ReLU``, a ``1^3``
    convolution, global average pooling, dropout and a linear regressor (one age, not the
    paper's age bins, so any regression or rank loss applies).

    Args:
        channels: output channels of the ``3^3`` blocks (the paper: 32, 64, 128, 256, 256).  The
            first blocks run at full resolution and set the cost, so they are narrow; the deep
            ones run on 8x fewer voxels per block and are wide.
        head_channels: channels of the ``1^3`` block (the paper: 64).
        dropout: before the regressor.
        age_offset: initial output (years), e.g. the training mean.
        age_scale: the regressor's output is multiplied by this (years), e.g. the training SD:
            a unit-scale head then spans the age range from the first steps instead of
            creeping from 0 at the optimizer's step size.
        extra_inputs: scalars concatenated to the pooled features before the regressor (the
            cascade's second stage feeds its first stage's age there).
        pool_before_norm: ``True``: ``Conv -> MaxPool -> BatchNorm -> ReLU``, normalizing 8x
            fewer voxels; ``False``: the paper's ``Conv -> BatchNorm -> MaxPool -> ReLU``.  In eval
            mode, with positive BatchNorm scales, both orders compute the same function (only
            the batch statistics of training differ), and pooling first makes a training step
            cheaper (timings in ``docs/brainage.md``).
        pool_every_block: also average each ``3^3`` block's output over the volume and hand
            those ``sum(channels)`` means to the regressor beside the last block's (``False``:
            the last block's only, as in the paper).  The means of the early, fine-scale blocks
            are tissue-class volumes, the quantities age changes most directly, which the deep
            blocks otherwise have to carry through four poolings.

    Shapes: ``(B, 1, D, H, W)`` -> ``(B,)``; any grid with each side >= ``2 ** len(channels)``.

    Example:
        >>> SFCN(channels=(4, 8), head_channels=8)(torch.zeros(2, 1, 16, 20, 16)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        channels: Sequence[int] = SFCN_CHANNELS,
        head_channels: int = 128,
        dropout: float = 0.3,
        age_offset: float = 0.0,
        age_scale: float = 1.0,
        extra_inputs: int = 0,
        pool_before_norm: bool = True,
        pool_every_block: bool = True,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        # Indices of the layers whose outputs are averaged for the regressor: each block's ReLU
        # (with pool_every_block) and the head's.
        self.pooled_layers: list[int] = []
        width = 1
        for size in channels:
            convolution, norm, pool = (
                nn.Conv3d(width, size, kernel_size=3, padding=1),
                nn.BatchNorm3d(size),
                nn.MaxPool3d(2),
            )
            blocks += [convolution, pool, norm] if pool_before_norm else [convolution, norm, pool]
            blocks.append(nn.ReLU(inplace=True))
            if pool_every_block:
                self.pooled_layers.append(len(blocks) - 1)
            width = size
        blocks += [nn.Conv3d(width, head_channels, kernel_size=1), nn.BatchNorm3d(head_channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*blocks)
        self.pooled_layers.append(len(blocks) - 1)
        self.minimum_side = 2 ** len(channels)
        self.extra_inputs = int(extra_inputs)
        pooled_width = head_channels + (sum(channels) if pool_every_block else 0)
        self.regressor = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled_width + self.extra_inputs, 1))
        self.register_buffer("age_offset", torch.tensor(float(age_offset)))
        self.register_buffer("age_scale", torch.tensor(float(age_scale)))
        # Channels-last 3D convolution weights let oneDNN pick faster CPU kernels; loading a state
        # dict keeps the layout.
        self.to(memory_format=torch.channels_last_3d)

    def forward(self, volumes: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        if volumes.dim() != 5 or volumes.shape[1] != 1:
            raise ValueError(f"volumes must be (B, 1, D, H, W), got shape {tuple(volumes.shape)}")
        if min(volumes.shape[2:]) < self.minimum_side:
            raise ValueError(f"each side must be >= {self.minimum_side} voxels, got {tuple(volumes.shape[2:])}")
        means = []
        for index, layer in enumerate(self.features):
            volumes = layer(volumes)
            if index in self.pooled_layers:
                means.append(volumes.mean(dim=(2, 3, 4)))
        pooled = torch.cat(means, dim=-1)
        if self.extra_inputs:
            if extra is None or extra.shape != (len(volumes), self.extra_inputs):
                shape = None if extra is None else tuple(extra.shape)
                raise ValueError(f"extra must be (B, {self.extra_inputs}), got {shape}")
            pooled = torch.cat([pooled, extra.to(pooled.dtype)], dim=-1)
        return self.regressor(pooled).squeeze(-1) * self.age_scale + self.age_offset


def discretize_age(ages: torch.Tensor, step: float = 5.0) -> torch.Tensor:
    """Round ages down to a multiple of ``step`` years (the cascade's coarse age).

    Example:
        >>> discretize_age(torch.tensor([23.9, 25.0, 61.2]))
        tensor([20., 25., 60.])
    """
    return torch.floor(ages / step) * step


class CascadeAgeNet(nn.Module):
    """Two-stage cascade of Cheng et al. (IEEE TMI 2021): the first network predicts age; the
    second sees the volume and the first stage's age, discretized in ``step``-year bins, and
    predicts the residual: ``age = coarse + second(volume, coarse)``.  The first stage is frozen
    (trained before, stop-gradient here), as in the paper's stage-wise training.

    Shapes: ``(B, 1, D, H, W)`` -> ``(B,)``.
    """

    def __init__(self, first: nn.Module, second: SFCN, step: float = 5.0, age_scale: float = 100.0) -> None:
        super().__init__()
        if second.extra_inputs != 1:
            raise ValueError(f"the second stage must take one extra input (the coarse age), got {second.extra_inputs}")
        self.first = first.requires_grad_(False)
        self.second = second
        self.step = float(step)
        self.age_scale = float(age_scale)  # the coarse age enters the regressor in units of 100 years

    def train(self, mode: bool = True) -> CascadeAgeNet:
        super().train(mode)
        self.first.eval()  # frozen: no dropout, BatchNorm statistics stay as trained
        return self

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            coarse = discretize_age(self.first(volumes), self.step)
        return coarse + self.second(volumes, (coarse / self.age_scale).unsqueeze(-1))
