"""Brain-age regressors: an MLP for tables of regional features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
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
