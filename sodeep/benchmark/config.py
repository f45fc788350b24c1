"""Settings of ``sodeep bench``: one dataclass, the only source of defaults (CLI and Python)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

from sodeep.checks import check_integer
from sodeep.config import MAX_SEED

PARTS = ("speed", "fidelity", "sorting", "regression")


@dataclass
class BenchConfig:
    """Everything the benchmark runs; :meth:`quick` is the smoke-test variant."""

    out: str = "runs/bench"
    parts: tuple[str, ...] = PARTS
    seeds: tuple[int, ...] = (0, 1, 2)
    #: Worker processes for the learning-to-sort trainings (one thread each).
    workers: int = 2
    # Speed: every (n, B) cell, forward and forward+backward.
    speed_lengths: tuple[int, ...] = (8, 32, 100, 256, 1000, 4096)
    speed_batches: tuple[int, ...] = (1, 32, 256)
    #: Interleaved rounds per cell; each ranker's time is the median of its rounds.
    speed_rounds: int = 7
    #: A timed block repeats a call until it lasts about this long (timer resolution, noise).
    speed_block_seconds: float = 0.01
    #: A ranker whose first call in a cell takes longer is timed once there and skipped at larger n.
    speed_max_call_seconds: float = 2.0
    #: A ranker whose largest intermediate at (B, n) exceeds this many elements is left out there.
    max_elements: float = 2.0**26
    # Fidelity: Spearman and rank error per distribution and n.
    fidelity_lengths: tuple[int, ...] = (8, 100, 1000)
    fidelity_sequences: int = 32
    # Learning to sort (multi-digit images).
    sorting_lengths: tuple[int, ...] = (3, 5, 7, 9, 15)
    sorting_digits: int = 4
    sorting_steps: int = 600
    sorting_images_per_step: int = 256
    sorting_learning_rate: float = 3e-3
    sorting_test_sequences: int = 1000
    sorting_validation_sequences: int = 300
    #: ``"grid"``: every family's small grid (default first); ``"default"``: defaults only.
    sorting_settings: str = "grid"
    #: MNIST IDX files ``(images, labels)`` to use instead of scikit-learn's 8x8 digits.
    mnist: tuple[str, str] | None = None
    # Downstream regression with SpearmanLoss (batch = the original sorters' n).
    regression_steps: int = 300
    regression_batch: int = 100
    regression_learning_rate: float = 1e-2

    def __post_init__(self) -> None:
        if not isinstance(self.out, (str, os.PathLike)):
            raise TypeError(f"out must be a folder path (str or Path), got {type(self.out).__name__} {self.out!r}")
        if isinstance(self.out, str):
            self.out = os.path.expanduser(self.out)  # ~/bench in the home folder
        for name in ("parts", "seeds", "speed_lengths", "speed_batches", "fidelity_lengths", "sorting_lengths"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise TypeError(f"{name} must be a list or tuple, got {type(value).__name__} {value!r}")
            if not value:
                raise ValueError(f"{name} must name at least one entry")
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown part(s) {unknown}; known: {list(PARTS)}")
        integers = all(
            isinstance(seed, Integral) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED for seed in self.seeds
        )
        if not integers or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers in 0..{MAX_SEED}, got {list(self.seeds)}")
        if len(set(self.parts)) != len(self.parts):
            raise ValueError(f"parts must not repeat, got {list(self.parts)}")
        for name, shortest in (
            ("speed_lengths", 2),
            ("fidelity_lengths", 2),
            ("sorting_lengths", 2),
            ("speed_batches", 1),
        ):
            for value in getattr(self, name):
                check_integer(value, f"each of {name}", shortest)
            if len(set(getattr(self, name))) != len(getattr(self, name)):  # each would run twice
                raise ValueError(f"{name} must not repeat, got {list(getattr(self, name))}")
        if self.mnist is not None:  # recorded in the settings whatever the parts: a path that names nothing is refused
            for path in self.mnist:
                if not Path(path).is_file():
                    what = "is a folder, not a file" if Path(path).is_dir() else "not found"
                    raise ValueError(f"MNIST file {path} {what} (mnist= takes the images and labels train-*-idx files)")
        if self.sorting_settings not in ("grid", "default"):
            raise ValueError(f"sorting_settings must be 'grid' or 'default', got {self.sorting_settings!r}")
        for name in (
            "workers",
            "speed_rounds",
            "sorting_steps",
            "regression_steps",
            "fidelity_sequences",
            "sorting_digits",
            "sorting_images_per_step",
            "sorting_test_sequences",
            "sorting_validation_sequences",
            "regression_batch",
        ):
            check_integer(getattr(self, name), name, 1)
        for length in self.sorting_lengths:  # a sequence holds distinct numbers of sorting_digits digits
            check_integer(length, "each of sorting_lengths", 2, 10**self.sorting_digits)
        for name in (
            "speed_block_seconds",
            "speed_max_call_seconds",
            "max_elements",
            "sorting_learning_rate",
            "regression_learning_rate",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    @classmethod
    def quick(cls, **overrides) -> BenchConfig:
        """A smoke run of every part: 1-2 minutes on 2 idle CPU cores."""
        settings = dict(
            seeds=(0,),
            speed_lengths=(8, 100, 1000),
            speed_batches=(32,),
            speed_rounds=3,
            speed_block_seconds=0.005,
            fidelity_lengths=(100,),
            fidelity_sequences=16,
            sorting_lengths=(5,),
            sorting_steps=300,
            sorting_test_sequences=300,
            sorting_validation_sequences=100,
            sorting_settings="default",
            regression_steps=100,
        )
        settings.update(overrides)
        return cls(**settings)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
