"""Test data helpers: real perov_5 structures, MP references and near-duplicate makers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PEROV = DATA / "perov_5"
MP_ELEMENTS = DATA / "mp" / "2023-02-07-mp-elemental-reference-entries.json.gz"


def perov_rows(split: str = "val", n: int = 50, start: int = 0) -> list[dict]:
    """The first ``n`` rows (from ``start``) of a perov_5 split."""
    csv.field_size_limit(10**7)
    with open(PEROV / f"{split}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows[start : start + n]


def perov_structures(split: str = "val", n: int = 50, start: int = 0) -> list[Structure]:
    """Real perov_5 structures parsed from their CIFs."""
    return [Structure.from_str(r["cif"], fmt="cif") for r in perov_rows(split, n, start)]


def near_duplicates(s: Structure, rng: np.random.Generator) -> list[Structure]:
    """Copies that StructureMatcher should (mostly) identify with ``s``: perturbed, permuted,
    supercell, translated, strained, plus an exact copy."""
    out = [s.copy()]
    p = s.copy()
    p.perturb(0.05, min_distance=0.0)
    out.append(p)
    perm = rng.permutation(len(s))
    out.append(Structure.from_sites([s[i] for i in perm]))
    sc = s.copy()
    sc.make_supercell([2, 1, 1])
    out.append(sc)
    t = s.copy()
    t.translate_sites(list(range(len(t))), rng.random(3), frac_coords=True)
    out.append(t)
    st = s.copy()
    st.apply_strain(0.03)
    out.append(st)
    return out


def reduce_like_pymatgen(matcher, s: Structure):
    """Our cached reduction of ``s`` (``prepare`` + ``Prepared.reduce``), asserted equal to
    pymatgen's own ``StructureMatcher._get_reduced_structure``: the same lattice and site
    arrays bit for bit, the same species. Returns the Prepared structure and whether the
    reduction took the shortcut that builds no Structure until asked."""
    from smoacs_flows.screening.matching.reduce import prepare

    p = prepare(s, matcher)
    matcher._get_reduced_istructure.cache_clear()  # pymatgen's lru_cache: no shared answers
    p.reduce(matcher)
    shortcut = p._reduced is None
    matcher._get_reduced_istructure.cache_clear()
    want = matcher._get_reduced_structure(Structure.from_sites(s), True, niggli=True)
    got = p.reduced
    assert np.array_equal(got.lattice.matrix, want.lattice.matrix)
    assert np.array_equal(got.frac_coords, want.frac_coords)
    assert [x.species for x in got] == [x.species for x in want]
    return p, shortcut


def unimodular(rng: np.random.Generator) -> np.ndarray:
    """A random integer matrix of determinant ±1 (product of elementary shears, a sign)."""
    u = np.diag(rng.choice([-1, 1], size=3))
    for _ in range(int(rng.integers(1, 5))):
        e = np.eye(3, dtype=int)
        i, j = rng.choice(3, size=2, replace=False)
        e[i, j] = rng.choice([-2, -1, 1, 2])
        u = e @ u
    return u
