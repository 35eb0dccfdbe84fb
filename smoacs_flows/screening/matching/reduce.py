"""Structures prepared for matching: the comparator hash, a digest of the exact structure,
and the reduced cell ``StructureMatcher.fit`` compares, computed once per structure plus its
cached lattice vectors. The reduction is pymatgen's, bit for bit: its Niggli step replayed
(the lattice by :mod:`~smoacs_flows.screening.matching.niggli`'s compiled replay, the site
coordinates with pymatgen's arithmetic); when the per-species site counts have gcd > 1,
pymatgen's own primitive-cell search then runs on that cell (with the compiled Niggli step
swapped in for its duration); with gcd 1 that search cannot reduce anything and is skipped.
See :mod:`smoacs_flows.screening.matching` for why the fast path gives ``fit``'s answers."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element, IStructure, Lattice, Structure

from smoacs_flows.screening.matching.niggli import LLL_AMBIGUOUS, OK, scale_of
from smoacs_flows.screening.matching.primitive import TOLERANCE, primitive_structure

#: MatterGen's evaluation settings
MATCHER_SETTINGS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5}


def make_matcher() -> StructureMatcher:
    """The StructureMatcher used for uniqueness and novelty (MatterGen's settings)."""
    return StructureMatcher(**MATCHER_SETTINGS)


def successive_minima(lattice_matrix: np.ndarray) -> np.ndarray:
    """The three successive minima λ1 ≤ λ2 ≤ λ3 of a lattice (Å), by enumeration.

    Enumerates lattice vectors up to the longest Niggli-reduced length (which bounds λ3) and
    picks the shortest vector, then the shortest independent of it, then the shortest out of
    their plane.
    """
    from pymatgen.core import Lattice

    lat = Lattice(lattice_matrix)
    radius = max(lat.get_niggli_reduced_lattice().abc) * (1 + 1e-6) + 1e-8
    frac, dist, _, _ = lat.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], radius, zip_results=False)
    cart = lat.get_cartesian_coords(frac)
    order = np.argsort(dist, kind="stable")
    chosen: list[np.ndarray] = []
    minima: list[float] = []
    for i in order:
        d = dist[i]
        if d < 1e-8:
            continue
        v = cart[i]
        if len(chosen) == 1:
            if np.linalg.norm(np.cross(chosen[0], v)) < 1e-8 * d * np.linalg.norm(chosen[0]):
                continue
        elif len(chosen) == 2:
            vol = abs(np.dot(np.cross(chosen[0], chosen[1]), v))
            scale = np.linalg.norm(chosen[0]) * np.linalg.norm(chosen[1]) * d
            if vol < 1e-8 * scale:
                continue
        chosen.append(v)
        minima.append(float(d))
        if len(chosen) == 3:
            break
    return np.array(minima)


