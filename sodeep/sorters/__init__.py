"""Differentiable sorters: scores ``(n,)`` or ``(B, n)`` -> ranks in :func:`sodeep.rank`'s convention.

=====================  ==========================  ================  ===============
sorter                 lengths                     permutation-      affine-
                                                   equivariant       invariant
=====================  ==========================  ================  ===============
``ConvSorter``         any ``2 <= n <= capacity``  yes               yes
``PairwiseSigmoid``    any ``n >= 2``              yes               yes
``NeuralSort``         any ``n >= 2``              yes               yes
``SoftSort``           any ``n >= 2``              yes               yes
``OriginalCNN``        one fixed ``n``             no                no
``OriginalLSTMLarge``  one fixed ``n``             no                no
=====================  ==========================  ================  ===============
"""

from sodeep.sorters.base import Sorter, check_scores
from sodeep.sorters.conv import ConvSorter
from sodeep.sorters.exact import PairwiseSigmoidSorter, pairwise_sigmoid_rank
from sodeep.sorters.original import OriginalCNNSorter, OriginalLSTMLargeSorter
from sodeep.sorters.relaxed import NeuralSortSorter, SoftSortSorter, neuralsort_rank, softsort_rank

#: Architecture name (as written in checkpoints and configs) -> sorter class.
SORTERS: dict[str, type[Sorter]] = {
    cls.architecture: cls for cls in (ConvSorter, PairwiseSigmoidSorter, OriginalCNNSorter, OriginalLSTMLargeSorter)
}


def build_sorter(architecture: str, **config) -> Sorter:
    """Build a sorter from its architecture name and keyword config (as in a checkpoint)."""
    if architecture not in SORTERS:
        raise ValueError(f"unknown sorter architecture {architecture!r}; known: {sorted(SORTERS)}")
    return SORTERS[architecture](**config)


__all__ = [
    "SORTERS",
    "ConvSorter",
    "NeuralSortSorter",
    "SoftSortSorter",
    "neuralsort_rank",
    "softsort_rank",
    "OriginalCNNSorter",
    "OriginalLSTMLargeSorter",
    "PairwiseSigmoidSorter",
    "Sorter",
    "build_sorter",
    "check_scores",
    "pairwise_sigmoid_rank",
]
