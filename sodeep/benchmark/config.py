"""Settings of ``sodeep bench``: one dataclass, the only source of defaults (CLI and Python)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

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
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown part(s) {unknown}; known: {list(PARTS)}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if any(seed < 0 for seed in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        if len(set(self.parts)) != len(self.parts):
            raise ValueError(f"parts must not repeat, got {list(self.parts)}")
        if self.mnist is not None and "sorting" in self.parts:
            for path in self.mnist:
                if not Path(path).is_file():
                    raise ValueError(f"MNIST file {path} not found (--mnist IMAGES LABELS: the train-*-idx files)")
        if self.sorting_settings not in ("grid", "default"):
            raise ValueError(f"sorting_settings must be 'grid' or 'default', got {self.sorting_settings!r}")
        for name in ("workers", "speed_rounds", "sorting_steps", "regression_steps", "fidelity_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def quick(cls, **overrides) -> BenchConfig:
        """A smoke run of every part: 1-2 minutes on 2 CPU cores."""
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
