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
   ``max_i |v_i − mean(v)| < stol`` in ``_cart_dists``. A compiled test
   (:mod:`~smoacs_flows.screening.matching.kernel`) enumerates a superset of those mappings
   from cached lattice vectors (length and angle tests widened by a relative 1e-6 / 1e-4°,
   where float error is ~1e-14) and checks, per mapping and translation, conditions every
   success must meet:

   * the site check itself, tolerance widened by 1e-6;
   * with ρ = stol·(V/n)^(1/3) in the average lattice: a success has all |v_i − m| < ρ, so
     relative to the anchor site every displacement u_i = v_i − v_anchor has |u_i| < 2ρ. When
     all ``frac_tol`` < 1/2 the only lattice image that short is the nearest one, so u_i is
     determined by the pairing σ alone and ``max |u_i − mean(u)| < ρ`` must hold for some
     species-respecting bijection σ (all tried; if there are over 512 the mapping is kept).

   Mappings that fail are dropped; if none is left, ``fit`` is False.
6. The same test proves ``fit`` True when one (mapping, translation) meets a *sufficient*
   condition, every tolerance narrowed by the same margins: the mapping passes
   ``find_all_mappings``' tests; every s2 site has exactly one s1 site near it (σ, a bijection)
   inside the fractional tolerance; every displacement is shorter than 2ρ and than the average
   lattice's smallest plane spacing / 2^2.5, or / 2 if it is LLL-reduced (then it is the unique
   shortest image, one of the 27 that ``pbc_shortest_vectors`` tries in the LLL basis, and
   inside its LLL fractional tolerance); Σ|v_i|² is below a lower bound (plane spacing ×
   fractional distance) of every other allowed pair's squared distance, so σ is the linear
   assignment's unique optimum; and ``max |v_i − mean(v)|`` < ρ narrowed.
7. Otherwise :func:`_replay_fit` is pymatgen's ``fit`` → ``_preprocess`` → ``_strict_match``
   (pymatgen 2026.10) for equal-size reduced cells, line for line, except that it skips the
   mappings 5. dropped; they cannot give a match, so the answer is ``fit``'s.

Points 2-4 (prepared, reduced structures) are in :mod:`~smoacs_flows.screening.matching.reduce`,
points 5-7 (the fast ``fit``) in :mod:`~smoacs_flows.screening.matching.fit` and
:mod:`~smoacs_flows.screening.matching.kernel`; this module groups
by formula, runs the greedy uniqueness and novelty (in processes when asked), and re-exports
the public names of both.

The package's modules, one step each: :mod:`.reduce` (Niggli + primitive reduction, cached),
:mod:`.niggli` (the compiled Niggli replay), :mod:`.primitive` (the primitive cell),
:mod:`.kernel` (the compiled per-pair test) and :mod:`.fit` (the exact ``fit`` fallback);
this module holds :func:`unique_and_novel` and the matcher around them.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.matching.fit import _fit, _replay_fit
from smoacs_flows.screening.matching.reduce import (
    MATCHER_SETTINGS,
    Prepared,
    make_matcher,
    prepare,
    successive_minima,
)

__all__ = [
    "MATCHER_SETTINGS",
    "MatchResult",
    "Prepared",
    "_fit",
    "_replay_fit",
    "make_matcher",
    "naive_unique_and_novel",
    "prepare",
    "successive_minima",
    "unique_and_novel",
    "warm_kernels",
]


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
        found, nf = _first_fit(matcher, reps, p)
        n_fits += nf
        if found is None:
            reps.append((i, p))
            found = i
        rep_of[i] = rep_by_ident[p.ident] = found
        if novelty:
            hit, nf = _first_fit(matcher, refs, p)
            n_fits += nf
            ref_match[i] = ref_by_ident[p.ident] = hit
    return rep_of, ref_match, n_fits


def _first_fit(
    matcher: StructureMatcher, pool: list[tuple[int, Prepared]], p: Prepared
) -> tuple[int | None, int]:
    """The first index in ``pool`` whose structure ``r`` has ``fit(r, p)`` (None if none) and
    the number of ``fit`` calls made (same-size members only, up to the match)."""
    n_fits = 0
    for j, r in pool:
        if r.n_sites == p.n_sites:
            n_fits += 1
            if _fit(matcher, r, p):
                return j, n_fits
    return None, n_fits


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
    if n_jobs > 1:
        warm_kernels()  # compiled once here; the forked workers inherit them
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


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the compiled kernels in this process by running
    the fast path on one tiny pair, so that forked workers do not each compile them."""
    s = Structure(Lattice.cubic(4.0), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    matcher = make_matcher()
    a, b = prepare(s, matcher), prepare(s.copy(), matcher)
    a.reduce(matcher)
    b.reduce(matcher)
    _fit(matcher, a, b)


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
