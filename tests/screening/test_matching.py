"""Uniqueness/novelty: the fast path must equal naive pairwise StructureMatcher."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.matching import (
    naive_unique_and_novel,
    successive_minima,
    unique_and_novel,
)

from ._data import near_duplicates, perov_structures


def _swap_ab(s: Structure) -> Structure:
    """Same formula, different structure: exchange the A and B species (sites 0 and 1)."""
    t = s.copy()
    a, b = t[0].specie, t[1].specie
    t.replace(0, b)
    t.replace(1, a)
    return t


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
    fast = unique_and_novel(cands, refs)
    naive = naive_unique_and_novel(cands, refs)
    assert fast.representative == naive.representative
    assert fast.reference_match == naive.reference_match
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
