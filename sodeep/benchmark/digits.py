"""Multi-digit number images for the learning-to-sort task (NeuralSort, Grover et al. 2019).

A number of ``digits`` digits is rendered by concatenating, left to right, one image of each of
its digits (leading zeros included).  Digit images come from scikit-learn's bundled 8x8 digits
(no download) or from MNIST IDX files the user has (:func:`read_idx`).  Train and test pools hold
disjoint digit images, so test numbers are drawn with images the network never saw.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: IDX element types (the third byte of the magic number) -> NumPy dtype, big-endian.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class DigitPool:
    """Digit images ``(N, H, W)`` in [0, 1] (float32) and their labels ``(N,)`` (int64)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 3 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"images must be (N, H, W) and labels (N,), got {tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )
        missing = sorted(set(range(10)) - set(self.labels.unique().tolist()))
        if missing:
            raise ValueError(f"the pool has no image of digit(s) {missing}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST's format; ``.gz`` is decompressed): magic ``0 0 type ndim``, then
    ``ndim`` big-endian int32 sizes, then the data, row-major."""
    path = Path(path)
    raw = _idx_bytes(path)
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} ({int(np.prod(shape))} values), found {data.size}")
    return data.reshape(shape)


def _idx_bytes(path: Path, head: int | None = None) -> bytes:
    """The bytes of an IDX file (decompressed if ``.gz``; the first ``head`` only, if given),
    checked for the IDX magic; ``ValueError``/``FileNotFoundError`` naming ``path`` otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                raw = stream.read() if head is None else stream.read(head)
        else:
            with open(path, "rb") as stream:
                raw = stream.read() if head is None else stream.read(head)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} is not a readable IDX file ({type(error).__name__}: {error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4]!r})")
    return raw


def mnist_pool(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> DigitPool:
    """A pool from MNIST IDX files (e.g. ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{images_path} and {labels_path}: expected images (N, H, W) and labels (N,), got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if images.shape[1] != images.shape[2]:  # the scoring network reads square digits
        raise ValueError(
            f"{images_path}: digit images must be square (H == W), got {images.shape[1]}x{images.shape[2]}"
        )
    return DigitPool(torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64)))


def sklearn_digit_pools(test_fraction: float = 0.3, seed: int = 0) -> tuple[DigitPool, DigitPool]:
    """scikit-learn's 1,797 bundled 8x8 digits, split into disjoint train and test pools,
    stratified by digit (``test_fraction`` of each digit's images go to the test pool)."""
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):
        members = (labels == digit).nonzero().squeeze(-1)
        chosen = members[torch.randperm(len(members), generator=generator)]
        test_mask[chosen[: max(1, round(test_fraction * len(members)))]] = True
    return DigitPool(images[~test_mask], labels[~test_mask]), DigitPool(images[test_mask], labels[test_mask])


def number_digits(numbers: torch.Tensor, digits: int) -> torch.Tensor:
    """Decimal digits, most significant first, leading zeros kept: ``(...) -> (..., digits)``."""
    powers = 10 ** torch.arange(digits - 1, -1, -1, device=numbers.device)
    return (numbers.unsqueeze(-1) // powers) % 10


def render_numbers(numbers: torch.Tensor, pool: DigitPool, digits: int, generator: torch.Generator) -> torch.Tensor:
    """Images of ``numbers``: one random pool image per digit, concatenated left to right.

    Args:
        numbers: integers in ``[0, 10**digits)``, any shape ``S``.
        pool: where digit images come from.
        digits: digits per number.
        generator: picks the images.

    Returns:
        ``S + (H, digits * W)``, float32.
    """
    if numbers.numel() and (numbers.min() < 0 or numbers.max() >= 10**digits):
        raise ValueError(f"numbers must lie in [0, {10**digits}), got [{numbers.min()}, {numbers.max()}]")
    wanted = number_digits(numbers, digits).reshape(-1)
    # Choose, for every digit, a random image among those of its label: sort the pool by label,
    # then index a uniform offset into that label's block.
    order = pool.labels.argsort(stable=True)
    counts = torch.bincount(pool.labels, minlength=10)
    starts = torch.cumsum(counts, 0) - counts
    offsets = (torch.rand(wanted.shape, generator=generator) * counts[wanted]).long()
    chosen = pool.images[order[starts[wanted] + offsets]]  # (numbers * digits, H, W)
    height, width = pool.images.shape[1:]
    chosen = chosen.reshape(*numbers.shape, digits, height, width)
    return chosen.movedim(-3, -2).reshape(*numbers.shape, height, digits * width)


def sample_sequences(
    count: int, length: int, digits: int, pool: DigitPool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` sequences of ``length`` distinct numbers in ``[0, 10**digits)`` and their images.

    Returns:
        ``(images (count, length, H, digits * W), numbers (count, length))``.
    """
    if length > 10**digits:
        raise ValueError(f"length={length} distinct numbers do not fit in {digits} digits")
    # Distinct numbers per row (exact ranks without ties): the top-``length`` of random keys.
    keys = torch.rand(count, 10**digits, generator=generator)
    numbers = keys.topk(length, dim=-1).indices
    return render_numbers(numbers, pool, digits, generator), numbers
