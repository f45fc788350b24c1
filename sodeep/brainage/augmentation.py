"""Training-time augmentation of brain volumes: random left-right mirroring and small shifts
(:class:`RandomFlipShift`), and scanner-like intensity changes (:class:`RandomContrast`).

Brains are nearly symmetric and scanners do not centre heads exactly, so mirrored and shifted
volumes are plausible subjects of the same age; with ~1,000 training subjects this is what keeps a
3D CNN from memorising them.  Randomness comes from the augmentation's own seeded generator,
never from the global one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F


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


class RandomContrast:
    """Scanner-like intensity changes of brain volumes z-scored inside the brain (zero outside):
    a random gamma, a smooth multiplicative bias field and Gaussian noise per volume, then back
    to z-scores inside the brain.  Sites differ in exactly these (contrast, coil inhomogeneity,
    noise), so a network that sees them vary at random learns less of the site and more of the
    anatomy (domain randomization, as in TorchIO's ``RandomGamma``/``RandomBiasField``/``RandomNoise``).
    It also scrambles the white-matter contrast, which carries age in sodeep's synthetic MRI, so
    it is an option, not a default (ablation in ``docs/brainage.md``).

    Args:
        max_gamma: gammas are drawn log-uniformly in ``[1 / max_gamma, max_gamma]`` and applied
            to intensities rescaled to ``[0, 1]`` inside the brain (1: no gamma change).
        bias_amplitude: the log bias field is a 3x3x3 grid of N(0, 1) values interpolated
            trilinearly and scaled by U(0, bias_amplitude) (0: none).
        noise: Gaussian noise of SD U(0, noise), in units of the brain's intensity range.
        seed: seeds the augmentation's generator.

    Shapes: ``(B, 1, D, H, W)`` -> same.

    Example:
        >>> volumes = torch.randn(2, 1, 6, 6, 6)
        >>> out = RandomContrast(seed=0)(volumes)
        >>> abs(out[0].mean().item()) < 1e-5, round(out[0].std(unbiased=False).item(), 4)
        (True, 1.0)
    """

    def __init__(self, max_gamma: float = 1.35, bias_amplitude: float = 0.15, noise: float = 0.03, seed: int = 0):
        if max_gamma < 1 or bias_amplitude < 0 or noise < 0:
            raise ValueError(
                f"need max_gamma >= 1, bias_amplitude >= 0, noise >= 0; got {max_gamma}, {bias_amplitude}, {noise}"
            )
        self.max_gamma = float(max_gamma)
        self.bias_amplitude = float(bias_amplitude)
        self.noise = float(noise)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, volumes: torch.Tensor) -> torch.Tensor:
        if volumes.dim() != 5:
            raise ValueError(f"volumes must be (B, 1, D, H, W), got shape {tuple(volumes.shape)}")
        batch, spatial, dims = len(volumes), volumes.shape[2:], (1, 2, 3, 4)
        generator = self.generator

        def draw(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator).to(volumes)

        brain = volumes != 0
        low = torch.where(brain, volumes, math.inf).amin(dims, keepdim=True)
        high = torch.where(brain, volumes, -math.inf).amax(dims, keepdim=True)
        unit = ((volumes - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
        gamma = torch.exp((2 * draw(batch) - 1) * math.log(self.max_gamma)).view(-1, 1, 1, 1, 1)
        image = unit**gamma
        if self.bias_amplitude > 0:
            coarse = torch.randn((batch, 1, 3, 3, 3), generator=generator).to(volumes)
            coarse = coarse * (self.bias_amplitude * draw(batch)).view(-1, 1, 1, 1, 1)
            image = image * torch.exp(F.interpolate(coarse, size=spatial, mode="trilinear", align_corners=True))
        if self.noise > 0:
            sd = (self.noise * draw(batch)).view(-1, 1, 1, 1, 1)
            image = image + sd * torch.randn(volumes.shape, generator=generator).to(volumes)
        count = brain.sum(dims, keepdim=True).clamp_min(1)
        mean = torch.where(brain, image, 0.0).sum(dims, keepdim=True) / count
        centred = torch.where(brain, image - mean, 0.0)
        std = (centred.square().sum(dims, keepdim=True) / count).sqrt().clamp_min(1e-6)
        return centred / std


class Compose:
    """Apply ``transforms`` left to right (each ``(B, 1, D, H, W)`` -> same)."""

    def __init__(self, *transforms: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.transforms = transforms

    def __call__(self, volumes: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            volumes = transform(volumes)
        return volumes


def compose(*transforms: Callable[[torch.Tensor], torch.Tensor]) -> Compose:
    """:class:`Compose` of ``transforms``."""
    return Compose(*transforms)


def random_generators(augment: Callable[[torch.Tensor], torch.Tensor] | None) -> list[torch.Generator]:
    """The generators an augmentation draws from (its state, saved with a training checkpoint so a
    resumed run draws what an uninterrupted one would)."""
    transforms = getattr(augment, "transforms", () if augment is None else (augment,))
    generators = [getattr(transform, "generator", None) for transform in transforms]
    return [generator for generator in generators if isinstance(generator, torch.Generator)]


def make_augmentation(name: str | None, seed: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The named training augmentation, seeded: ``None``, ``"flip-shift"`` (:class:`RandomFlipShift`)
    or ``"flip-shift+contrast"`` (then :class:`RandomContrast`)."""
    if name is None:
        return None
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be None or one of {AUGMENTATIONS}, got {name!r}")
    if name == "flip-shift":
        return RandomFlipShift(seed=seed)
    return compose(RandomFlipShift(seed=seed), RandomContrast(seed=seed + 1))


#: Names accepted by :func:`make_augmentation` (and ``sodeep brainage synthetic --augment``).
AUGMENTATIONS = ("flip-shift", "flip-shift+contrast")
