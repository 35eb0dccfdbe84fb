"""``StructureMatcher.fit`` on two prepared (reduced) structures, made fast without changing
its answer: a vectorised filter drops lattice mappings that cannot match (points 5 of the
:mod:`smoacs_flows.screening.matching` docstring), then pymatgen's ``fit`` is replayed on the
surviving ones (point 6)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pymatgen.analysis.structure_matcher import SpeciesComparator, StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.core.structure_matcher import get_linear_assignment_solution

from smoacs_flows.screening.matching_reduce import Prepared, mapping_candidates

_EPS = 1e-6  # relative slack of the mapping filter (float error is ~1e-14): admits more only
_ANGLE_SLACK = 1e-4  # degrees, same purpose for the angle test
_MASKS: dict[tuple, tuple] = {}  # _get_mask results by the two site-element sequences


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
    return surviving_many(matcher, [a], b)[0]


def surviving_many(matcher: StructureMatcher, firsts: list[Prepared], b: Prepared) -> list[set]:
    """:func:`_surviving_mappings` of ``(a, b)`` for every ``a`` in ``firsts`` (all with
    ``b``'s number of sites): the lattice part per pair, the site part vectorised over the
    mappings of all pairs at once (each mapping's arithmetic is the same as alone). Batches
    measured no faster than single pairs on the sun_scale data (the site arrays dominate),
    so ``unique_and_novel`` calls it one pair at a time."""
    out: list[set] = [set() for _ in firsts]
    parts = [(n, got) for n, a in enumerate(firsts) if (got := _lattice_part(matcher, a, b))]
    if parts:
        for n, keep in _site_part(matcher, parts, b._frac).items():
            out[n] = keep
    return out


def _lattice_part(matcher: StructureMatcher, a: Prepared, b: Prepared) -> tuple | None:
    """The mask and the candidate lattice mappings of ``fit(a, b)`` (scale matrices and
    average-lattice parameters), or None when none can exist."""
    ltol = matcher.ltol
    mask, s1_t_inds, s2_t_ind = _cached_mask(matcher, a, b)
    if mask.shape[0] != mask.shape[1] or get_linear_assignment_solution(mask)[1] > 0:
        return None
    ratio = (b._volume / a._volume) ** (1 / 6)  # _preprocess scales a by ratio, b by 1 / ratio
    lb = b._abc / ratio
    ints, lens, unit = a.vectors(lb.max() * (1 + ltol) * (1 + _EPS) / ratio)
    lens = lens * ratio
    q = lens[None, :] / lb[:, None]
    near = (q < (1 + ltol) * (1 + _EPS)) & (q > (1 - _EPS) / (1 + ltol))
    ia, ib, ic = (np.flatnonzero(row) for row in near)
    if not (len(ia) and len(ib) and len(ic)):
        return None

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
        return None
    scale = np.stack([ints[ia[x]], ints[ib[y]], ints[ic[z]]], axis=1)
    unimodular = np.abs(np.rint(np.linalg.det(scale))) == 1  # _get_lattices: |det| ≈ 1
    if not unimodular.any():
        return None
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
    return scale, params, a._frac, mask, s1_t_inds, s2_t_ind


def _site_part(matcher: StructureMatcher, parts: list, fc2: np.ndarray) -> dict[int, set]:
    """The site tests of :func:`_surviving_mappings` on the mappings of several pairs
    (``parts``: (pair index, :func:`_lattice_part`) with the same ``b``, sites ``fc2``);
    returns the surviving scale matrices per pair index (pairs with none left out)."""
    stol = matcher.stol
    n = len(fc2)
    counts = [len(got[0]) for _, got in parts]
    owner = np.repeat([m for m, _ in parts], counts)
    scale = np.concatenate([got[0] for _, got in parts])
    params = np.concatenate([got[1] for _, got in parts])
    fc1_0 = np.repeat(np.stack([got[2] for _, got in parts]), counts, axis=0)  # (K, n, 3)
    mask = np.repeat(np.stack([got[3] for _, got in parts]).astype(bool), counts, axis=0)
    t_max = max(len(got[4]) for _, got in parts)
    # translation sites padded by repeating the first (duplicates change no any/all)
    t_inds = np.array([list(got[4]) + [got[4][0]] * (t_max - len(got[4])) for _, got in parts])
    t_inds = np.repeat(t_inds, counts, axis=0)  # (K, T)
    anchor = fc2[np.repeat([got[5] for _, got in parts], counts)]  # (K, 3)
    avg = _lattice_from_parameters(params)
    volume = np.abs(np.linalg.det(avg))
    inv_abc = np.linalg.norm(np.linalg.inv(avg), axis=-2) * 2 * np.pi  # reciprocal lengths
    normalization = (n / volume) ** (1 / 3)
    frac_tol = inv_abc * stol / (np.pi * normalization[:, None])
    frac_tol_slack = frac_tol * (1 + _EPS) + 1e-9
    # a's sites in each mapped lattice (= cart @ inv(S · M) of sc_generator), b's translated
    fc1 = np.einsum("knl,klm->knm", fc1_0, np.linalg.inv(scale))
    shift = np.take_along_axis(fc1, t_inds[..., None], axis=1) - anchor[:, None, :]  # (K,T,3)
    diff = fc2[None, None, :, None, :] + shift[:, :, None, None, :] - fc1[:, None, None, :, :]
    diff -= np.rint(diff)  # (K, T, n2, n1, 3)
    hit = np.all(np.abs(diff) <= frac_tol_slack[:, None, None, None, :], axis=-1)
    hit &= ~mask[:, None]
    live = np.flatnonzero(np.all(np.any(hit, axis=-1), axis=-1).any(axis=1))
    if not len(live):  # pymatgen's site check fails everywhere
        return {}
    diff, hit, avg, frac_tol = diff[live], hit[live], avg[live], frac_tol[live]
    normalization, scale, owner = normalization[live], scale[live], owner[live]
    # ball test; its nearest image is the rint one when every frac_tol < 1/2
    small = np.all(frac_tol < 0.5 - 1e-6, axis=1)
    ball = 2 * stol / normalization * (1 + _EPS) + 1e-9
    cart = np.einsum("ktijl,klm->ktijm", diff, avg)
    dist = np.linalg.norm(cart, axis=-1)
    hit &= (dist <= ball[:, None, None, None]) | ~small[:, None, None, None]
    n_opts = hit.sum(axis=-1)  # (K, T, n2): candidate s1 sites per s2 site
    alive = np.all(n_opts > 0, axis=-1)  # (K, T)
    rho = stol / normalization * (1 + _EPS) + 1e-9
    # common case, vectorised: every s2 site has exactly one candidate, so σ is forced
    forced = alive & np.all(n_opts == 1, axis=-1) & small[:, None]
    sigma = np.argmax(hit, axis=-1)  # (K, T, n2)
    v = np.take_along_axis(cart, sigma[..., None, None], axis=3)[:, :, :, 0, :]  # (K,T,n2,3)
    spread = np.max(np.linalg.norm(v - v.mean(axis=2, keepdims=True), axis=-1), axis=-1)
    bijective = np.sort(sigma, axis=-1) == np.arange(n)
    forced_pass = forced & np.all(bijective, axis=-1) & (spread < rho[:, None])
    keep = set(np.flatnonzero(forced_pass.any(axis=1)).tolist())
    for k, t in zip(*np.nonzero(alive & ~forced)):
        if k in keep:
            continue
        if not small[k] or _may_pass_distances(hit[k, t], cart[k, t], rho[k]):
            keep.add(k)
    out: dict[int, set] = {}
    for k in keep:
        out.setdefault(int(owner[k]), set()).add(scale[k].astype(np.int64).tobytes())
    return out


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
    mask, s1_t_inds, s2_t_ind = _cached_mask(matcher, a, b)
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
    """``matcher.fit(a.reduced, b.reduced, skip_structure_reduction=True)``, faster."""
    keep = _surviving_mappings(matcher, a, b)
    return bool(keep) and _replay_kept(matcher, a, b, keep)


def _replay_kept(matcher: StructureMatcher, a: Prepared, b: Prepared, keep: set[bytes]) -> bool:
    """The exact replay of ``fit(a.reduced, b.reduced)`` on the surviving mappings ``keep``."""
    if a._elements is None or b._elements is None:  # not plain elements: pymatgen's own path
        return _replay_fit(matcher, a.reduced, b.reduced, keep)
    return _replay_prepared(matcher, a, b, keep)