@dataclass
class Prepared:
    """A structure with its reduced form and the invariants the fast path compares."""

    structure: Structure
    key: str  # comparator hash (reduced formula)
    ident: str  # digest of the exact structure (byte-identical copies share it)
    n_sites: int = 0
    _reduced: Structure | None = field(default=None, repr=False)
    _lattice: Lattice | None = field(default=None, repr=False)
    # reduced cell data for the mapping filter; lattice vectors cached up to _radius
    _frac: np.ndarray | None = field(default=None, repr=False)
    _abc: np.ndarray | None = field(default=None, repr=False)
    _angles: np.ndarray | None = field(default=None, repr=False)
    _volume: float = field(default=0.0, repr=False)
    _radius: float = field(default=0.0, repr=False)
    _vec_int: np.ndarray | None = field(default=None, repr=False)
    _vec_len: np.ndarray | None = field(default=None, repr=False)
    _vec_unit: np.ndarray | None = field(default=None, repr=False)
    _elements: tuple[str, ...] | None = field(default=None, repr=False)

    def reduce(self, matcher: StructureMatcher) -> None:
        """Compute the matcher's reduced structure and its lattice data (once)."""
        if self._frac is not None:
            return
        plain = False  # reduced cell = the Niggli cell of self.structure, same sites
        if matcher._primitive_cell:
            lattice, frac, gcd = _niggli_step(self.structure)
            plain = gcd == 1
            if not plain:  # pymatgen's primitive search on that Niggli cell
                red = _primitive_of(self.structure, lattice, frac)
                self._reduced, lattice, frac = red, red.lattice, np.array(red.frac_coords)
        else:
            with _compiled_niggli_in_pymatgen():  # the exact reduction fit() performs
                red = matcher._get_reduced_structure(self.structure, False, niggli=True)
            self._reduced, lattice, frac = red, red.lattice, np.array(red.frac_coords)
        self._lattice = lattice
        self.n_sites = len(frac)
        self._frac = frac
        self._abc, self._angles, self._volume = lattice_parameters(lattice.matrix)
        self._elements = _site_elements(self.structure if plain else self._reduced)

    @property
    def reduced(self) -> Structure | None:
        """The reduced structure ``fit`` would compare (built on first use), None before
        :meth:`reduce`."""
        if self._reduced is None and self._frac is not None:
            self._reduced = Structure(
                self._lattice,
                self.structure.species_and_occu,
                self._frac,
                coords_are_cartesian=False,
            )
        return self._reduced

    def vectors(self, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All nonzero vectors of the reduced lattice no longer than ``radius`` (Å), cached.

        Returns integer (fractional) coordinates, lengths and unit vectors.
        """
        if radius > self._radius:
            radius = max(radius, 1.25 * self._radius)
            matrix = self._lattice.matrix
            # |n_i| <= radius / d_i, d_i the spacing of the lattice planes (1 / |row of inv.T|)
            inv_d = np.linalg.norm(np.linalg.inv(matrix), axis=0)
            n_max = np.floor(radius * inv_d).astype(int) + 1
            axes = [np.arange(-k, k + 1) for k in n_max]
            ints = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            cart = ints @ matrix
            lens = np.linalg.norm(cart, axis=1)
            keep = (lens > 0) & (lens <= radius)
            self._vec_int, self._vec_len = ints[keep], lens[keep]
            self._vec_unit = cart[keep] / lens[keep, None]
            self._radius = radius
        return self._vec_int, self._vec_len, self._vec_unit


def lattice_parameters(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``np.array(lattice.abc)``, ``np.array(lattice.angles)`` and ``lattice.volume`` of
    ``Lattice(matrix)``, bit for bit: pymatgen's operations (the same ``np.dot`` calls, one
    ``arccos`` over the 3-array; ``np.cross`` of 3-vectors is these two products and a
    difference), without ``np.clip`` / ``np.cross`` dispatch overhead."""
    lengths = np.sqrt(np.sum(matrix**2, axis=1))
    ln = lengths.tolist()
    cosines = np.zeros(3)
    for dim in range(3):
        j, k = (dim + 1) % 3, (dim + 2) % 3
        x = np.dot(matrix[j], matrix[k]) / (ln[j] * ln[k])
        cosines[dim] = min(max(x, -1), 1)  # np.clip of a scalar
    angles = np.rad2deg(np.arccos(cosines))
    (a1, a2, a3), (b1, b2, b3) = matrix[0].tolist(), matrix[1].tolist()
    cross = np.array([a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1])
    return lengths, angles, float(abs(np.dot(cross, matrix[2])))


def _niggli_step(s: Structure) -> tuple[Lattice, np.ndarray, int]:
    """The Niggli step of ``StructureMatcher._get_reduced_structure(s)`` as (lattice,
    fractional coordinates), and the gcd of the per-species site counts.

    pymatgen's reduction is ``get_reduced_structure("niggli")`` then
    ``get_primitive_structure()``; the latter only tries supercell matrices of determinant
    dividing that gcd, so with gcd 1 it returns a copy and this is the whole reduction. The
    Niggli step is replayed (:func:`niggli_reduced_lattice`) with the same per-site arithmetic
    (Cartesian → fractional in the new lattice, then ``mod 1``; one matrix product where BLAS
    gives each row the bits of PeriodicSite's 1-D dots), so the arrays are the ones pymatgen
    builds, bit for bit (checked in tests/screening/test_matching.py and
    benchmarks/reduce_exact.py).
    """
    counts: dict[str, int] = defaultdict(int)
    for site in s:
        counts[_species_label(site)] += 1
    gcd = math.gcd(*counts.values())
    lat = s.lattice
    red = niggli_reduced_lattice(lat)
    if _same_lattice(red, lat):  # pymatgen keeps the structure (and its coordinates) as they are
        return lat, np.array(s.frac_coords), gcd
    m, inv = lat.matrix, red.inv_matrix
    if m.flags.c_contiguous and inv.flags.c_contiguous and _blas_sites_consistent():
        cart = np.dot(s.frac_coords, m)  # one product: the bits of PeriodicSite's 1-D dots
        return red, np.mod(np.dot(cart, inv), 1), gcd
    # per site, as PeriodicSite computes it (1-D dots)
    frac = [np.mod(np.dot(lat.get_cartesian_coords(site.frac_coords), inv), 1) for site in s]
    return red, np.array(frac, dtype=np.float64), gcd


def _primitive_of(s: Structure, lattice: Lattice, frac: np.ndarray) -> Structure:
    """The rest of ``StructureMatcher._get_reduced_structure(s)`` after its Niggli step:
    pymatgen's ``get_primitive_structure()`` on the Niggli cell (built from the step's exact
    arrays with ``s``'s species, site properties and labels, as ``get_reduced_structure``
    builds it), run with the compiled Niggli reduction (:func:`_compiled_niggli_in_pymatgen`)."""
    cell = Structure(
        lattice, s.species_and_occu, frac, site_properties=s.site_properties, labels=s.labels
    )
    with _compiled_niggli_in_pymatgen():
        prim = cell.get_primitive_structure()
    return prim if type(prim) is Structure else Structure.from_sites(prim)


def _species_label(site) -> str:
    """``site.species_string`` (the key pymatgen's primitive search groups sites by), without
    its property overhead for a plain element at occupancy 1."""
    comp = site.species
    if len(comp) == 1:
        ((sp, amt),) = comp.items()
        if type(sp) is Element and amt == 1 and comp.num_atoms == 1:
            return sp.symbol  # what str(Element) and so species_string give
    return site.species_string


def _same_lattice(a: Lattice, b: Lattice) -> bool:
    """``a == b`` for lattices (``np.allclose`` of the matrices, rtol 1e-5, atol 1e-8, and the
    same pbc) on finite matrices, without ``allclose``'s overhead."""
    x, y = a.matrix, b.matrix
    if a.pbc != b.pbc or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return a == b
    return bool((np.abs(x - y) <= 1e-8 + 1e-5 * np.abs(y)).all())


def mapping_candidates(
    lattice: Lattice, other_lattice: Lattice, ltol: float, atol: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """What ``lattice.find_all_mappings(other_lattice, ltol, atol, skip_rotation_matrix=True)``
    yields, as arrays in its order: aligned matrices (K, 3, 3) and scale matrices (K, 3, 3).

    The same points (``get_points_in_sphere``), Cartesian rows, lengths and angles as pymatgen,
    computed once instead of one candidate at a time; ``np.isclose(x, y, atol, rtol=0)`` is
    ``|x - y| <= atol`` on finite values; candidates come in pymatgen's (idx, j, k) order and
    the aligned rows are the same rows of the same array, so each matrix is pymatgen's bit for
    bit. None when no points lie in the sphere (then pymatgen's own path is used).
    """
    lengths = other_lattice.lengths
    alpha, beta, gamma = other_lattice.angles
    frac, dist, _, _ = lattice.get_points_in_sphere(
        [[0, 0, 0]], [0, 0, 0], max(lengths) * (1 + ltol), zip_results=False
    )
    if len(frac) == 0:
        return None
    cart = lattice.get_cartesian_coords(frac)
    inds = [np.logical_and(dist / ln < 1 + ltol, dist / ln > 1 / (1 + ltol)) for ln in lengths]
    c_a, c_b, c_c = (cart[i] for i in inds)
    f_a, f_b, f_c = (frac[i] for i in inds)
    l_a, l_b, l_c = (np.sum(c**2, axis=-1) ** 0.5 for c in (c_a, c_b, c_c))

    def close(v1, v2, l1, l2, target):
        x = np.inner(v1, v2) / l1[:, None] / l2
        x[x > 1] = 1
        x[x < -1] = -1
        return np.abs(np.rad2deg(np.arccos(x)) - target) <= atol

    alpha_b = close(c_b, c_c, l_b, l_c, alpha)
    beta_b = close(c_a, c_c, l_a, l_c, beta)
    gamma_b = close(c_a, c_b, l_a, l_b, gamma)
    ok = gamma_b[:, :, None] & alpha_b[None, :, :] & beta_b[:, None, :]
    i, j, k = np.nonzero(ok)  # lexicographic: pymatgen's loop order
    scale = np.stack([f_a[i], f_b[j], f_c[k]], axis=1).astype(np.int64)
    aligned = np.stack([c_a[i], c_b[j], c_c[k]], axis=1)
    return aligned, scale


class _FastMappingLattice(Lattice):
    """A Lattice whose ``find_mapping(..., skip_rotation_matrix=True)`` (the call
    ``get_niggli_reduced_lattice`` makes) is pymatgen's on :func:`mapping_candidates`: the
    first candidate with ``det(scale) > 0``, else the first, skipping |det| < 1e-8."""

    def find_mapping(self, other_lattice, ltol=1e-5, atol=1, skip_rotation_matrix=False):
        """``Lattice.find_mapping`` (first proper map, else the first map, else None)."""
        got = mapping_candidates(self, other_lattice, ltol, atol) if skip_rotation_matrix else None
        if got is None:
            return super().find_mapping(other_lattice, ltol, atol, skip_rotation_matrix)
        aligned, scale = got
        if not len(scale):
            return None
        det = np.linalg.det(scale)
        valid = np.flatnonzero(np.abs(det) >= 1e-8)
        if not len(valid):
            return None
        proper = valid[det[valid] > 0]
        n = proper[0] if len(proper) else valid[0]
        return type(self)(aligned[n]), None, scale[n]


def niggli_reduced_lattice(lattice: Lattice) -> Lattice:
    """``lattice.get_niggli_reduced_lattice()``, bit for bit: the compiled replay of
    :mod:`~smoacs_flows.screening.matching.niggli` picks pymatgen's integer matrix and the rows
    are computed with pymatgen's ``np.dot``; where the replay cannot vouch for a decision (or
    BLAS rows could differ, see :func:`_blas_rows_consistent`) pymatgen's own loop runs, on
    the faster mapping search."""
    m = _niggli_matrix(lattice)
    if m is not None:
        return Lattice(m, pbc=lattice.pbc)
    fast = _FastMappingLattice(lattice.matrix, pbc=lattice.pbc)
    return Lattice(_PYMATGEN_NIGGLI(fast).matrix, pbc=lattice.pbc)


def _niggli_matrix(lattice: Lattice) -> np.ndarray | None:
    """The matrix of ``lattice.get_niggli_reduced_lattice()`` from the compiled replay, or
    None where it cannot vouch for it."""
    if not _blas_rows_consistent(_layout(lattice.matrix)):
        return None
    status, scale, sign = scale_of(lattice.matrix)
    if status == LLL_AMBIGUOUS:
        status, scale, sign = scale_of(lattice.matrix, lattice.lll_matrix)
    if status != OK:
        return None
    aligned = np.dot(scale.astype(np.float64), lattice.matrix)
    return aligned if sign > 0 else -aligned


_PYMATGEN_NIGGLI = Lattice.get_niggli_reduced_lattice


def _compiled_niggli(self: Lattice, tol: float = 1e-5) -> Lattice:
    """Stand-in for ``Lattice.get_niggli_reduced_lattice`` within
    :func:`_compiled_niggli_in_pymatgen`: the same matrix (pymatgen returns
    ``type(self)(matrix)``, default pbc)."""
    if tol == 1e-5 and type(self) is Lattice:
        m = _niggli_matrix(self)
        if m is not None:
            return Lattice(m)
    return _PYMATGEN_NIGGLI(self, tol)


_PYMATGEN_PRIMITIVE = IStructure.get_primitive_structure


def _primitive_structure(
    self: IStructure,
    tolerance: float = 0.25,
    use_site_props: bool = False,
    constrain_latt: list | dict | None = None,
    reduce: bool = True,
) -> IStructure | Structure:
    """Stand-in for ``IStructure.get_primitive_structure`` within
    :func:`_compiled_niggli_in_pymatgen`: when the per-species site counts have gcd 1,
    pymatgen's search tries no supercell matrix (``get_hnf(1)`` yields none) and returns
    ``self.copy()``; that is returned here without the neighbour bookkeeping before the loop.
    Otherwise, with the default arguments, :func:`~smoacs_flows.screening.matching.primitive.
    primitive_structure` (pymatgen's path with its translation filter vectorised), else
    pymatgen's own call."""
    if len(self) and tolerance > 0 and not use_site_props:
        counts: dict[str, int] = defaultdict(int)
        for site in self:
            counts[site.species_string] += 1
        if math.gcd(*counts.values()) == 1:
            return self.copy()
        if tolerance == TOLERANCE and not constrain_latt and reduce:
            prim = primitive_structure(self)  # pymatgen's path, its site filter vectorised
            if prim is not None:
                return prim
    return _PYMATGEN_PRIMITIVE(self, tolerance, use_site_props, constrain_latt, reduce)


#: threads inside :func:`_compiled_niggli_in_pymatgen` (the swap is process-wide)
_SWAP_LOCK = threading.Lock()
_swap_holders = 0


@contextlib.contextmanager
def _compiled_niggli_in_pymatgen():
    """pymatgen's own code (here its primitive-cell search, which Niggli-reduces each cell it
    builds and calls itself on the smaller cell) with ``Lattice.get_niggli_reduced_lattice``
    computed by the compiled replay (the same matrix bit for bit, or pymatgen's own) and the
    gcd-1 case of ``get_primitive_structure`` answered directly; pymatgen's methods are back
    when the last thread inside leaves (another thread calling them meanwhile gets the same
    results, computed the faster way)."""
    global _swap_holders
    with _SWAP_LOCK:
        if _swap_holders == 0:
            Lattice.get_niggli_reduced_lattice = _compiled_niggli
            IStructure.get_primitive_structure = _primitive_structure
        _swap_holders += 1
    try:
        yield
    finally:
        with _SWAP_LOCK:
            _swap_holders -= 1
            if _swap_holders == 0:
                Lattice.get_niggli_reduced_lattice = _PYMATGEN_NIGGLI
                IStructure.get_primitive_structure = _PYMATGEN_PRIMITIVE


def _layout(m: np.ndarray) -> str | None:
    """'C' or 'F' for a contiguous matrix (BLAS runs another kernel per layout), else None."""
    return "C" if m.flags.c_contiguous else "F" if m.flags.f_contiguous else None


def _test_matrices(rng: np.random.Generator, order: str) -> list[np.ndarray]:
    """Random 3x3 matrices in ``order``, some with the zeros and 1e-16 entries of real cells."""
    out = [rng.normal(size=(3, 3)) * 5 for _ in range(6)]
    for _ in range(6):
        m = np.triu(rng.uniform(2, 8, size=(3, 3)))
        m[rng.integers(3), rng.integers(3)] = 1e-16 * rng.normal()
        out.append(m)
    return [np.asarray(m, order=order) for m in out]


@functools.cache
def _blas_rows_consistent(order: str | None) -> bool:
    """Whether ``np.dot(ints, m)`` gives each row the same bits for any number of rows (>= 3)
    with ``m`` in this layout: pymatgen computes the Niggli rows among all points of a sphere,
    :func:`niggli_reduced_lattice` only the three chosen. Checked once on random data."""
    if order is None:
        return False
    rng = np.random.default_rng(0)
    for m in _test_matrices(rng, order):
        for n in (3, 4, 7, 19, 60, 130):
            ints = rng.integers(-4, 5, size=(n, 3)).astype(np.float64)
            pick = rng.choice(n, size=3, replace=False)
            if not np.array_equal(np.dot(ints[pick], m), np.dot(ints, m)[pick]):
                return False
    return True


@functools.cache
def _blas_sites_consistent() -> bool:
    """Whether, for C-contiguous matrices, ``np.dot(np.dot(frac, m), inv)`` over all sites gives
    the bits of PeriodicSite's per-site 1-D dots (a matrix product vs a matrix-vector
    product: the same per-element FMA chain in OpenBLAS, checked once on random data)."""
    rng = np.random.default_rng(1)
    for m in _test_matrices(rng, "C"):
        inv = np.linalg.inv(m)
        for n in (2, 3, 5, 8, 17, 40, 130):
            frac = rng.random((n, 3))
            frac[0] = (0.5, 0.0, 0.25)
            one = np.array([np.dot(np.dot(f, m), inv) for f in frac])
            if not np.array_equal(np.dot(np.dot(frac, m), inv), one):
                return False
    return True


def prepare(structure: Structure, matcher: StructureMatcher | None = None) -> Prepared:
    """Hash a structure for matching (cheap; reduction happens lazily).

    A plain ``Structure`` is used as it is (it is only read; ``Structure.from_sites`` would
    copy the same lattice, coordinates and species); other kinds are copied into one."""
    matcher = matcher or make_matcher()
    s = structure if type(structure) is Structure else Structure.from_sites(structure)
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(s.lattice.matrix, dtype=float).tobytes())
    h.update(np.ascontiguousarray(s.frac_coords, dtype=float).tobytes())
    h.update("|".join(_composition_str(site.species) for site in s).encode())
    return Prepared(
        structure=s, key=matcher._comparator.get_hash(s.composition), ident=h.hexdigest()
    )


def _composition_str(comp) -> str:
    """``str(comp)`` of a site's composition; a plain element at occupancy 1 is ``"Fe1"``."""
    if len(comp) == 1:
        ((sp, amt),) = comp.items()
        if type(sp) is Element and amt == 1:
            return f"{sp.symbol}1"
    return str(comp)


def _site_elements(s: Structure) -> tuple[str, ...] | None:
    """Element symbols per site when every site is one plain element at occupancy 1."""
    out = []
    for comp in s.species_and_occu:
        if len(comp) != 1:
            return None
        ((sp, amt),) = comp.items()
        if type(sp) is not Element or amt != 1:
            return None
        out.append(sp.symbol)
    return tuple(out)
