"""A faithful re-implementation of the original SoDeep per-item generator (``dataset.py``): one
NumPy sequence per ``__getitem__`` from the global NumPy RNG, ranks built with a Python sort.
Used only as the baseline of ``bench_generator.py``."""

from __future__ import annotations

import random

import numpy as np
import torch


def original_random_sequence(length: int) -> np.ndarray:
    kind = random.randint(0, 9)
    if kind in (0, 1):
        sequence = np.random.uniform(-1, 1, length)
    elif kind == 2:
        sequence = np.random.standard_normal(length)
    elif kind in (3, 4):
        a, b = np.random.rand(), np.random.rand()
        sequence = np.arange(a, b, (b - a) / length)
        if kind == 4:
            np.random.shuffle(sequence)
    elif kind in (5, 6, 7):
        split = random.randint(1, length)
        first = np.random.rand(split) * 2.0 - 1
        second = np.random.standard_normal(length - split) if kind != 7 else np.random.uniform(-1, 1, length - split)
        sequence = np.concatenate([first, second])
    elif kind == 8:
        split = random.randint(1, length)
        a, b = np.random.rand(), np.random.rand()
        head = np.arange(a, b, (b - a) / split)
        np.random.shuffle(head)
        sequence = np.concatenate([head, np.random.rand(length - split) * 2.0 - 1])
    else:
        sequence = np.arange(-1.0, 1.0, 2.0 / length)
    return sequence[:length]


def original_item(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    sequence = original_random_sequence(length)
    pairs = zip(np.argsort(sequence)[::-1], range(length))
    ranks = [(position + 1) / float(length) for _, position in sorted(pairs, key=lambda pair: pair[0])]
    return torch.FloatTensor(sequence), torch.FloatTensor(ranks)
