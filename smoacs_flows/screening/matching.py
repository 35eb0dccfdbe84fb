"""Uniqueness and novelty with pymatgen's StructureMatcher, made fast without changing answers.

The *naive* definitions (MatterGen's settings, ``StructureMatcher(ltol=0.2, stol=0.3,
angle_tol=5)``, everything else default):

* **uniqueness** is greedy in input order, exactly like ``StructureMatcher.group_structures``:
  candidate ``j`` is a duplicate of the first earlier *representative* ``r`` with
  ``fit(s_r, s_j)``; otherwise it is a new representative (unique).
* **novelty**: candidate ``j`` is novel unless some reference ``k`` has ``fit(ref_k, s_j)``; the
  first such ``k`` (in reference order) is reported.

The fast path gives the same answer because every shortcut is a *necessary* condition of
``fit`` (a pair it rejects could never fit) or is ``fit`` itself on the same reduced structures:

1. ``fit`` returns False unless the comparator hashes (reduced formulas) are equal: group by it.
2. ``fit`` reduces both structures (Niggli + primitive cell) before matching; the reduction is
   done once per structure and ``fit(..., skip_structure_reduction=True)`` reuses it.
3. Without ``attempt_supercell`` a mapping needs equal numbers of sites in the reduced cells.
4. Lattice bound: after both cells are scaled to a common volume, ``find_all_mappings`` looks
   for a basis ``c_i`` of the first lattice with ``|c_i| < (1 + ltol) · l_i`` where ``l_i`` are
   the second cell's lengths. Since the k-th successive minimum of a lattice is at most the k-th
   shortest vector of any basis, ``λ_k(L1)/V1^(1/3) < (1 + ltol) · sorted(l)_k / V2^(1/3)``
   for k = 1, 2, 3 is necessary (checked with a small slack, so it can only let pairs through).
5. Byte-identical structures: a copy of a representative maps to it (``fit`` is deterministic).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

#: MatterGen's evaluation settings
MATCHER_SETTINGS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5}

_SLACK = 1e-3  # relative slack on the lattice bound: only ever admits more pairs


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
    reduced: Structure | None = None
    n_sites: int = 0
    minima: np.ndarray = field(default_factory=lambda: np.zeros(3))  # λ_k / V^(1/3)
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(3))  # sorted abc / V^(1/3)

    def reduce(self, matcher: StructureMatcher) -> None:
        """Compute the matcher's reduced structure and the lattice invariants (once)."""
        if self.reduced is not None:
            return
        red = matcher._get_reduced_structure(  # the exact reduction fit() performs
            Structure.from_sites(self.structure), matcher._primitive_cell, niggli=True
        )
        self.reduced = red
        self.n_sites = len(red)
        norm = red.volume ** (1 / 3)
        self.minima = successive_minima(red.lattice.matrix) / norm
        self.lengths = np.sort(np.array(red.lattice.abc)) / norm


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


def _may_fit(a: Prepared, b: Prepared, ltol: float) -> bool:
    """Necessary condition for ``fit(a, b)`` on reduced structures (see module docstring)."""
    if a.n_sites != b.n_sites:
        return False
    return bool(np.all(a.minima < (1 + ltol) * b.lengths * (1 + _SLACK)))


def _fit(matcher: StructureMatcher, a: Prepared, b: Prepared) -> bool:
    return bool(matcher.fit(a.reduced, b.reduced, skip_structure_reduction=True))


def _solve_group(
    cands: list[tuple[int, Prepared]], refs: list[tuple[int, Prepared]], novelty: bool
) -> tuple[dict[int, int], dict[int, int | None], int]:
    """Uniqueness and novelty inside one formula group; returns (rep_of, ref_match, n_fits)."""
    matcher = make_matcher()
    ltol = matcher.ltol
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
            if _may_fit(r, p, ltol):
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
                if _may_fit(r, p, ltol):
                    n_fits += 1
                    if _fit(matcher, r, p):
                        hit = k
                        break
            ref_match[i] = ref_by_ident[p.ident] = hit
    return rep_of, ref_match, n_fits


def _solve_star(args):
    return _solve_group(*args)


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
    matcher = make_matcher()
    cand_groups: dict[str, list[tuple[int, Prepared]]] = defaultdict(list)
    for i, s in enumerate(structures):
        p = prepare(s, matcher)
        cand_groups[p.key].append((i, p))
    ref_groups: dict[str, list[tuple[int, Prepared]]] = defaultdict(list)
    novelty = references is not None
    if novelty:
        for k, s in enumerate(references):
            p = prepare(s, matcher)
            if p.key in cand_groups:
                ref_groups[p.key].append((k, p))

    n = len(structures)
    representative = list(range(n))
    reference_match: list[int | None] | None = [None] * n if novelty else None
    n_fits = 0
    trivial, work = [], []
    for key, cands in cand_groups.items():
        refs = ref_groups.get(key, [])
        if len(cands) == 1 and not refs:
            trivial.append(len(cands))
        else:
            work.append((cands, refs, novelty))
    if progress:
        progress(sum(trivial))
    # largest groups first so the pool stays busy
    work.sort(key=lambda w: -(len(w[0]) * (1 + len(w[1]))))
    if n_jobs > 1 and len(work) > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(n_jobs) as pool:
            results = pool.imap_unordered(_solve_star, work, chunksize=4)
            for rep_of, ref_match, nf in results:
                n_fits += nf
                _merge(rep_of, ref_match, representative, reference_match)
                if progress:
                    progress(len(rep_of))
    else:
        for w in work:
            rep_of, ref_match, nf = _solve_group(*w)
            n_fits += nf
            _merge(rep_of, ref_match, representative, reference_match)
            if progress:
                progress(len(rep_of))
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
