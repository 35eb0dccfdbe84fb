"""Shipped reference phases: the MP elemental references, and MP-or-elements selection.

``stages.screening.references`` accepts two keywords besides a file path and ``store``:

* ``mp-elements``: the Materials Project GGA/GGA+U elemental references shipped with the
  package (``smoacs_flows/data/references``); stability is against the elements only;
* ``mp-or-elements``: Materials Project competing phases through mp-api when ``MP_API_KEY``
  is set (cached in the reference store), else the shipped elemental references.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources

from pymatgen.entries.computed_entries import ComputedEntry

ELEMENTS_FILE = "2023-02-07-mp-elemental-reference-entries.json.gz"
KEYWORDS = ("mp-elements", "mp-or-elements")
#: how records and reports name each kind of reference set
LABEL_ELEMENTS = "elements only (shipped MP elemental references, offline)"
LABEL_MP = "Materials Project phases (mp-api)"


def elemental_references() -> list[ComputedEntry]:
    """The shipped MP elemental reference entries, MP2020-corrected."""
    from smoacs_flows.screening.references import apply_mp2020, read_entries_file

    path = resources.files("smoacs_flows.data").joinpath("references").joinpath(ELEMENTS_FILE)
    with resources.as_file(path) as p:
        return apply_mp2020(read_entries_file(p), where=f"{ELEMENTS_FILE}: ")


def keyword_references(keyword: str, chemsys: Iterable[str]) -> tuple[list[ComputedEntry], str]:
    """Entries for ``mp-elements`` / ``mp-or-elements`` and the label of what they are."""
    if keyword == "mp-or-elements" and os.environ.get("MP_API_KEY"):
        from smoacs_flows.screening.references import (
            ReferenceStore,
            entry_chemsys,
            fetch,
            subsystems,
        )

        systems = sorted(set(chemsys))
        with ReferenceStore() as store:
            missing = [cs for cs in systems if not store.get(cs)]
            if missing:
                fetch("mp", missing, store)
            wanted = {s for cs in systems for s in subsystems(cs)}
            refs = [e for cs in systems for e in store.get(cs) if entry_chemsys(e) in wanted]
        uniq = {(entry_chemsys(e), e.entry_id): e for e in refs}
        return list(uniq.values()), LABEL_MP
    return elemental_references(), LABEL_ELEMENTS
