"""Training-time augmentation of brain volumes: random left-right mirroring and small shifts.

Brains are nearly symmetric and scanners do not centre heads exactly, so mirrored and shifted
volumes are plausible subjects of the same age; with ~1,000 training subjects this is what keeps a
3D CNN from memorising them.  Randomness comes from the augmentation's own seeded generator,
never from the global one.
"""

from __future__ import annotations

import torch


class RandomFlipShift:
    """Mirror each volume along ``flip_dim`` with probability 1/2 and roll the batch by a random
    integer shift of up to ``max_shift`` voxels along each spatial axis (the zero background
    margin makes the wrap-around harmless at these shifts).

    Args:
        max_shift: largest shift in voxels (0: no shift).
        flip_dim: spatial axis to mirror (0 is left-right on RAS volumes), ``None``: no mirroring.
        seed: seeds the augmentation's generator.

    Shapes: ``(B, 1, D, H, W)`` -> same.

    Example:
        >>> augment = RandomFlipShift(max_shift=0, seed=0)
        >>> augment(torch.arange(4.0).view(1, 1, 4, 1, 1)).flatten().tolist() in ([0, 1, 2, 3], [3, 2, 1, 0])
        True
    """

    def __init__(self, max_shift: int = 2, flip_dim: int | None = 0, seed: int = 0) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)
        self.flip_dim = flip_dim
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, volumes: torch.Tensor) -> torch.Tensor:
        if volumes.dim() != 5:
            raise ValueError(f"volumes must be (B, 1, D, H, W), got shape {tuple(volumes.shape)}")
        if self.flip_dim is not None:
            flip = torch.rand(len(volumes), generator=self.generator) < 0.5
            flip = flip.to(volumes.device).view(-1, 1, 1, 1, 1)
            volumes = torch.where(flip, volumes.flip(2 + self.flip_dim), volumes)
        if self.max_shift:
            shifts = torch.randint(-self.max_shift, self.max_shift + 1, (3,), generator=self.generator).tolist()
            volumes = volumes.roll(shifts, dims=(2, 3, 4))
        return volumes
