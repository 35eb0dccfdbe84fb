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


def test_dft_refuses_the_cells_relax_refuses() -> None:
    """A cell flattened to 0.1 % of its edge product (volume 0.05 Å^3, far above the old
    1e-6 Å^3 floor) and NaN coordinates: ``dft run`` refuses them for the reason relaxation
    gives, naming the file."""
    import pytest

    from smoacs_flows.dft.structures import check_structure
    from smoacs_flows.errors import InputError
    from smoacs_flows.screening.relax import check_structure as relax_check

    flat = Structure(
        [[4, 0, 0], [0, 4, 0], [4, 4, 0.003]], ["Fe", "Al"], [[0, 0, 0], [0.5, 0.5, 0]]
    )
    assert abs(np.linalg.det(flat.lattice.matrix)) > 1e-6  # passed the old volume check
    nan = Structure(np.eye(3) * 4, ["Fe", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nan.replace(1, "Al", coords=[0.5, 0.5, float("nan")])
    for s in (flat, nan):
        why = relax_check(s)
        assert why
        with pytest.raises(InputError) as exc:
            check_structure(s, name="cell.cif")
        assert str(exc.value) == f"cell.cif: {why}"
