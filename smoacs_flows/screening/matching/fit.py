"""``StructureMatcher.fit`` on two prepared (reduced) structures, made fast without changing
its answer: a compiled test (:mod:`~smoacs_flows.screening.matching.kernel`) proves most pairs
False (point 5 of the :mod:`smoacs_flows.screening.matching` docstring) or True (point 6) and
drops the lattice mappings that cannot match; pymatgen's ``fit`` is replayed on the surviving
mappings of the rest (point 7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.analysis.structure_matcher import SpeciesComparator, StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.core.structure_matcher import get_linear_assignment_solution

from smoacs_flows.screening.matching.kernel import EPS, FIT, NO_FIT, UNDECIDED, pair_status
from smoacs_flows.screening.matching.reduce import Prepared, mapping_candidates

_MASKS: dict[tuple, tuple] = {}  # _get_mask results by the two site-element sequences


def _cached_mask(matcher: StructureMatcher, a: Prepared, b: Prepared) -> tuple:
    """``matcher._get_mask(a.reduced, b.reduced, 1, True)`` plus whether a full assignment
    exists (``_strict_match``'s ``get_linear_assignment_solution(mask)[1] == 0`` on a square
    mask), memoised when both cells hold only plain elements (then all of it depends on
    nothing but the two symbol sequences)."""
    if (
        a._elements is None
        or b._elements is None
        or type(matcher._comparator) is not SpeciesComparator
    ):
        return _with_feasibility(matcher._get_mask(a.reduced, b.reduced, 1, True))
    key = (a._elements, b._elements)
    hit = _MASKS.get(key)
    if hit is None:
        if len(_MASKS) > 100_000:
            _MASKS.clear()
        hit = _MASKS[key] = _with_feasibility(_element_mask(a._elements, b._elements))
    return hit


def _with_feasibility(got: tuple) -> tuple:
    """(mask, s1 translation sites, s2 anchor, feasible, mask as bool) from ``_get_mask``'s
    triple; feasible is False where ``_strict_match`` returns None before any lattice."""
    mask, s1_t_inds, s2_t_ind = got
    feasible = mask.shape[0] == mask.shape[1] and get_linear_assignment_solution(mask)[1] == 0
    return (
        mask,
        np.ascontiguousarray(s1_t_inds, dtype=np.int64),
        int(s2_t_ind),
        feasible,
        np.ascontiguousarray(mask, dtype=np.bool_),
    )


def _element_mask(el1: tuple[str, ...], el2: tuple[str, ...]) -> tuple:
    """``StructureMatcher._get_mask(s1, s2, fu=1, s1_supercell=True)`` with the default
    ``SpeciesComparator`` for cells of plain elements with site symbols ``el1`` / ``el2``:
    mask[i, j] = 1 where s2's site i cannot take s1's site j; s2's translation site is the
    first row with the most 1s (``argmax``), and the s1 sites it may sit on are its 0s."""
    mask = (np.array(el2)[:, None] != np.array(el1)[None, :]).astype(np.int64)
    idx = np.argmax(np.sum(mask, axis=-1))
    return mask, np.where(np.invert(mask[idx].astype(bool)))[0], idx


def pair_decision(matcher: StructureMatcher, a: Prepared, b: Prepared) -> tuple[int, set[bytes]]:
    """The compiled per-pair test (:func:`~smoacs_flows.screening.matching.kernel.pair_status`)
    of ``fit(a.reduced, b.reduced)``: ``(NO_FIT | FIT | UNDECIDED, surviving scale matrices as
    int64 bytes)``. Both cells reduced, same formula, equal numbers of sites."""
    _, s1_t_inds, s2_t_ind, feasible, mask = _cached_mask(matcher, a, b)
    if not feasible:
        return NO_FIT, set()
    ltol = matcher.ltol
    ratio = (b._volume / a._volume) ** (1 / 6)  # _preprocess scales a by ratio, b by 1 / ratio
    lb = b._abc / ratio
    ints, lens, unit = a.vectors(lb.max() * (1 + ltol) * (1 + EPS) / ratio)
    status, kept = pair_status(
        ints,
        lens,
        unit,
        ratio,
        lb,
        b._angles,
        a._frac,
        b._frac,
        mask,
        s1_t_inds,
        s2_t_ind,
        ltol,
        float(matcher.angle_tol),
        matcher.stol,
    )
    return status, {k.tobytes() for k in kept} if status == UNDECIDED else set()


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
    s2_params = np.array(s2.lattice.parameters)
    for latt, sc_m in matcher._get_lattices(s2.lattice, s1, fu):
        if keep is not None and np.asarray(sc_m, dtype=np.int64).tobytes() not in keep:
            continue
        if _strict_match_in(matcher, latt, cc, s2fc, s2_params, mask, s1_t_inds, s2_t_ind):
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
    mask, s1_t_inds, s2_t_ind = _cached_mask(matcher, a, b)[:3]
    s2fc = np.array(b._frac)
    cc = np.array([nl1.get_cartesian_coords(f) for f in a._frac])
    s2_params = np.array(nl2.parameters)
    for latt in _kept_lattices(matcher, nl1, nl2, keep):
        if _strict_match_in(matcher, latt, cc, s2fc, s2_params, mask, s1_t_inds, s2_t_ind):
            return True
    return False


def _kept_lattices(matcher: StructureMatcher, nl1: Lattice, nl2: Lattice, keep: set[bytes]):
    """The lattices of ``matcher._get_lattices(nl2, <structure on nl1>, 1)`` whose scale matrix
    is in ``keep``, in its order, built only for those (same arrays: ``mapping_candidates``)."""
    got = mapping_candidates(nl1, nl2, matcher.ltol, matcher.angle_tol)
    if got is None:  # pymatgen's own generator
        for latt, sc_m in matcher._get_lattices(nl2, _HasLattice(nl1), 1):
            if np.asarray(sc_m, dtype=np.int64).tobytes() in keep:
                yield latt
        return
    aligned, scale = got
    if not len(scale):
        return
    det = np.abs(np.linalg.det(scale))
    # find_all_mappings skips |det| < 1e-8; _get_lattices keeps isclose(|det|, 1, abs_tol=0.5)
    for n in np.flatnonzero((det >= 1e-8) & (np.abs(det - 1) <= 0.5)):
        if scale[n].tobytes() in keep:
            yield Lattice(aligned[n])


def _strict_match_in(
    matcher: StructureMatcher,
    latt: Lattice,
    cc: np.ndarray,
    s2fc: np.ndarray,
    s2_params: np.ndarray,
    mask: np.ndarray,
    s1_t_inds: np.ndarray,
    s2_t_ind: int,
) -> bool:
    """The body of pymatgen's ``_strict_match`` loop (break_on_match) for one mapped lattice
    ``latt`` of struct1 (Cartesian sites ``cc``) against struct2 (fractional sites ``s2fc``,
    lattice parameters ``s2_params``): the same calls in the same order."""
    s1fc = latt.get_fractional_coords(cc)
    s1fc -= np.floor(s1fc)
    avg_l = Lattice.from_parameters(*((np.array(latt.parameters) + s2_params) / 2))
    normalization = (len(s1fc) / avg_l.volume) ** (1 / 3)
    inv_abc = np.array(avg_l.reciprocal_lattice.abc)
    frac_tol = inv_abc * matcher.stol / (np.pi * normalization)
    for s1i in s1_t_inds:
        t = s1fc[s1i] - s2fc[s2_t_ind]
        t_s2fc = s2fc + t
        if matcher._cmp_fstruct(s1fc, t_s2fc, frac_tol, mask):
            inv_lll_abc = np.array(avg_l.get_lll_reduced_lattice().reciprocal_lattice.abc)
            lll_frac_tol = inv_lll_abc * matcher.stol / (np.pi * normalization)
            dist, _, _ = matcher._cart_dists(s1fc, t_s2fc, avg_l, mask, normalization, lll_frac_tol)
            if max(dist) < matcher.stol:
                return True
    return False


@dataclass
class _HasLattice:
    """What ``StructureMatcher._get_lattices`` reads of a structure: its lattice."""

    lattice: Lattice


def _fit(matcher: StructureMatcher, a: Prepared, b: Prepared) -> bool:
    """``matcher.fit(a.reduced, b.reduced, skip_structure_reduction=True)``, faster: the
    compiled test decides most pairs; the rest are pymatgen's ``fit`` replayed on the
    mappings that test left."""
    status, keep = pair_decision(matcher, a, b)
    if status != UNDECIDED:
        return status == FIT
    return _replay_kept(matcher, a, b, keep)


def _replay_kept(matcher: StructureMatcher, a: Prepared, b: Prepared, keep: set[bytes]) -> bool:
    """The exact replay of ``fit(a.reduced, b.reduced)`` on the surviving mappings ``keep``."""
    if a._elements is None or b._elements is None:  # not plain elements: pymatgen's own path
        return _replay_fit(matcher, a.reduced, b.reduced, keep)
    return _replay_prepared(matcher, a, b, keep)
