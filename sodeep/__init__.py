"""sodeep: learned and exact differentiable sorters, and the rank-based losses built on them.

Importing sodeep costs torch and numpy: it parses nothing, downloads nothing, starts no logger,
and loads neither Lightning, W&B nor the brain-age application (:mod:`sodeep.brainage`).
"""

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

__version__ = "0.1.0"

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
