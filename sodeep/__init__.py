"""sodeep: learned and exact differentiable sorters, and the rank-based losses built on them.

The names below, and the submodules (``sodeep.losses``), load on first use (``sodeep.rank``,
``from sodeep import SpearmanLoss``), so that ``import sodeep`` alone costs nothing, and the
``sodeep`` command can take a Ctrl-C while torch loads.  Loading the names costs torch and numpy:
sodeep parses nothing, downloads nothing, starts no logger, and loads neither Lightning, W&B nor
the brain-age application (:mod:`sodeep.brainage`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_EXPORTS = {
    "load_sorter": "sodeep.checkpoints",
    "save_sorter": "sodeep.checkpoints",
    "SpearmanLoss": "sodeep.losses",
    "DEFAULT_RANK_CONVENTION": "sodeep.ranks",
    "rank": "sodeep.ranks",
    "ConvSorter": "sodeep.sorters",
    "NeuralSortSorter": "sodeep.sorters",
    "OriginalCNNSorter": "sodeep.sorters",
    "OriginalLSTMLargeSorter": "sodeep.sorters",
    "PairwiseSigmoidSorter": "sodeep.sorters",
    "SoftSortSorter": "sodeep.sorters",
    "Sorter": "sodeep.sorters",
    "build_sorter": "sodeep.sorters",
    "FAMILIES": "sodeep.synthetic",
    "SyntheticSequences": "sodeep.synthetic",
    "generate_sequences": "sodeep.synthetic",
}

__all__ = [
    "DEFAULT_RANK_CONVENTION",
    "FAMILIES",
    "ConvSorter",
    "NeuralSortSorter",
    "OriginalCNNSorter",
    "OriginalLSTMLargeSorter",
    "PairwiseSigmoidSorter",
    "SoftSortSorter",
    "Sorter",
    "SpearmanLoss",
    "SyntheticSequences",
    "build_sorter",
    "generate_sequences",
    "load_sorter",
    "rank",
    "save_sorter",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            # A submodule (sodeep.losses, sodeep.checkpoints) loads on first use too, so dotted
            # names work after a plain `import sodeep`.
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'sodeep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # loaded once: later lookups are plain attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and editors read
    from sodeep.checkpoints import load_sorter, save_sorter
    from sodeep.losses import SpearmanLoss
    from sodeep.ranks import DEFAULT_RANK_CONVENTION, rank
    from sodeep.sorters import (
        ConvSorter,
        NeuralSortSorter,
        OriginalCNNSorter,
        OriginalLSTMLargeSorter,
        PairwiseSigmoidSorter,
        SoftSortSorter,
        Sorter,
        build_sorter,
    )
    from sodeep.synthetic import FAMILIES, SyntheticSequences, generate_sequences
