"""Brain-age tables shipped inside the package (``sodeep/brainage/data/``, provenance and licence
in its README.md), read with :mod:`importlib.resources` so they are found in a clone and in an
installed package alike.

Example:
    >>> from sodeep.brainage.tables import read_age_table
    >>> table = read_age_table(bundled_table_path("fcon1000"))
    >>> len(table), len(table.feature_names), len(set(table.sites))
    (1078, 150, 23)
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

#: Name -> file in ``sodeep/brainage/data``.  ``fcon1000``: FreeSurfer Destrieux cortical thickness
#: of 1,078 subjects of the 1000 Functional Connectomes Project (23 sites, ages 7.9-85).
BUNDLED_DATASETS = {"fcon1000": "fcon1000_destrieux_thickness.csv"}
#: The table ``sodeep brainage tabular`` reads when given neither ``--dataset`` nor ``--csv``.
DEFAULT_DATASET = "fcon1000"


def bundled_table_path(name: str = DEFAULT_DATASET) -> Path:
    """Path of the bundled table ``name`` (a key of :data:`BUNDLED_DATASETS`)."""
    if name not in BUNDLED_DATASETS:
        close = difflib.get_close_matches(name, list(BUNDLED_DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; bundled: {sorted(BUNDLED_DATASETS)}")
    resource = resources.files("sodeep.brainage").joinpath("data").joinpath(BUNDLED_DATASETS[name])
    if not resource.is_file():
        raise FileNotFoundError(f"the bundled table {name!r} is missing from this installation (no {resource})")
    return Path(str(resource))
