"""The per-pair test of the fast ``fit`` compiled with numba: one call decides most pairs.

For two reduced cells ``a`` (struct1, whose lattice is mapped) and ``b`` it walks the lattice
mappings ``find_all_mappings`` can yield (enumerated from ``a``'s cached lattice vectors, with
slack) and, for each, the translations of ``_strict_match``, and returns

* ``NO_FIT`` when every mapping fails a *necessary* condition of success (module
  :mod:`~smoacs_flows.screening.matching`, point 5, tolerances widened by a relative 1e-6):
  pymatgen's ``fit`` is False;
* ``FIT`` when one (mapping, translation) meets a *sufficient* condition (tolerances narrowed
  by the same margins; see :func:`pair_status`): pymatgen's ``fit`` is True;
* ``UNDECIDED`` and the scale matrices of the mappings that passed the necessary test: the
  caller replays pymatgen's own ``fit`` on exactly those.

Margins of 1e-6 relative (1e-4 degrees for angles) dwarf float error (~1e-13 here), so a
decision never rests on rounding.
"""

from __future__ import annotations

import math

import numpy as np

from smoacs_flows.screening.jit import cached_njit

NO_FIT, FIT, UNDECIDED = 0, 1, 2
EPS = 1e-6  # relative slack (widened for the necessary test, narrowed for the sufficient one)
ANGLE_SLACK = 1e-4  # degrees
MAX_BIJECTIONS = 512  # more site pairings than this: keep the mapping for the exact replay
# λ1 ≥ the smallest plane spacing of any basis, and an LLL basis (δ = 3/4) has plane spacings
# ≥ λ1 / 2**1.5 (orthogonality defect ≤ 2**1.5 in 3-D); so a vector shorter than (smallest
# spacing) / 2**2.5 has LLL fractional components < 1/2: it is the unique shortest image and
# the one pbc_shortest_vectors finds among its 27. When the average lattice is LLL-reduced
# already, pymatgen's LLL basis is that lattice and (smallest spacing) / 2 suffices.
LLL_FACTOR = 2.0**2.5


@cached_njit
def _is_lll_reduced(m: np.ndarray) -> bool:
    """Would pymatgen's ``Lattice._calculate_lll`` (δ = 3/4) leave the rows of ``m`` as they
    are? Size-reduced (|μ| < 1/2, so every rounding is 0) and the Lovász condition, both with
    margins."""
    bs = np.empty((3, 3))
    bb = np.empty(3)
    mu = np.zeros((3, 3))
    for i in range(3):
        for c in range(3):
            bs[i, c] = m[i, c]
        for j in range(i):
            mu[i, j] = (m[i, 0] * bs[j, 0] + m[i, 1] * bs[j, 1] + m[i, 2] * bs[j, 2]) / bb[j]
            if abs(mu[i, j]) >= 0.5 - 1e-6:
                return False
            for c in range(3):
                bs[i, c] -= mu[i, j] * bs[j, c]
        bb[i] = bs[i, 0] ** 2 + bs[i, 1] ** 2 + bs[i, 2] ** 2
    for k in (1, 2):  # noqa: SIM110 (a loop numba compiles)
        if bb[k] < (0.75 - mu[k, k - 1] ** 2) * bb[k - 1] * (1 + 1e-6):
            return False
    return True


@cached_njit
def _angle(u: np.ndarray, v: np.ndarray) -> float:
    """Angle (degrees) between unit vectors, as ``find_all_mappings`` computes it."""
    x = u[0] * v[0] + u[1] * v[1] + u[2] * v[2]
    x = min(1.0, max(-1.0, x))
    return math.degrees(math.acos(x))


@cached_njit
def _from_parameters(p: np.ndarray, out: np.ndarray) -> None:
    """``Lattice.from_parameters`` (pymatgen's default convention) into ``out`` (3x3)."""
    a, b, c = p[0], p[1], p[2]
    al, be, ga = math.radians(p[3]), math.radians(p[4]), math.radians(p[5])
    val = (math.cos(al) * math.cos(be) - math.cos(ga)) / (math.sin(al) * math.sin(be))
    gamma_star = math.acos(min(1.0, max(-1.0, val)))
    out[:] = 0.0
    out[0, 0] = a * math.sin(be)
    out[0, 2] = a * math.cos(be)
    out[1, 0] = -b * math.sin(al) * math.cos(gamma_star)
    out[1, 1] = b * math.sin(al) * math.sin(gamma_star)
    out[1, 2] = b * math.cos(al)
    out[2, 2] = c


