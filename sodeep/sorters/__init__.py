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

import difflib
import inspect
from typing import Any

from sodeep.sorters.base import FixedTemperatureSorter, Sorter, check_scores  # noqa: F401 (importable, not exported)
from sodeep.sorters.conv import ConvSorter
from sodeep.sorters.original import OriginalCNNSorter, OriginalLSTMLargeSorter
from sodeep.sorters.pairwise import PairwiseSigmoidSorter, pairwise_sigmoid_rank
from sodeep.sorters.relaxed import NeuralSortSorter, SoftSortSorter, neuralsort_rank, softsort_rank

_BUILT_IN: dict[str, type[Sorter]] = {
    cls.architecture: cls
    for cls in (
        ConvSorter,
        PairwiseSigmoidSorter,
        NeuralSortSorter,
        SoftSortSorter,
        OriginalCNNSorter,
        OriginalLSTMLargeSorter,
    )
}


class SorterRegistry(dict):
    """Architecture name -> sorter class, where a class of one's own is registered
    (``SORTERS[name] = cls``).  The built-in names stay the built-in classes': the shipped
    checkpoints and the rank losses' default sorter are loaded by them, so registering another
    class under one is a ``ValueError``."""

    def __setitem__(self, name: str, cls: type[Sorter]) -> None:
        built_in = _BUILT_IN.get(name)
        if built_in is not None and cls is not built_in:
            raise ValueError(
                f"{name!r} is the architecture of sodeep's built-in {built_in.__name__}, by which the shipped "
                f"checkpoints and the rank losses' default sorter load; register {getattr(cls, '__name__', cls)} "
                "under a name of its own (set its architecture to it)"
            )
        super().__setitem__(name, cls)

    def update(self, *others: Any, **named: Any) -> None:
        for name, cls in dict(*others, **named).items():
            self[name] = cls


#: Architecture name (as written in checkpoints and configs) -> sorter class.
SORTERS: SorterRegistry = SorterRegistry(_BUILT_IN)


#: How the end of an unknown architecture's message in Python begins (the command line knows the
#: built-in sorters only, and leaves it out).
REGISTER_HINT_START = " (a sorter class of your own"
REGISTER_HINT_END = "] = cls)"
REGISTER_HINT = REGISTER_HINT_START + ": register it first, sodeep.sorters.SORTERS[name" + REGISTER_HINT_END


def unknown_setting_hint(name: str, known: list[str]) -> str:
    """`` (a setting of 'conv' sorters)`` where another architecture takes ``name`` (a close
    match among ``known`` would then mislead: ``temperature_floor`` is not ``temperature``), else
    `` (did you mean ...?)`` or ``""``."""
    owners = [repr(other) for other, cls in SORTERS.items() if name in inspect.signature(cls.__init__).parameters]
    if owners:
        return f" (a setting of {', '.join(owners)} sorters)"
    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def settings_problem(cls: type[Sorter], config: dict, architecture: str) -> str | None:
    """Why ``cls(**config)`` cannot be how a checkpoint rebuilds the sorter (settings that are not
    named arguments of ``cls``, or a required one missing), or ``None``."""
    parameters = {
        name: parameter
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    unknown = sorted(set(config) - set(parameters))
    if unknown:
        known = sorted(parameters)
        described = ", ".join(f"{name!r}{unknown_setting_hint(name, known)}" for name in unknown)
        return f"unknown setting {described} for sorter {architecture!r}; known: {known}"
    missing = [
        name for name, parameter in parameters.items() if parameter.default is parameter.empty and name not in config
    ]
    return f"sorter {architecture!r} needs the settings {missing}" if missing else None


def build_sorter(architecture: str, **config) -> Sorter:
    """Build a sorter from its architecture name and keyword config (as in a checkpoint).

    Raises ``ValueError`` for an unknown architecture or an unknown config key, naming the
    known ones, and for a setting of the wrong type or range (a config is data, e.g. JSON from a
    command line).

    Example:
        >>> build_sorter("pairwise_sigmoid", temperature=0.1)
        PairwiseSigmoidSorter(temperature=0.1)
    """
    if architecture not in SORTERS:
        raise ValueError(f"unknown sorter architecture {architecture!r}; known: {sorted(SORTERS)}{REGISTER_HINT}")
    cls = SORTERS[architecture]
    problem = settings_problem(cls, config, architecture)
    if problem:
        raise ValueError(problem)
    try:
        return cls(**config)
    except TypeError as error:
        raise ValueError(str(error)) from error


__all__ = [
    "SORTERS",
    "ConvSorter",
    "FixedTemperatureSorter",
    "NeuralSortSorter",
    "SoftSortSorter",
    "neuralsort_rank",
    "softsort_rank",
    "OriginalCNNSorter",
    "OriginalLSTMLargeSorter",
    "PairwiseSigmoidSorter",
    "Sorter",
    "build_sorter",
    "pairwise_sigmoid_rank",
]
