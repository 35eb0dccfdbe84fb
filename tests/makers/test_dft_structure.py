"""The structure sent to DFT: MLIP-relaxed, symmetrised within ``stages.dft.symprec``."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from smoacs_flows.makers.stages import dft_structure
from tests.makers._campaign import TEMPLATES


def _distorted() -> tuple[Structure, Structure]:
    s = Structure.from_file(TEMPLATES / "half_heusler_C1b.cif")
    s = SpacegroupAnalyzer(s).get_primitive_standard_structure()
    d = s.copy()
    rng = np.random.default_rng(0)
    for i in range(len(d)):
        d.translate_sites([i], rng.normal(0, 0.02, 3), frac_coords=False)
    return s, d


def test_symmetrised_within_symprec():
    ideal, distorted = _distorted()
    rec = {"structure": ideal.as_dict(), "screening": {"relaxed": distorted.as_dict()}}
    assert SpacegroupAnalyzer(distorted, symprec=1e-3).get_space_group_number() == 1
    sym = dft_structure(rec, symprec=0.1)
    sga = SpacegroupAnalyzer(sym, symprec=1e-3)
    assert sga.get_space_group_number() == SpacegroupAnalyzer(ideal).get_space_group_number()
    assert len(sym) == len(distorted)
    assert sym.composition == distorted.composition
    assert abs(sym.volume - distorted.volume) / distorted.volume < 0.02


def test_kept_as_relaxed_without_symprec():
    ideal, distorted = _distorted()
    rec = {"structure": ideal.as_dict(), "screening": {"relaxed": distorted.as_dict()}}
    assert dft_structure(rec, symprec=None) == distorted
    assert dft_structure({"structure": ideal.as_dict()}) == ideal
