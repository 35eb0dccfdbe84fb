"""DFT hull: MP2020-corrected VASP energies vs MP reference entries; GPAW is not comparable."""

from __future__ import annotations

import gzip
import json

import pytest
from monty.json import MontyDecoder
from pymatgen.core import Lattice, Structure

from smoacs_flows.dft.hull import dft_hull
from smoacs_flows.dft.schema import DFTResult
from smoacs_flows.dft.vasp import parse_vasp_output


@pytest.fixture(scope="module")
def mp_elements(shared_data):
    path = shared_data / "mp" / "2023-02-07-mp-elemental-reference-entries.json.gz"
    with gzip.open(path, "rt") as fh:
        return MontyDecoder().process_decoded(json.load(fh))


def _vasp_result(structure: Structure, energy: float, incar: dict) -> DFTResult:
    return DFTResult(
        engine="vasp",
        settings={"incar": incar},
        structure=structure.as_dict(),
        formula=structure.composition.formula,
        reduced_formula=structure.composition.reduced_formula,
        n_formula_units=1,
        energy=energy,
        spin_polarised=True,
    )


def test_elemental_fe_on_the_mp_hull(mp_elements):
    ref = mp_elements["Fe"]
    fe = Structure(Lattice.cubic(2.83), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    on_hull = _vasp_result(fe, 2 * ref.energy_per_atom, {"ISPIN": 2})
    h = dft_hull(on_hull, [ref])
    assert h["comparable_to_mp"] and h["e_above_hull"] == pytest.approx(0.0, abs=1e-6)
    above = _vasp_result(fe, 2 * (ref.energy_per_atom + 0.1), {"ISPIN": 2})
    assert dft_hull(above, [ref])["e_above_hull"] == pytest.approx(0.1, abs=1e-6)
    missing = dft_hull(on_hull, [mp_elements["O"]])
    assert missing["e_above_hull"] is None and "Fe" in missing["note"]


def test_real_runs_that_mp2020_rejects_are_not_comparable(shared_data, mp_elements):
    feo = parse_vasp_output(shared_data / "vasp" / "FeO_spin")
    h = dft_hull(feo, [mp_elements["Fe"], mp_elements["O"]])
    assert h["comparable_to_mp"] is False and "U value" in h["note"]  # U=4.0, MP uses 5.3
    al = parse_vasp_output(shared_data / "vasp" / "Al_spin_static")
    h = dft_hull(al, [mp_elements["Al"]])
    assert h["comparable_to_mp"] is False and "R2SCAN" in h["note"]  # r2SCAN, not GGA


def test_gpaw_energies_are_not_comparable():
    s = Structure(Lattice.cubic(3.0), ["Al"], [[0, 0, 0]])
    r = DFTResult(
        engine="gpaw",
        structure=s.as_dict(),
        formula="Al1",
        reduced_formula="Al",
        n_formula_units=1,
        energy=-3.7,
        spin_polarised=True,
    )
    h = dft_hull(r, [])
    assert h["comparable_to_mp"] is False and h["e_above_hull"] is None
    assert "not comparable to MP" in h["note"]