@cached_njit
def _inv3(m: np.ndarray, out: np.ndarray) -> float:
    """Inverse of a 3x3 matrix into ``out``; returns the determinant."""
    c00 = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
    c01 = m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]
    c02 = m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]
    det = m[0, 0] * c00 + m[0, 1] * c01 + m[0, 2] * c02
    out[0, 0] = c00 / det
    out[1, 0] = c01 / det
    out[2, 0] = c02 / det
    out[0, 1] = (m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]) / det
    out[1, 1] = (m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]) / det
    out[2, 1] = (m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]) / det
    out[0, 2] = (m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]) / det
    out[1, 2] = (m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) / det
    out[2, 2] = (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) / det
    return det


@cached_njit
def _spread_ok(v: np.ndarray, n: int, rho: float) -> bool:
    """``max_i |v_i - mean(v)| < rho`` for the first ``n`` rows of ``v``."""
    mx = my = mz = 0.0
    for i in range(n):
        mx += v[i, 0]
        my += v[i, 1]
        mz += v[i, 2]
    mx /= n
    my /= n
    mz /= n
    for i in range(n):
        dx, dy, dz = v[i, 0] - mx, v[i, 1] - my, v[i, 2] - mz
        if math.sqrt(dx * dx + dy * dy + dz * dz) >= rho:
            return False
    return True


@cached_njit
def _some_bijection_ok(hit, cart, n, rho, choice, used, v) -> bool:
    """Is there a bijection σ inside ``hit`` with ``max |v_i − mean(v)| < rho`` (v_i =
    ``cart[i, σ(i)]``)? Odometer over the options; True (keep) when there are too many."""
    total = 1
    for i in range(n):
        c = 0
        for j in range(n):
            c += hit[i, j]
        total *= c
        if total > MAX_BIJECTIONS:
            return True
    # odometer: choice[i] = index of the next option of row i to try
    for i in range(n):
        choice[i] = 0
    while True:
        # build σ from the current choice (the choice[i]-th option of row i)
        for j in range(n):
            used[j] = False
        ok = True
        for i in range(n):
            k = -1
            c = 0
            for j in range(n):
                if hit[i, j]:
                    if c == choice[i]:
                        k = j
                        break
                    c += 1
            if used[k]:
                ok = False
                break
            used[k] = True
            v[i, 0], v[i, 1], v[i, 2] = cart[i, k, 0], cart[i, k, 1], cart[i, k, 2]
        if ok and _spread_ok(v, n, rho):
            return True
        # next choice
        i = n - 1
        while i >= 0:
            c = 0
            for j in range(n):
                c += hit[i, j]
            choice[i] += 1
            if choice[i] < c:
                break
            choice[i] = 0
            i -= 1
        if i < 0:
            return False


