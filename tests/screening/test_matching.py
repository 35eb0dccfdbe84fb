"""Uniqueness/novelty: the fast path must equal naive pairwise StructureMatcher."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.matching import (
    _fit,
    _replay_fit,
    make_matcher,
    naive_unique_and_novel,
    prepare,
    successive_minima,
    unique_and_novel,
)
from smoacs_flows.screening.matching.fit import pair_decision
from smoacs_flows.screening.matching.kernel import FIT, NO_FIT, UNDECIDED
from smoacs_flows.screening.matching.reduce import mapping_candidates, niggli_reduced_lattice

from ._data import near_duplicates, perov_structures, reduce_like_pymatgen


def _swap_ab(s: Structure) -> Structure:
    """Same formula, different structure: exchange the A and B species (sites 0 and 1)."""
    t = s.copy()
    a, b = t[0].specie, t[1].specie
    t.replace(0, b)
    t.replace(1, a)
    return t


def _fast_equals_naive(cands: list, refs: list) -> tuple:
    """Run both paths and assert the same representatives and reference matches."""
    fast = unique_and_novel(cands, refs)
    naive = naive_unique_and_novel(cands, refs)
    assert fast.representative == naive.representative
    assert fast.reference_match == naive.reference_match
    return fast, naive


def test_successive_minima_of_known_lattices():
    # fcc conventional a=4: primitive minima all a/√2
    fcc = Structure(
        Lattice.cubic(4.0), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )
    prim = fcc.get_primitive_structure()
    assert np.allclose(successive_minima(prim.lattice.matrix), [4 / 2**0.5] * 3)
    # a skewed basis of the simple tetragonal lattice 3, 3, 5
    m = np.array([[3, 0, 0], [3, 3, 0], [6, 3, 5]], float)
    assert np.allclose(successive_minima(m), [3, 3, 5])


def test_equals_naive_on_perov5_and_near_duplicates():
    rng = np.random.default_rng(0)
    base = perov_structures("val", n=12)
    cands: list[Structure] = []
    for s in base[:8]:
        cands.extend(near_duplicates(s, rng))
        cands.append(_swap_ab(s))
    # heavier noise: some of these stop matching, which the fast path must reproduce
    for s in base[:6]:
        h = s.copy()
        h.perturb(0.6, min_distance=0.3)
        cands.append(h)
    order = rng.permutation(len(cands))
    cands = [cands[i] for i in order]
    refs = base[4:12] + [_swap_ab(s) for s in base[8:10]]
    fast, naive = _fast_equals_naive(cands, refs)
    # the test must exercise both outcomes of each question
    assert 8 < sum(fast.unique) < len(cands)
    assert 0 < sum(fast.novel) < len(cands)
    assert fast.n_fit_calls < naive.n_fit_calls


def test_parallel_equals_serial_and_no_refs():
    rng = np.random.default_rng(1)
    cands = []
    for s in perov_structures("test", n=6):
        cands.extend(near_duplicates(s, rng)[:3])
    a = unique_and_novel(cands, None, n_jobs=2)
    b = unique_and_novel(cands, None, n_jobs=1)
    assert a.representative == b.representative
    assert a.reference_match is None and a.novel is None
    assert a.representative == naive_unique_and_novel(cands).representative


def _perov_test_split(shared_data: Path, n: int) -> list[Structure]:
    """The first ``n`` real perov_5 test-split structures (CIF column)."""
    csv.field_size_limit(10**7)
    with open(shared_data / "perov_5" / "test.csv", newline="") as fh:
        rows = list(itertools.islice(csv.DictReader(fh), n))
    return [Structure.from_str(r["cif"], fmt="cif") for r in rows]


def _same_formula_family(templates: list[Structure], rng: np.random.Generator) -> list[Structure]:
    """One formula (SrTiO3) on every template: genuinely different structures that share a
    reduced formula, plus near-duplicates and variants near the stol/ltol/angle limits."""
    out = []
    for t in templates:
        s = t.copy()
        # 5-site ABX3 cells: species by role (A most isolated, B farthest from A, rest X)
        d = s.distance_matrix + np.eye(len(s)) * 1e9
        a = int(np.argmax(d.min(axis=1)))
        b = max((i for i in range(len(s)) if i != a), key=lambda i: d[a, i])
        s = Structure(
            s.lattice,
            ["Sr" if i == a else "Ti" if i == b else "O" for i in range(len(s))],
            s.frac_coords,
        )
        out.append(s)
        swap = s.copy()
        swap.replace(a, "Ti")
        swap.replace(b, "Sr")
        out.append(swap)
        for amp in (0.02, 0.3, 0.45):  # 0.3-0.45 Å sits around stol·(V/n)^(1/3) ≈ 0.7 Å
            p = s.copy()
            p.perturb(amp)
            out.append(p)
        for strain in (0.15, 0.19, 0.21):  # around ltol = 0.2 on one axis
            st = s.copy()
            st.apply_strain([strain, 0, 0])
            out.append(st)
        sh = s.copy()  # shear a few degrees: around angle_tol = 5
        m = sh.lattice.matrix.copy()
        m[1] += (
            np.tan(np.radians(rng.uniform(3.5, 6.5)))
            * np.linalg.norm(m[1])
            * (m[0] / np.linalg.norm(m[0]))
        )
        out.append(Structure(Lattice(m), sh.species, sh.frac_coords))
        sc = s.copy()
        sc.make_supercell([1, 2, 1])
        sc.translate_sites(list(range(len(sc))), rng.random(3))
        out.append(Structure.from_sites([sc[i] for i in rng.permutation(len(sc))]))
    return out


def test_fast_fit_equals_structurematcher_fit_pairwise(shared_data):
    """Every same-formula pair: the filtered replay equals plain ``StructureMatcher.fit``
    (on the original structures one way round, on the reduced cells the other way)."""
    rng = np.random.default_rng(7)
    family = _same_formula_family(_perov_test_split(shared_data, 5), rng)
    sm = make_matcher()
    prepared = [prepare(s, sm) for s in family]
    for p in prepared:
        p.reduce(sm)
    n_true = n_pairs = 0
    for i, j in itertools.combinations(range(len(family)), 2):
        want = sm.fit(family[i], family[j])
        assert _fit(sm, prepared[i], prepared[j]) == want, (i, j)
        back = sm.fit(prepared[j].reduced, prepared[i].reduced, skip_structure_reduction=True)
        assert _fit(sm, prepared[j], prepared[i]) == back, (j, i)
        n_pairs += 1
        n_true += want
    # the unfiltered replay is pymatgen's own fit on the reduced cells
    for i in range(0, len(family), 7):
        for j in range(len(family)):
            a, b = prepared[i].reduced, prepared[j].reduced
            assert _replay_fit(sm, a, b) == sm.fit(a, b, skip_structure_reduction=True)
    assert 0 < n_true < n_pairs  # both outcomes exercised
    assert n_pairs - n_true > n_pairs // 3  # mostly the hard case: same formula, no match


def test_unique_and_novel_equals_naive_on_perov5_test_split(shared_data):
    rng = np.random.default_rng(3)
    templates = _perov_test_split(shared_data, 30)
    cands = _same_formula_family(templates[:6], rng)
    for s in templates[6:14]:
        cands.extend(near_duplicates(s, rng)[:4])
        cands.append(_swap_ab(s))
    cands = [cands[i] for i in rng.permutation(len(cands))]
    refs = templates[10:30] + _same_formula_family(templates[6:8], rng)[::3]
    fast, _ = _fast_equals_naive(cands, refs)
    assert 0 < sum(fast.unique) < len(cands)
    assert 0 < sum(fast.novel) < len(cands)


def test_reduction_equals_pymatgen_bit_for_bit(shared_data):
    """The cached reduction (gcd-1 shortcut, Niggli replayed) builds exactly the arrays of
    pymatgen's own ``StructureMatcher._get_reduced_structure``; supercells take pymatgen's path."""
    rng = np.random.default_rng(11)
    structures = _same_formula_family(_perov_test_split(shared_data, 8), rng)
    for s in _perov_test_split(shared_data, 40)[8:]:
        structures.extend(near_duplicates(s, rng))
    sm = make_matcher()
    shortcut = 0
    for s in structures:
        shortcut += reduce_like_pymatgen(sm, s)[1]  # the shortcut builds no Structure
    assert 0 < shortcut < len(structures)  # both paths exercised (supercells are not gcd 1)


def test_mapping_candidates_equal_pymatgen_find_all_mappings(shared_data):
    """The vectorised mapping search yields pymatgen's ``find_all_mappings`` (same order, same
    aligned matrices and scale matrices, bit for bit) at the matcher's tolerances and at the
    Niggli step's; the Niggli reduction built on it equals pymatgen's bit for bit."""
    rng = np.random.default_rng(5)
    lattices = [s.lattice for s in _perov_test_split(shared_data, 40)]
    lattices += [Lattice(rng.normal(size=(3, 3)) * 3 + np.eye(3) * 2) for _ in range(40)]
    n_maps = 0
    for a, b in zip(lattices, lattices[1:] + lattices[:1]):
        b = Lattice(b.matrix * (a.volume / b.volume) ** (1 / 3))  # scaled as fit() does
        for ltol, atol in ((0.2, 5), (1e-5, 1)):
            want = list(a.find_all_mappings(b, ltol, atol, skip_rotation_matrix=True))
            got = mapping_candidates(a, b, ltol, atol)
            aligned, scale = got if got is not None else (np.empty((0, 3, 3)), np.empty(0))
            keep = [n for n, s in enumerate(scale) if abs(np.linalg.det(s)) >= 1e-8]
            assert len(keep) == len(want)
            for n, (lat, _, sc) in zip(keep, want):
                assert np.array_equal(aligned[n], lat.matrix)
                assert np.array_equal(scale[n], sc)
            n_maps += len(want)
        assert np.array_equal(
            niggli_reduced_lattice(a).matrix, a.get_niggli_reduced_lattice().matrix
        )
    assert n_maps > 100


def test_compiled_pair_test_agrees_with_pymatgen_fit(shared_data):
    """The compiled per-pair test says FIT only where pymatgen's own ``StructureMatcher.fit``
    is True and NO_FIT only where it is False, never drops a mapping a match needs (the
    replay on what it keeps is ``fit``), and meets each outcome on this data: real perov_5
    cells, perturbed around stol, strained around ltol, sheared around angle_tol, swapped."""
    rng = np.random.default_rng(21)
    family = _same_formula_family(_perov_test_split(shared_data, 9)[6:], rng)
    for s in family[::7]:  # heavy noise (0.6-0.7 Å ≈ stol·(V/n)^(1/3)): ambiguous pairings
        for amp in (0.6, 0.7):
            p = s.copy()
            p.perturb(amp, min_distance=0.3)
            family.append(p)
    sm = make_matcher()
    prepared = [prepare(s, sm) for s in family]
    for p in prepared:
        p.reduce(sm)
    seen = {NO_FIT: 0, FIT: 0, UNDECIDED: 0}
    for a in prepared:
        for b in prepared:
            if a.n_sites != b.n_sites:
                continue
            want = sm.fit(a.reduced, b.reduced, skip_structure_reduction=True)
            status, keep = pair_decision(sm, a, b)
            seen[status] += 1
            if status == FIT:
                assert want, "certified a pair pymatgen does not match"
            elif status == NO_FIT:
                assert not want, "rejected a pair pymatgen matches"
            else:
                assert keep and _replay_fit(sm, a.reduced, b.reduced, keep) == want
            assert _fit(sm, a, b) == want
    assert min(seen.values()) > 0, seen  # every outcome exercised
