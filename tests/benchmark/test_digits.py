import gzip
import struct

import numpy as np
import pytest
import torch

from sodeep.benchmark.digits import (
    DigitPool,
    mnist_pool,
    number_digits,
    read_idx,
    render_numbers,
    sample_sequences,
    sklearn_digit_pools,
)


def tiny_pool() -> DigitPool:
    # Digit d's images are constant d + copy/10: which image was used is readable from a pixel.
    images = torch.stack([torch.full((2, 3), d + copy / 10) for d in range(10) for copy in range(3)])
    labels = torch.tensor([d for d in range(10) for _ in range(3)])
    return DigitPool(images, labels)


def test_number_digits_keeps_leading_zeros():
    assert number_digits(torch.tensor([7, 1234, 50]), 4).tolist() == [[0, 0, 0, 7], [1, 2, 3, 4], [0, 0, 5, 0]]


def test_a_number_renders_as_its_digit_images_concatenated():
    pool = tiny_pool()
    numbers = torch.tensor([[907, 12], [0, 999]])
    images = render_numbers(numbers, pool, 3, torch.Generator().manual_seed(0))
    assert images.shape == (2, 2, 2, 9)
    for b in range(2):
        for j in range(2):
            digits = [int(c) for c in f"{numbers[b, j].item():03d}"]
            for position, digit in enumerate(digits):
                block = images[b, j, :, 3 * position : 3 * position + 3]
                assert torch.all(block == block[0, 0]) and int(block[0, 0].floor()) == digit


def test_sklearn_pools_are_disjoint_and_labelled():
    train, test = sklearn_digit_pools(test_fraction=0.3, seed=0)
    assert len(train.labels) + len(test.labels) == 1797
    train_rows = {tuple(image.flatten().tolist()) for image in train.images}
    test_rows = [tuple(image.flatten().tolist()) for image in test.images]
    shared = sum(row in train_rows for row in test_rows)
    # scikit-learn's digits hold a few exact duplicates; a split by image keeps them rare.
    assert shared <= 5
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))
    from sklearn.datasets import load_digits

    bunch = load_digits()
    index = {
        tuple((image / 16.0).astype(np.float32).flatten().tolist()): label
        for image, label in zip(bunch.images, bunch.target)
    }
    assert all(
        index[tuple(image.flatten().tolist())] == label for image, label in zip(test.images, test.labels.tolist())
    )


def test_sequences_hold_distinct_numbers_in_range():
    images, numbers = sample_sequences(20, 7, 2, tiny_pool(), torch.Generator().manual_seed(1))
    assert images.shape == (20, 7, 2, 6)
    assert numbers.min() >= 0 and numbers.max() < 100
    assert all(len(set(row.tolist())) == 7 for row in numbers)


def write_idx(path, array: np.ndarray, type_byte: int, compress: bool) -> None:
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_and_mnist_pool(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 4, 5), dtype=np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"images{suffix}", images, 0x08, compress)
    write_idx(tmp_path / f"labels{suffix}", labels, 0x08, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"labels{suffix}"), labels)
    floats = rng.normal(size=(3, 2)).astype(np.float32)
    write_idx(tmp_path / "floats", floats, 0x0D, False)
    np.testing.assert_array_equal(read_idx(tmp_path / "floats"), floats)
    with pytest.raises(ValueError, match=r"digit images must be square \(H == W\), got 4x5"):
        mnist_pool(tmp_path / f"images{suffix}", tmp_path / f"labels{suffix}")  # before any folder is made
    square = images[:, :, :4]
    write_idx(tmp_path / f"square{suffix}", square, 0x08, compress)
    pool = mnist_pool(tmp_path / f"square{suffix}", tmp_path / f"labels{suffix}")
    torch.testing.assert_close(pool.images, torch.from_numpy(square / 255.0).float())
    assert pool.labels.tolist() == labels.tolist()


def test_idx_errors_name_the_problem(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 2), np.uint8), 0x08, False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")