@cached_njit
def pair_status(
    ints: np.ndarray,
    lens: np.ndarray,
    unit: np.ndarray,
    ratio: float,
    lb: np.ndarray,
    angles_b: np.ndarray,
    frac1: np.ndarray,
    fc2: np.ndarray,
    mask: np.ndarray,
    t_inds: np.ndarray,
    anchor: int,
    ltol: float,
    angle_tol: float,
    stol: float,
) -> tuple[int, np.ndarray]:
    """Decide ``fit(a, b)`` for equal-size reduced cells where the numbers settle it.

    ``ints`` / ``lens`` / ``unit``: ``a``'s lattice vectors (integer coordinates, lengths
    before volume scaling, unit vectors) up to the radius the caller chose; ``ratio``: the
    volume scaling of ``_preprocess`` (a's lattice × ratio, b's ÷ ratio); ``lb`` /
    ``angles_b``: b's scaled lengths and its angles (α, β, γ); ``frac1`` / ``fc2``: the
    fractional sites; ``mask[i, j]``: b's site i may not take a's site j; ``t_inds`` /
    ``anchor``: the translations of ``_strict_match`` (a's sites for b's anchor site).

    Returns ``(status, kept)``: ``kept`` holds the scale matrices (K, 3, 3) of the mappings
    that passed the necessary test (meaningful when status is ``UNDECIDED``).

    The sufficient test (``FIT``) for one mapping S and translation: S passes the length and
    angle tests with narrowed tolerances (so ``find_all_mappings`` yields it, |det S| = 1);
    every b site i has exactly one a site σ(i) near it (σ a bijection) with the fractional check
    passed with narrowed tolerance (so ``is_coord_subset_pbc`` is True); each displacement v_i
    is shorter than 2·stol/n and than the average lattice's smallest plane spacing / 2^2.5, or /
    2 when that lattice is LLL-reduced already (so it is the unique shortest image, among
    pbc_shortest_vectors' 27 LLL images, inside its LLL fractional tolerance); Σ|v_i|² is below
    the squared lower bound (max_k |Δf_k|·spacing_k) of every other allowed pair (so σ is the
    unique optimum of the linear assignment); and max |v_i − mean(v)|·n < stol narrowed
    (``_cart_dists``' test).
    """
    n = frac1.shape[0]
    n_t = t_inds.shape[0]
    lens_s = lens * ratio
    hi, lo = (1 + ltol) * (1 + EPS), (1 - EPS) / (1 + ltol)
    hi_c, lo_c = (1 + ltol) * (1 - EPS), (1 + EPS) / (1 + ltol)
    tol, tol_c = angle_tol + ANGLE_SLACK, angle_tol - ANGLE_SLACK
    alpha, beta, gamma = angles_b[0], angles_b[1], angles_b[2]
    near = np.zeros((3, lens.shape[0]), dtype=np.bool_)
    inner = np.zeros((3, lens.shape[0]), dtype=np.bool_)
    counts = np.zeros(3, dtype=np.int64)
    for k in range(3):
        for v in range(lens.shape[0]):
            q = lens_s[v] / lb[k]
            if lo < q < hi:
                near[k, v] = True
                counts[k] += 1
                inner[k, v] = lo_c < q < hi_c
    kept = np.empty((max(1, counts[0] * counts[1] * counts[2]), 3, 3), dtype=np.int64)
    n_kept = 0
    if counts[0] == 0 or counts[1] == 0 or counts[2] == 0:
        return NO_FIT, kept[:0]
    # work arrays
    scale = np.empty((3, 3), dtype=np.float64)
    inv_s = np.empty((3, 3), dtype=np.float64)
    params = np.empty(6)
    avg = np.empty((3, 3))
    inv_avg = np.empty((3, 3))
    fc1 = np.empty((n, 3))
    diff = np.empty((n, n, 3))
    cart = np.empty((n, n, 3))
    hit = np.zeros((n, n), dtype=np.bool_)
    nopt = np.empty(n, dtype=np.int64)
    sigma = np.empty(n, dtype=np.int64)
    used = np.zeros(n, dtype=np.bool_)
    choice = np.empty(n, dtype=np.int64)
    vbuf = np.empty((n, 3))
    inv_abc = np.empty(3)
    spacing = np.empty(3)
    frac_tol = np.empty(3)
    for x in range(lens.shape[0]):
        if not near[0, x]:
            continue
        for y in range(lens.shape[0]):
            if not near[1, y]:
                continue
            g_ab = _angle(unit[x], unit[y])
            if abs(g_ab - gamma) > tol:
                continue
            for z in range(lens.shape[0]):
                if not near[2, z]:
                    continue
                g_ac = _angle(unit[x], unit[z])
                if abs(g_ac - beta) > tol:
                    continue
                g_bc = _angle(unit[y], unit[z])
                if abs(g_bc - alpha) > tol:
                    continue
                for c in range(3):
                    scale[0, c], scale[1, c], scale[2, c] = ints[x, c], ints[y, c], ints[z, c]
                det = _inv3(scale, inv_s)
                if abs(round(det)) != 1:
                    continue
                lattice_inner = (
                    inner[0, x]
                    and inner[1, y]
                    and inner[2, z]
                    and abs(g_ab - gamma) <= tol_c
                    and abs(g_ac - beta) <= tol_c
                    and abs(g_bc - alpha) <= tol_c
                )
                params[0] = (lens_s[x] + lb[0]) / 2
                params[1] = (lens_s[y] + lb[1]) / 2
                params[2] = (lens_s[z] + lb[2]) / 2
                params[3] = (g_bc + alpha) / 2
                params[4] = (g_ac + beta) / 2
                params[5] = (g_ab + gamma) / 2
                _from_parameters(params, avg)
                vol = abs(_inv3(avg, inv_avg))
                for k in range(3):  # reciprocal lengths (2π·|column k of inv|), plane spacings
                    r = math.sqrt(inv_avg[0, k] ** 2 + inv_avg[1, k] ** 2 + inv_avg[2, k] ** 2)
                    inv_abc[k] = 2 * math.pi * r
                    spacing[k] = 1.0 / r
                norm = (n / vol) ** (1.0 / 3.0)
                small = True
                for k in range(3):
                    frac_tol[k] = inv_abc[k] * stol / (math.pi * norm)
                    small = small and frac_tol[k] < 0.5 - 1e-6
                ball = 2 * stol / norm * (1 + EPS) + 1e-9
                rho = stol / norm * (1 + EPS) + 1e-9
                least = min(spacing[0], min(spacing[1], spacing[2]))
                factor = 2.0 if _is_lll_reduced(avg) else LLL_FACTOR
                short = min(2 * stol / norm, least / factor)
                short *= 1 - EPS
                # a's sites in the mapped lattice: frac1 · S⁻¹
                for i in range(n):
                    for c in range(3):
                        fc1[i, c] = (
                            frac1[i, 0] * inv_s[0, c]
                            + frac1[i, 1] * inv_s[1, c]
                            + frac1[i, 2] * inv_s[2, c]
                        )
                keep = False
                for t in range(n_t):
                    s1i = t_inds[t]
                    alive = True
                    for i in range(n):  # b's sites
                        cnt = 0
                        for j in range(n):  # a's sites
                            hit[i, j] = False
                            if mask[i, j]:
                                continue
                            ok = True
                            for c in range(3):
                                d = fc2[i, c] + fc1[s1i, c] - fc2[anchor, c] - fc1[j, c]
                                d -= round(d)
                                diff[i, j, c] = d
                                if abs(d) > frac_tol[c] * (1 + EPS) + 1e-9:
                                    ok = False
                            if not ok:
                                continue
                            dd = 0.0
                            for c in range(3):
                                cart[i, j, c] = (
                                    diff[i, j, 0] * avg[0, c]
                                    + diff[i, j, 1] * avg[1, c]
                                    + diff[i, j, 2] * avg[2, c]
                                )
                                dd += cart[i, j, c] ** 2
                            if small and math.sqrt(dd) > ball:
                                continue
                            hit[i, j] = True
                            cnt += 1
                            sigma[i] = j
                        nopt[i] = cnt
                        if cnt == 0:
                            alive = False
                            break
                    if not alive:
                        continue
                    forced = small
                    for i in range(n):
                        forced = forced and nopt[i] == 1
                    if not forced:
                        if not keep and (
                            not small or _some_bijection_ok(hit, cart, n, rho, choice, used, vbuf)
                        ):
                            keep = True
                        continue
                    for j in range(n):
                        used[j] = False
                    bij = True
                    for i in range(n):
                        if used[sigma[i]]:
                            bij = False
                        used[sigma[i]] = True
                        vbuf[i, 0] = cart[i, sigma[i], 0]
                        vbuf[i, 1] = cart[i, sigma[i], 1]
                        vbuf[i, 2] = cart[i, sigma[i], 2]
                    if not bij or not _spread_ok(vbuf, n, rho):
                        continue
                    keep = True
                    if not lattice_inner:
                        continue
                    # the sufficient test for this (mapping, translation)
                    sure = True
                    sumsq = 0.0
                    for i in range(n):
                        j = sigma[i]
                        vv = vbuf[i, 0] ** 2 + vbuf[i, 1] ** 2 + vbuf[i, 2] ** 2
                        sumsq += vv
                        if math.sqrt(vv) >= short:
                            sure = False
                        for c in range(3):
                            if abs(diff[i, j, c]) > frac_tol[c] * (1 - EPS) - 1e-9:
                                sure = False
                    if not sure:
                        continue
                    bound = 1e300  # smallest lower bound of |displacement|² of other pairs
                    for i in range(n):
                        for j in range(n):
                            if mask[i, j] or j == sigma[i]:
                                continue
                            lbd = 0.0
                            for c in range(3):
                                d = fc2[i, c] + fc1[s1i, c] - fc2[anchor, c] - fc1[j, c]
                                d = abs(d - round(d)) * spacing[c]
                                lbd = max(lbd, d)
                            bound = min(bound, lbd * lbd)
                    if not sumsq * (1 + 1e-6) + 1e-12 < bound * (1 - 1e-6):
                        continue
                    if _spread_ok(vbuf, n, stol / norm * (1 - EPS) - 1e-9):
                        return FIT, kept[:0]
                if keep:
                    for r in range(3):
                        for c in range(3):
                            kept[n_kept, r, c] = int(scale[r, c])
                    n_kept += 1
    if n_kept == 0:
        return NO_FIT, kept[:0]
    return UNDECIDED, kept[:n_kept]
