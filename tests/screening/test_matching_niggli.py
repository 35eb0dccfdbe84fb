"""The compiled Niggli replay against pymatgen itself: same sphere points in the same order,
same reduced lattice bit for bit, on real perov_5 cells and strained, sheared, skewed (other
bases of the same lattice), supercell and random lattices."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import IStructure, Lattice, Structure

from smoacs_flows.screening.matching import reduce as mr
from smoacs_flows.screening.matching.niggli import (
    LLL_AMBIGUOUS,
    OK,
    scale_of,
    sphere_points,
)
from smoacs_flows.screening.matching.reduce import lattice_parameters, niggli_reduced_lattice

from ._data import reduce_like_pymatgen, unimodular


def _perov_structures(shared_data: Path, n: int) -> list[Structure]:
    """The first ``n`` perov_5 test-split structures."""
    csv.field_size_limit(10**7)
    with open(shared_data / "perov_5" / "test.csv", newline="") as fh:
        rows = list(itertools.islice(csv.DictReader(fh), n))
    return [Structure.from_str(r["cif"], fmt="cif") for r in rows]


def _perov_lattices(shared_data: Path, n: int) -> list[Lattice]:
    """Lattices of the first ``n`` perov_5 test-split structures."""
    return [s.lattice for s in _perov_structures(shared_data, n)]


def _lattice_zoo(shared_data: Path, n_perov: int, seed: int) -> list[Lattice]:
    """Real cells and variants that exercise every branch of the reduction."""
    rng = np.random.default_rng(seed)
    out = []
    for lat in _perov_lattices(shared_data, n_perov):
        m = lat.matrix
        out.append(lat)
        out.append(Lattice(m * rng.uniform(0.97, 1.03)))  # sun_scale's scaling
        out.append(Lattice(m @ np.diag(1 + rng.uniform(-0.2, 0.2, 3))))  # strain
        sh = m.copy()
        sh[1] += rng.uniform(-0.5, 0.5) * m[0]  # shear (a genuinely different lattice)
        out.append(Lattice(sh))
        out.append(Lattice(unimodular(rng) @ m))  # the same lattice in a skewed basis
        out.append(Lattice(np.diag([2, 1, 1]) @ m))  # supercells
        out.append(Lattice(np.diag([1, 2, 2]) @ unimodular(rng) @ m))
        out.append(Lattice(np.asfortranarray(m)))  # strained cells come F-ordered
    for _ in range(n_perov):
        out.append(Lattice(rng.normal(size=(3, 3)) * 3 + np.eye(3) * 2))
    return out


def test_sphere_points_are_pymatgens_in_its_order(shared_data):
    """``sphere_points`` yields ``get_points_in_sphere``'s images and distances bit for bit and
    in the same order (the order decides which of equal-length vectors the reduction takes)."""
    lattices = _lattice_zoo(shared_data, 12, seed=3)
    n_points = 0
    for lat in lattices:
        for r in (1.0, max(lat.get_niggli_reduced_lattice().abc) * 1.00001, 9.0):
            want_f, want_d, _, _ = lat.get_points_in_sphere(
                [[0, 0, 0]], [0, 0, 0], r, zip_results=False
            )
            ints, dist, _, _, _ = sphere_points(lat.matrix, r)
            assert np.array_equal(ints.astype(float), want_f)
            assert np.array_equal(dist, want_d)
            n_points += len(dist)
    assert n_points > 3000


def test_niggli_reduced_lattice_bit_for_bit(shared_data):
    """``niggli_reduced_lattice`` equals ``Lattice.get_niggli_reduced_lattice`` exactly, and the
    compiled replay (not pymatgen's fallback) decided almost all of them (some skewed bases of
    cubic cells hit exact halves in the LLL step: there pymatgen's own LLL matrix is used);
    ``lattice_parameters`` gives pymatgen's abc, angles and volume of the result exactly."""
    lattices = _lattice_zoo(shared_data, 150, seed=7)
    replayed = lll_ties = 0
    for lat in lattices:
        want = lat.get_niggli_reduced_lattice()
        got = niggli_reduced_lattice(lat)
        assert np.array_equal(got.matrix, want.matrix)
        abc, angles, volume = lattice_parameters(got.matrix)
        assert np.array_equal(abc, want.abc) and np.array_equal(angles, want.angles)
        assert volume == want.volume
        status = scale_of(lat.matrix)[0]
        if status == LLL_AMBIGUOUS:  # pymatgen's LLL, the rest replayed
            status = scale_of(lat.matrix, lat.lll_matrix)[0]
            lll_ties += 1
        replayed += status == OK
    assert len(lattices) > 1000
    assert 0 < lll_ties < 0.1 * len(lattices)
    assert replayed >= 0.98 * len(lattices)


def test_pymatgen_methods_restored_after_supercell_reduction(shared_data):
    """The supercell path runs pymatgen's primitive search with the compiled Niggli step and
    the gcd-1 shortcut patched in; pymatgen's own methods are back afterwards, also after an
    error, and the shortcut equals pymatgen's answer on a gcd-1 cell."""
    s = _perov_structures(shared_data, 1)[0]
    sc = s.copy()
    sc.make_supercell([2, 1, 1])
    sm = mr.make_matcher()
    p = mr.prepare(sc, sm)
    p.reduce(sm)
    assert p.n_sites == len(s)  # reduced to the primitive cell, through pymatgen's search
    assert Lattice.get_niggli_reduced_lattice is mr._PYMATGEN_NIGGLI
    assert IStructure.get_primitive_structure is mr._PYMATGEN_PRIMITIVE
    with pytest.raises(RuntimeError), mr._compiled_niggli_in_pymatgen():
        raise RuntimeError
    assert Lattice.get_niggli_reduced_lattice is mr._PYMATGEN_NIGGLI
    assert IStructure.get_primitive_structure is mr._PYMATGEN_PRIMITIVE
    # two threads, overlapping: the swap stays until the last one leaves
    import threading

    a_in, a_out, b_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def a() -> None:
        with mr._compiled_niggli_in_pymatgen():
            a_in.set()
            a_out.wait(10)

    def b() -> None:
        a_in.wait(10)
        with mr._compiled_niggli_in_pymatgen():
            a_out.set()
            ta.join(10)  # A has left; B is still inside
            seen.append(Lattice.get_niggli_reduced_lattice is mr._compiled_niggli)
        b_out.set()

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start()
    tb.start()
    tb.join(20)
    assert b_out.is_set() and seen == [True]
    assert Lattice.get_niggli_reduced_lattice is mr._PYMATGEN_NIGGLI
    assert IStructure.get_primitive_structure is mr._PYMATGEN_PRIMITIVE
    want = s.get_primitive_structure()
    got = mr._primitive_structure(s)
    assert np.array_equal(got.lattice.matrix, want.lattice.matrix)
    assert np.array_equal(got.frac_coords, want.frac_coords)


def test_reduction_bit_for_bit_with_properties_disorder_and_supercells(shared_data):
    """``Prepared.reduce`` equals pymatgen's ``_get_reduced_structure`` (lattice, coordinates,
    species) for cells with site properties, labels, a disordered site, an oxidation state,
    their supercells (primitive search), and strained (F-ordered) supercells."""
    from pymatgen.core import Species

    rng = np.random.default_rng(3)
    structures = []
    for s in _perov_structures(shared_data, 6):
        a = s.copy()
        a.add_site_property("magmom", list(rng.random(len(a))))
        b = s.copy()
        b.replace(0, {"Fe": 0.5, "Ni": 0.5})
        d = s.copy()
        d.replace(1, Species("Fe", 2))
        lab = Structure(
            s.lattice, s.species, s.frac_coords, labels=[f"L{i}" for i in range(len(s))]
        )
        st = s.copy()
        st.apply_strain([0.05, -0.02, 0.0])
        for x in (a, b, d, lab, st):
            y = x.copy()
            y.make_supercell([1, 2, 1])
            y.perturb(0.01)
            structures += [x, y]
    sm = mr.make_matcher()
    supercells = 0
    for s in structures:
        p, _ = reduce_like_pymatgen(sm, s)
        supercells += p.n_sites < len(s)
    assert supercells >= 20  # the primitive search really ran and reduced


def test_primitive_structure_equals_pymatgens(shared_data):
    """``matching.primitive.primitive_structure`` (the translation filter vectorised) returns
    pymatgen's ``get_primitive_structure()`` exactly: supercells of determinant 2, 3 and 4,
    with noise, and gcd > 1 cells that are not supercells (one site moved)."""
    from smoacs_flows.screening.matching.primitive import primitive_structure

    rng = np.random.default_rng(5)
    cells = []
    for s in _perov_structures(shared_data, 8):
        for m in ([2, 1, 1], [1, 1, 3], [2, 2, 1], [[1, 1, 0], [-1, 1, 0], [0, 0, 1]]):
            sc = s.copy()
            sc.make_supercell(m)
            sc.perturb(0.02)
            cells.append(sc)
        broken = s.copy()
        broken.make_supercell([2, 1, 1])
        broken.translate_sites([0], [0.1, 0.05, 0.0])
        cells.append(broken)
    reduced = 0
    for c in cells:
        c = Structure.from_sites([c[i] for i in rng.permutation(len(c))])
        want = mr._PYMATGEN_PRIMITIVE(c)
        with mr._compiled_niggli_in_pymatgen():
            got = primitive_structure(c)
        assert got is not None
        assert np.array_equal(got.lattice.matrix, want.lattice.matrix)
        assert np.array_equal(got.frac_coords, want.frac_coords)
        assert [x.species for x in got] == [x.species for x in want]
        reduced += len(got) < len(c)
    assert 0.5 * len(cells) < reduced < len(cells)
