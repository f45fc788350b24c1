"""Re-implementations of the original SoDeep sorter architectures, for comparison.

Engilberge et al., "SoDeep: a Sorting Deep Net to Learn Ranking Loss Surrogates", CVPR 2019.
Both work at one fixed length ``n`` only, are neither permutation-equivariant nor
affine-invariant, and expect scores of order 1.  Submodule names match the original code so
that its ``state_dict`` loads (see :func:`sodeep.checkpoints.import_original_checkpoint`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sodeep.checks import check_integer
from sodeep.sorters.base import Sorter

# (out_channels, kernel_size, batch norm) of the original CNN's first nine layers; the tenth maps
# to n outputs with a kernel that consumes what is left of the sequence.
_CNN_LAYERS = ((8, 2, False), (16, 3, True), (32, 5, False), (64, 7, True), (96, 10, False),
               (128, 7, True), (256, 5, False), (256, 3, True), (128, 3, False))  # fmt: skip
_CNN_SHRINK = sum(kernel - 1 for _, kernel, _ in _CNN_LAYERS)


class OriginalCNNSorter(Sorter):
    """SoDeep's ``cnn`` sorter: ten 1-D convolutions with PReLU, sigmoid output.

    The original fixes the last kernel at 64, so it only runs at ``n = 100``; here the last kernel
    is ``n - 36`` so other lengths ``n >= 37`` build the same architecture family.

    Shapes: ``(length,)`` or ``(B, length)`` -> same shape.
    """

    architecture = "original_cnn"

    def __init__(self, length: int = 100) -> None:
        super().__init__()
        check_integer(length, "length", _CNN_SHRINK + 1)
        self.length = self.min_length = self.max_length = int(length)
        in_channels = 1
        for index, (out_channels, kernel, batch_norm) in enumerate(_CNN_LAYERS, start=1):
            parts: list[nn.Module] = [nn.Conv1d(in_channels, out_channels, kernel)]
            if batch_norm:
                parts.append(nn.BatchNorm1d(out_channels))
            parts.append(nn.PReLU())
            setattr(self, f"layer{index}", nn.Sequential(*parts))
            in_channels = out_channels
        self.layer10 = nn.Conv1d(in_channels, self.length, self.length - _CNN_SHRINK)

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        # Scores of another dtype than the weights run in the weights' dtype.
        hidden = scores.to(self.layer10.weight.dtype).unsqueeze(1)
        for index in range(1, 11):
            hidden = getattr(self, f"layer{index}")(hidden)
        return torch.sigmoid(hidden.reshape(scores.shape)).to(scores.dtype)

    def config(self) -> dict[str, Any]:
        return {"length": self.length}


class OriginalLSTMLargeSorter(Sorter):
    """SoDeep's ``lstm_large`` sorter: a 2-layer bidirectional LSTM (512 units) and a convolution
    that treats the ``n`` positions as channels.

    Shapes: ``(length,)`` or ``(B, length)`` -> same shape.
    """

    architecture = "original_lstm_large"

    def __init__(self, length: int = 100, hidden_size: int = 512) -> None:
        super().__init__()
        check_integer(length, "length", 2)
        check_integer(hidden_size, "hidden_size", 1)
        self.length = self.min_length = self.max_length = int(length)
        self.hidden_size = int(hidden_size)
        self.lstm = nn.LSTM(1, hidden_size, 2, batch_first=True, bidirectional=True)
        self.conv1 = nn.Conv1d(self.length, self.length, 2 * hidden_size)

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        # Scores of another dtype than the weights run in the weights' dtype.
        hidden, _ = self.lstm(scores.to(self.conv1.weight.dtype).unsqueeze(-1))
        return self.conv1(hidden).reshape(scores.shape).to(scores.dtype)

    def config(self) -> dict[str, Any]:
        return {"length": self.length, "hidden_size": self.hidden_size}
