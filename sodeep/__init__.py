"""sodeep: learned and exact differentiable sorters, and the rank-based losses built on them.

Importing sodeep parses nothing, downloads nothing and starts no logger.
"""

from sodeep.checkpoints import load_sorter, save_sorter
from sodeep.losses import SpearmanLoss
from sodeep.ranks import DEFAULT_RANK_CONVENTION, rank
from sodeep.sorters import (
    ConvSorter,
    OriginalCNNSorter,
    OriginalLSTMLargeSorter,
    PairwiseSigmoidSorter,
    Sorter,
    build_sorter,
)
from sodeep.synthetic import FAMILIES, SyntheticSequences, generate_sequences

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RANK_CONVENTION",
    "FAMILIES",
    "ConvSorter",
    "OriginalCNNSorter",
    "OriginalLSTMLargeSorter",
    "PairwiseSigmoidSorter",
    "Sorter",
    "SpearmanLoss",
    "SyntheticSequences",
    "build_sorter",
    "generate_sequences",
    "load_sorter",
    "rank",
    "save_sorter",
]
