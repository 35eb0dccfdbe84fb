"""Uniqueness and novelty with pymatgen's StructureMatcher, made fast without changing answers.

The *naive* definitions (MatterGen's settings, ``StructureMatcher(ltol=0.2, stol=0.3,
angle_tol=5)``, everything else default):

* **uniqueness** is greedy in input order, exactly like ``StructureMatcher.group_structures``:
  candidate ``j`` is a duplicate of the first earlier *representative* ``r`` with
  ``fit(s_r, s_j)``; otherwise it is a new representative (unique).
* **novelty**: candidate ``j`` is novel unless some reference ``k`` has ``fit(ref_k, s_j)``; the
  first such ``k`` (in reference order) is reported.

The fast path gives the same answer because every shortcut is a *necessary* condition of
``fit`` (a pair it rejects could never fit) or is ``fit``'s own computation on the same inputs:

1. ``fit`` returns False unless the comparator hashes (reduced formulas) are equal: group by it.
2. ``fit`` reduces both structures (Niggli + primitive cell) before matching; the reduction is
   done once per structure and reused (``fit(..., skip_structure_reduction=True)`` semantics).
3. Without ``attempt_supercell`` a mapping needs equal numbers of sites in the reduced cells.
4. Byte-identical structures: a copy of a representative maps to it (``fit`` is deterministic).
5. With ``break_on_match`` ``fit`` is an existential: True iff some lattice mapping ``S`` (of
   ``find_all_mappings``, |det S| = 1) and some translation (an s1 site onto s2's anchor site)
   pass the fractional site check (``is_coord_subset_pbc`` with ``frac_tol``) *and* give
   ``max_i |v_i − mean(v)| < stol`` in ``_cart_dists``. :func:`_surviving_mappings` enumerates
   a superset of those mappings from cached lattice vectors (length and angle tests widened by
   a relative 1e-6 / 1e-4°, where float error is ~1e-14) and checks, vectorised over mappings
   and translations, conditions every success must meet:

   * the site check itself, tolerance widened by 1e-6;
   * with ρ = stol·(V/n)^(1/3) in the average lattice: a success has all |v_i − m| < ρ, so
     relative to the anchor site every displacement u_i = v_i − v_anchor has |u_i| < 2ρ. When
     all ``frac_tol`` < 1/2 the only lattice image that short is the nearest one, so u_i is
     determined by the pairing σ alone and ``max |u_i − mean(u)| < ρ`` must hold for some
     species-respecting bijection σ (all tried; if there are over 512 the mapping is kept).

   Mappings that fail are dropped; if none is left, ``fit`` is False.
6. :func:`_replay_fit` is pymatgen's ``fit`` → ``_preprocess`` → ``_strict_match`` (pymatgen
   2026.10) for equal-size reduced cells, line for line, except that it skips the mappings the
   filter dropped; by 5. they cannot give a match, so the answer is ``fit``'s.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import multiprocessing as mp
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pymatgen.analysis.structure_matcher import SpeciesComparator, StructureMatcher
from pymatgen.core import Element, Lattice, Structure
from pymatgen.core.structure_matcher import get_linear_assignment_solution

#: MatterGen's evaluation settings
MATCHER_SETTINGS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5}

_EPS = 1e-6  # relative slack of the mapping filter (float error is ~1e-14): admits more only
_ANGLE_SLACK = 1e-4  # degrees, same purpose for the angle test
_MASKS: dict[tuple, tuple] = {}  # _get_mask results by the two site-element sequences


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
        fast = _reduce_no_primitive(self.structure) if matcher._primitive_cell else None
        if fast is None:
            red = matcher._get_reduced_structure(  # the exact reduction fit() performs
                Structure.from_sites(self.structure), matcher._primitive_cell, niggli=True
            )
            self._reduced, lattice, frac = red, red.lattice, np.array(red.frac_coords)
        else:
            lattice, frac = fast
        self._lattice = lattice
        self.n_sites = len(frac)
        self._frac = frac
        self._abc = np.array(lattice.abc)
        self._angles = np.array(lattice.angles)
        self._volume = lattice.volume
        self._elements = _site_elements(self.structure if fast is not None else self._reduced)

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


def _reduce_no_primitive(s: Structure) -> tuple[Lattice, np.ndarray] | None:
    """``StructureMatcher._get_reduced_structure(s)`` as (lattice, fractional coordinates)
    when no primitive reduction can apply, else None.

    pymatgen's reduction is ``get_reduced_structure("niggli")`` then
    ``get_primitive_structure()``; the latter only tries supercell matrices of determinant
    dividing the gcd of the per-species site counts, so with gcd 1 it returns a copy. The
    Niggli step is replayed with pymatgen's own lattice reduction and the same per-site
    arithmetic (Cartesian → fractional in the new lattice, then ``mod 1``), so the arrays are
    the ones pymatgen builds, bit for bit (checked in tests/screening/test_matching.py).
    """
    counts: dict[str, int] = defaultdict(int)
    for site in s:
        counts[site.species_string] += 1
    if math.gcd(*counts.values()) != 1:
        return None
    lat = s.lattice
    red = lat.get_niggli_reduced_lattice()
    if red == lat:  # pymatgen keeps the structure (and its coordinates) as they are
        return lat, np.array(s.frac_coords)
    inv = red.inv_matrix  # per site, as PeriodicSite computes it (1-D dots, not one matmul)
    frac = [np.mod(np.dot(lat.get_cartesian_coords(site.frac_coords), inv), 1) for site in s]
    return red, np.array(frac, dtype=np.float64)


def prepare(structure: Structure, matcher: StructureMatcher | None = None) -> Prepared:
    """Hash a structure for matching (cheap; reduction happens lazily)."""
    matcher = matcher or make_matcher()
    s = Structure.from_sites(structure)
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(s.lattice.matrix, dtype=float).tobytes())
    h.update(np.ascontiguousarray(s.frac_coords, dtype=float).tobytes())
    h.update("|".join(str(sp) for sp in s.species_and_occu).encode())
    return Prepared(
        structure=s, key=matcher._comparator.get_hash(s.composition), ident=h.hexdigest()
    )


def _lattice_from_parameters(p: np.ndarray) -> np.ndarray:
    """``Lattice.from_parameters`` (pymatgen's default, non-VESTA convention) for rows of p."""
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    ang = np.radians(p[:, 3:])
    cos_a, cos_b, cos_g = np.cos(ang).T
    sin_a, sin_b, _ = np.sin(ang).T
    gamma_star = np.arccos(np.clip((cos_a * cos_b - cos_g) / (sin_a * sin_b), -1, 1))
    m = np.zeros((len(p), 3, 3))
    m[:, 0, 0], m[:, 0, 2] = a * sin_b, a * cos_b
    m[:, 1, 0] = -b * sin_a * np.cos(gamma_star)
    m[:, 1, 1] = b * sin_a * np.sin(gamma_star)
    m[:, 1, 2] = b * cos_a
    m[:, 2, 2] = c
    return m


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


def _cached_mask(matcher: StructureMatcher, a: Prepared, b: Prepared) -> tuple:
    """``matcher._get_mask(a.reduced, b.reduced, 1, True)``, memoised when both cells hold only
    plain elements (then the mask depends on nothing but the two symbol sequences)."""
    if (
        a._elements is None
        or b._elements is None
        or type(matcher._comparator) is not SpeciesComparator
    ):
        return matcher._get_mask(a.reduced, b.reduced, 1, True)
    key = (a._elements, b._elements)
    hit = _MASKS.get(key)
    if hit is None:
        if len(_MASKS) > 100_000:
            _MASKS.clear()
        hit = _MASKS[key] = _element_mask(a._elements, b._elements)
    return hit


def _element_mask(el1: tuple[str, ...], el2: tuple[str, ...]) -> tuple:
    """``StructureMatcher._get_mask(s1, s2, fu=1, s1_supercell=True)`` with the default
    ``SpeciesComparator`` for cells of plain elements with site symbols ``el1`` / ``el2``:
    mask[i, j] = 1 where s2's site i cannot take s1's site j; s2's translation site is the
    first row with the most 1s (``argmax``), and the s1 sites it may sit on are its 0s."""
    mask = (np.array(el2)[:, None] != np.array(el1)[None, :]).astype(np.int64)
    idx = np.argmax(np.sum(mask, axis=-1))
    return mask, np.where(np.invert(mask[idx].astype(bool)))[0], idx


def _surviving_mappings(matcher: StructureMatcher, a: Prepared, b: Prepared) -> set[bytes]:
    """Scale matrices (int64 bytes) of the lattice mappings that may let ``fit(a, b)`` succeed.

    Mirrors ``fit`` on the reduced cells (``a`` is struct1, whose lattice is mapped onto
    ``b``'s): volume scaling, ``find_all_mappings`` (|det| = 1), the translations of
    ``_strict_match`` and its ``is_coord_subset_pbc`` check, all with slack (module docstring,
    point 5). An empty set proves ``fit`` is False.
    """
    ltol, stol = matcher.ltol, matcher.stol
    mask, s1_t_inds, s2_t_ind = _cached_mask(matcher, a, b)
    if mask.shape[0] != mask.shape[1] or get_linear_assignment_solution(mask)[1] > 0:
        return set()
    ratio = (b._volume / a._volume) ** (1 / 6)  # _preprocess scales a by ratio, b by 1 / ratio
    lb = b._abc / ratio
    ints, lens, unit = a.vectors(lb.max() * (1 + ltol) * (1 + _EPS) / ratio)
    lens = lens * ratio
    q = lens[None, :] / lb[:, None]
    near = (q < (1 + ltol) * (1 + _EPS)) & (q > (1 - _EPS) / (1 + ltol))
    ia, ib, ic = (np.flatnonzero(row) for row in near)
    if not (len(ia) and len(ib) and len(ic)):
        return set()

    def angles(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.rad2deg(np.arccos(np.clip(unit[i] @ unit[j].T, -1, 1)))

    g_ab, g_ac, g_bc = angles(ia, ib), angles(ia, ic), angles(ib, ic)
    alpha, beta, gamma = b._angles
    tol = matcher.angle_tol + _ANGLE_SLACK
    ok = (
        (np.abs(g_ab - gamma) <= tol)[:, :, None]
        & (np.abs(g_ac - beta) <= tol)[:, None, :]
        & (np.abs(g_bc - alpha) <= tol)[None, :, :]
    )
    x, y, z = np.nonzero(ok)
    if not len(x):
        return set()
    scale = np.stack([ints[ia[x]], ints[ib[y]], ints[ic[z]]], axis=1)
    unimodular = np.abs(np.rint(np.linalg.det(scale))) == 1  # _get_lattices: |det| ≈ 1
    if not unimodular.any():
        return set()
    x, y, z, scale = x[unimodular], y[unimodular], z[unimodular], scale[unimodular]
    # the average lattice of _get_supercells (mean of the two parameter sets)
    params = np.stack(
        [
            (lens[ia[x]] + lb[0]) / 2,
            (lens[ib[y]] + lb[1]) / 2,
            (lens[ic[z]] + lb[2]) / 2,
            (g_bc[y, z] + alpha) / 2,
            (g_ac[x, z] + beta) / 2,
            (g_ab[x, y] + gamma) / 2,
        ],
        axis=1,
    )
    avg = _lattice_from_parameters(params)
    volume = np.abs(np.linalg.det(avg))
    inv_abc = np.linalg.norm(np.linalg.inv(avg), axis=-2) * 2 * np.pi  # reciprocal lengths
    normalization = (a.n_sites / volume) ** (1 / 3)
    frac_tol = inv_abc * stol / (np.pi * normalization[:, None])
    frac_tol_slack = frac_tol * (1 + _EPS) + 1e-9
    # a's sites in each mapped lattice (= cart @ inv(S · M) of sc_generator), b's translated
    fc1 = np.einsum("nl,klm->knm", a._frac, np.linalg.inv(scale))
    fc2 = b._frac
    shift = fc1[:, s1_t_inds, :] - fc2[s2_t_ind]  # (K, T, 3)
    diff = fc2[None, None, :, None, :] + shift[:, :, None, None, :] - fc1[:, None, None, :, :]
    diff -= np.rint(diff)  # (K, T, n2, n1, 3)
    hit = np.all(np.abs(diff) <= frac_tol_slack[:, None, None, None, :], axis=-1)
    hit &= ~mask.astype(bool)
    if not np.all(np.any(hit, axis=-1), axis=-1).any():  # pymatgen's site check fails everywhere
        return set()
    # ball test; its nearest image is the rint one when every frac_tol < 1/2
    ball = 2 * stol / normalization * (1 + _EPS) + 1e-9
    dist = np.linalg.norm(np.einsum("ktijl,klm->ktijm", diff, avg), axis=-1)
    hit &= (dist <= ball[:, None, None, None]) | ~np.all(frac_tol < 0.5 - 1e-6, axis=1)[
        :, None, None, None
    ]
    n_opts = hit.sum(axis=-1)  # (K, T, n2): candidate s1 sites per s2 site
    alive = np.all(n_opts > 0, axis=-1)  # (K, T)
    small = np.all(frac_tol < 0.5 - 1e-6, axis=1)
    rho = stol / normalization * (1 + _EPS) + 1e-9
    # common case, vectorised: every s2 site has exactly one candidate, so σ is forced
    forced = alive & np.all(n_opts == 1, axis=-1) & small[:, None]
    sigma = np.argmax(hit, axis=-1)  # (K, T, n2)
    n = len(fc2)
    v = np.take_along_axis(diff, sigma[..., None, None], axis=3)[:, :, :, 0, :]  # (K,T,n2,3)
    v = np.einsum("ktil,klm->ktim", v, avg)
    spread = np.max(np.linalg.norm(v - v.mean(axis=2, keepdims=True), axis=-1), axis=-1)
    bijective = np.sort(sigma, axis=-1) == np.arange(n)
    forced_pass = forced & np.all(bijective, axis=-1) & (spread < rho[:, None])
    keep = set(np.flatnonzero(forced_pass.any(axis=1)).tolist())
    for k, t in zip(*np.nonzero(alive & ~forced)):
        if k in keep:
            continue
        if not small[k] or _may_pass_distances(hit[k, t], diff[k, t] @ avg[k], rho[k]):
            keep.add(k)
    return {scale[k].astype(np.int64).tobytes() for k in keep}


def _may_pass_distances(hit: np.ndarray, cart: np.ndarray, rho: float) -> bool:
    """Necessary condition for ``_cart_dists`` to give max distance < stol (module point 5).

    ``hit[i, j]``: s2 site i may pair with s1 site j; ``cart[i, j]``: their displacement (the
    nearest image, which is the only one within 2ρ when all frac tolerances are < 1/2) after
    the translation that puts s2's anchor site on an s1 site. If pymatgen's assignment σ
    succeeds, its vectors are these displacements up to one common shift (the anchor's own
    displacement), and ``max |v_i − mean(v)| < ρ``: try every bijection ``σ`` inside ``hit``.
    Too many bijections to try (> 512): say True.
    """
    options = [np.flatnonzero(row) for row in hit]
    total = 1
    for o in options:
        total *= len(o)
    if total > 512:
        return True
    n = len(options)
    for sigma in itertools.product(*options):
        if len(set(sigma)) != n:
            continue
        v = cart[np.arange(n), sigma]
        if np.max(np.linalg.norm(v - v.mean(axis=0), axis=1)) < rho:
            return True
    return False


def _replay_fit(
    matcher: StructureMatcher, a: Structure, b: Structure, keep: set[bytes] | None = None
) -> bool:
    """``matcher.fit(a, b, skip_structure_reduction=True)`` for equal-size reduced cells.

    The same calls in the same order as pymatgen's ``fit`` → ``_preprocess`` → ``_match`` →
    ``_strict_match`` (break_on_match) → ``_get_supercells`` (fu = 1), except that lattice
    mappings whose scale matrix is not in ``keep`` are skipped (``None`` keeps all).
    """
    s1, s2 = matcher._process_species([a, b])
    if matcher._comparator.get_hash(s1.composition) != matcher._comparator.get_hash(s2.composition):
        return False
    s1, s2, fu, s1_supercell = matcher._preprocess(s1, s2, skip_structure_reduction=True)
    if fu != 1 or not s1_supercell or len(s1) != len(s2):
        return bool(matcher.fit(a, b, skip_structure_reduction=True))  # not our case: delegate
    mask, s1_t_inds, s2_t_ind = matcher._get_mask(s1, s2, fu, s1_supercell)
    if mask.shape[0] != mask.shape[1] or get_linear_assignment_solution(mask)[1] > 0:
        return False
    s2fc = np.array(s2.frac_coords)
    cc = np.array(s1.cart_coords)
    for latt, sc_m in matcher._get_lattices(s2.lattice, s1, fu):
        if keep is not None and np.asarray(sc_m, dtype=np.int64).tobytes() not in keep:
            continue
        s1fc = latt.get_fractional_coords(cc)
        s1fc -= np.floor(s1fc)
        params = (np.array(latt.parameters) + np.array(s2.lattice.parameters)) / 2
        avg_l = Lattice.from_parameters(*params)
        normalization = (len(s1fc) / avg_l.volume) ** (1 / 3)
        inv_abc = np.array(avg_l.reciprocal_lattice.abc)
        frac_tol = inv_abc * matcher.stol / (np.pi * normalization)
        for s1i in s1_t_inds:
            t = s1fc[s1i] - s2fc[s2_t_ind]
            t_s2fc = s2fc + t
            if matcher._cmp_fstruct(s1fc, t_s2fc, frac_tol, mask):
                inv_lll_abc = np.array(avg_l.get_lll_reduced_lattice().reciprocal_lattice.abc)
                lll_frac_tol = inv_lll_abc * matcher.stol / (np.pi * normalization)
                dist, _, _ = matcher._cart_dists(
                    s1fc, t_s2fc, avg_l, mask, normalization, lll_frac_tol
                )
                if max(dist) < matcher.stol:
                    return True
    return False


def _replay_prepared(matcher: StructureMatcher, a: Prepared, b: Prepared, keep: set[bytes]) -> bool:
    """:func:`_replay_fit` on ``a.reduced`` / ``b.reduced`` (same formula, equal site counts)
    without building structures: ``_process_species`` and ``_preprocess`` only copy the
    structures and rescale both lattices to a common volume (sites keep their fractional
    coordinates; Cartesian ones are recomputed per site), which is done here on the cached
    arrays with the same pymatgen calls; the mask is the cached one (equal to ``_get_mask``)."""
    ratio = (b._lattice.volume / (a._lattice.volume * 1)) ** (1 / 6)  # fu = 1
    nl1 = Lattice(a._lattice.matrix * ratio)
    nl2 = Lattice(b._lattice.matrix / ratio)
    mask, s1_t_inds, s2_t_ind = _cached_mask(matcher, a, b)
    s2fc = np.array(b._frac)
    cc = np.array([nl1.get_cartesian_coords(f) for f in a._frac])
    s2_params = np.array(nl2.parameters)
    for latt, sc_m in matcher._get_lattices(nl2, _HasLattice(nl1), 1):
        if np.asarray(sc_m, dtype=np.int64).tobytes() not in keep:
            continue
        s1fc = latt.get_fractional_coords(cc)
        s1fc -= np.floor(s1fc)
        avg_l = Lattice.from_parameters(*((np.array(latt.parameters) + s2_params) / 2))
        normalization = (len(s1fc) / avg_l.volume) ** (1 / 3)
        inv_abc = np.array(avg_l.reciprocal_lattice.abc)
        frac_tol = inv_abc * matcher.stol / (np.pi * normalization)
        for s1i in s1_t_inds:
            t_s2fc = s2fc + (s1fc[s1i] - s2fc[s2_t_ind])
            if matcher._cmp_fstruct(s1fc, t_s2fc, frac_tol, mask):
                inv_lll_abc = np.array(avg_l.get_lll_reduced_lattice().reciprocal_lattice.abc)
                lll_frac_tol = inv_lll_abc * matcher.stol / (np.pi * normalization)
                dist, _, _ = matcher._cart_dists(
                    s1fc, t_s2fc, avg_l, mask, normalization, lll_frac_tol
                )
                if max(dist) < matcher.stol:
                    return True
    return False


@dataclass
class _HasLattice:
    """What ``StructureMatcher._get_lattices`` reads of a structure: its lattice."""

    lattice: Lattice


def _fit(matcher: StructureMatcher, a: Prepared, b: Prepared) -> bool:
    """``matcher.fit(a.reduced, b.reduced, skip_structure_reduction=True)``, faster."""
    keep = _surviving_mappings(matcher, a, b)
    if not keep:
        return False
    if a._elements is None or b._elements is None:  # not plain elements: pymatgen's own path
        return _replay_fit(matcher, a.reduced, b.reduced, keep)
    return _replay_prepared(matcher, a, b, keep)


def _solve_group(
    cands: list[tuple[int, Prepared]], refs: list[tuple[int, Prepared]], novelty: bool
) -> tuple[dict[int, int], dict[int, int | None], int]:
    """Uniqueness and novelty inside one formula group; returns (rep_of, ref_match, n_fits)."""
    matcher = make_matcher()
    rep_of: dict[int, int] = {}
    ref_match: dict[int, int | None] = {}
    reps: list[tuple[int, Prepared]] = []
    rep_by_ident: dict[str, int] = {}
    n_fits = 0
    need_reduce = len(cands) > 1 or (novelty and refs)
    for _, p in cands:
        if need_reduce:
            p.reduce(matcher)
    if novelty:
        for _, r in refs:
            r.reduce(matcher)
    ref_by_ident: dict[str, int | None] = {}
    for i, p in cands:
        if p.ident in rep_by_ident:  # byte-identical to an earlier candidate: same answers
            rep_of[i] = rep_by_ident[p.ident]
            if novelty:
                ref_match[i] = ref_by_ident[p.ident]
            continue
        found = None
        for j, r in reps:
            if r.n_sites == p.n_sites:
                n_fits += 1
                if _fit(matcher, r, p):
                    found = j
                    break
        if found is None:
            reps.append((i, p))
            found = i
        rep_of[i] = rep_by_ident[p.ident] = found
        if novelty:
            hit = None
            for k, r in refs:
                if r.n_sites == p.n_sites:
                    n_fits += 1
                    if _fit(matcher, r, p):
                        hit = k
                        break
            ref_match[i] = ref_by_ident[p.ident] = hit
    return rep_of, ref_match, n_fits


# (structures, references) of the running unique_and_novel call: set before the worker pool
# forks, so workers read the structures from inherited memory instead of unpickling them
_SHARED: tuple[Sequence[Structure], Sequence[Structure] | None] | None = None


def _keys_of(span: tuple[int, int, int]) -> list:
    """Comparator hashes (formula keys) of ``_SHARED[which][lo:hi]``."""
    which, lo, hi = span
    comparator = make_matcher()._comparator
    return [comparator.get_hash(s.composition) for s in _SHARED[which][lo:hi]]


def _solve_indices(task: tuple[list[int], list[int], bool]) -> tuple:
    """:func:`_solve_group` for one formula group given by candidate / reference indices."""
    cand_idx, ref_idx, novelty = task
    structures, references = _SHARED
    matcher = make_matcher()
    cands = [(i, prepare(structures[i], matcher)) for i in cand_idx]
    refs = [(k, prepare(references[k], matcher)) for k in ref_idx]
    return _solve_group(cands, refs, novelty)


@dataclass
class MatchResult:
    """Per candidate: index of its representative (itself when unique), matching reference."""

    representative: list[int]
    reference_match: list[int | None] | None  # None when novelty was not evaluated
    n_fit_calls: int = 0

    @property
    def unique(self) -> list[bool]:
        """True where the candidate is its own representative."""
        return [r == i for i, r in enumerate(self.representative)]

    @property
    def novel(self) -> list[bool] | None:
        """True where no reference matches (None when novelty was not evaluated)."""
        if self.reference_match is None:
            return None
        return [m is None for m in self.reference_match]


def unique_and_novel(
    structures: Sequence[Structure],
    references: Sequence[Structure] | None = None,
    n_jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> MatchResult:
    """Fast uniqueness (greedy, in order) and novelty, equal to :func:`naive_unique_and_novel`.

    ``references=None`` skips novelty. ``n_jobs > 1`` spreads formula groups over processes.
    ``progress(n)`` is called with the number of candidates finished.
    """
    global _SHARED
    novelty = references is not None
    n = len(structures)
    representative = list(range(n))
    reference_match: list[int | None] | None = [None] * n if novelty else None
    n_fits = 0
    _SHARED = (structures, references)
    pool = mp.get_context("fork").Pool(n_jobs) if n_jobs > 1 else None
    try:
        spans = [(0, lo, min(lo + 2048, n)) for lo in range(0, n, 2048)]
        if novelty:
            spans += [
                (1, lo, min(lo + 2048, len(references))) for lo in range(0, len(references), 2048)
            ]
        keys: list = []
        for chunk in pool.imap(_keys_of, spans) if pool else map(_keys_of, spans):
            keys.extend(chunk)
        cand_groups: dict = defaultdict(list)
        for i, key in enumerate(keys[:n]):
            cand_groups[key].append(i)
        ref_groups: dict = defaultdict(list)
        for k, key in enumerate(keys[n:]):
            if key in cand_groups:
                ref_groups[key].append(k)
        trivial, work = 0, []
        for key, cands in cand_groups.items():
            refs = ref_groups.get(key, [])
            if len(cands) == 1 and not refs:
                trivial += 1
            else:
                work.append((cands, refs, novelty))
        if progress:
            progress(trivial)
        # largest groups first so the pool stays busy
        work.sort(key=lambda w: -(len(w[0]) * (1 + len(w[1]))))
        results = (
            pool.imap_unordered(_solve_indices, work, chunksize=4)
            if pool
            else map(_solve_indices, work)
        )
        for rep_of, ref_match, nf in results:
            n_fits += nf
            _merge(rep_of, ref_match, representative, reference_match)
            if progress:
                progress(len(rep_of))
    finally:
        _SHARED = None
        if pool is not None:
            pool.close()
            pool.join()
    return MatchResult(representative, reference_match, n_fits)


def _merge(rep_of, ref_match, representative, reference_match) -> None:
    for i, r in rep_of.items():
        representative[i] = r
    if reference_match is not None:
        for i, m in ref_match.items():
            reference_match[i] = m


def naive_unique_and_novel(
    structures: Sequence[Structure], references: Sequence[Structure] | None = None
) -> MatchResult:
    """The definition: plain ``StructureMatcher.fit`` on every needed pair, in order."""
    sm = make_matcher()
    reps: list[int] = []
    representative: list[int] = []
    n_fits = 0
    for j, s in enumerate(structures):
        found = None
        for r in reps:
            n_fits += 1
            if sm.fit(structures[r], s):
                found = r
                break
        if found is None:
            reps.append(j)
            representative.append(j)
        else:
            representative.append(found)
    reference_match = None
    if references is not None:
        reference_match = []
        for s in structures:
            hit = None
            for k, ref in enumerate(references):
                n_fits += 1
                if sm.fit(ref, s):
                    hit = k
                    break
            reference_match.append(hit)
    return MatchResult(representative, reference_match, n_fits)
