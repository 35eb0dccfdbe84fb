"""pymatgen's ``Lattice.get_niggli_reduced_lattice()``, bit for bit, compiled with numba.

pymatgen (2026.10) reduces a lattice in three steps:

1. LLL-reduce the basis (``Lattice._calculate_lll``), form the metric tensor and run the
   Grosse-Kunstleve et al. Niggli loop on it, only to get the Niggli *parameters*
   (a, b, c, α, β, γ) and from them a target ``Lattice.from_parameters``;
2. ``find_mapping(target, ltol=e, atol=1, skip_rotation_matrix=True)`` on the ORIGINAL lattice:
   the lattice points within ``max(target lengths)·(1 + e)`` (``get_points_in_sphere``, in the
   order its cell list yields them) whose lengths fall in the three length windows, then the
   first triple (i, j, k) in lexicographic order whose pairwise angles are within 1° of the
   target's and whose integer matrix has det > 0 (else the first with det ≠ 0);
3. the aligned matrix is those three points' Cartesian rows (``np.dot(frac, matrix)``), negated
   if its determinant is negative.

Only the integer matrix chosen in step 2 reaches the output, so :func:`niggli_scale` replays
steps 1-2 in compiled scalar code and returns that integer matrix; the rows are then computed
with the same ``np.dot`` as pymatgen. The replay is the same algorithm with the same decisions;
its floating-point values may differ from numpy's in the last bits (no FMA, another summation
order), so every comparison that decides anything (LLL rounding and Lovász test, each Niggli
test, the sphere/box/cell-list boundaries of a chosen point, the length windows, the 1° angle
tests) is checked for a margin far above that error (relative 1e-9, 1e-7°). If any decision is
that close to flipping, the result is flagged and the caller uses pymatgen's own code, so the
answer is pymatgen's either way. The cell-list order (cubes of edge r in lexicographic order,
within a cube the images in reverse insertion order) is that of
``pymatgen.optimization.neighbors.find_points_in_spheres``; :func:`sphere_points` reproduces
its whole output and tests/screening/test_matching_niggli.py compares the two.
"""

from __future__ import annotations

import math

import numpy as np

from smoacs_flows.screening.jit import cached_njit

NIGGLI_TOL = 1e-5  # pymatgen's default tolerance of get_niggli_reduced_lattice
LLL_DELTA = 0.75
REL = 1e-9  # relative margin a deciding comparison must clear
ANG = 1e-7  # margin (degrees) for the 1° angle tests
EDGE = 1e-12  # relative margin of the cell-list boundaries (points computed as pymatgen does)

OK, AMBIGUOUS, NO_MAPPING, LLL_AMBIGUOUS = 0, 1, 2, 3


@cached_njit
def _dot3(x, y) -> float:
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2]


@cached_njit
def _lt(x, y, tol, flag) -> bool:
    """``x < y``; sets ``flag[0]`` when |x - y| <= tol (too close to trust)."""
    if abs(x - y) <= tol:
        flag[0] = True
    return x < y


@cached_njit
def _lll(matrix, flag):
    """pymatgen's ``Lattice._calculate_lll(0.75)`` reduced matrix (rows), same decisions."""
    a = matrix.T.copy()  # columns are basis vectors, as in pymatgen
    b = np.zeros((3, 3))
    u = np.zeros((3, 3))
    m = np.zeros(3)
    b[:, 0] = a[:, 0]
    m[0] = _dot3(b[:, 0], b[:, 0])
    for i in range(1, 3):
        for c in range(i):
            u[i, c] = _dot3(a[:, i], b[:, c]) / m[c]
        for r in range(3):
            s = 0.0
            for c in range(i):
                s += b[r, c] * u[i, c]
            b[r, i] = a[r, i] - s
        m[i] = _dot3(b[:, i], b[:, i])
    k = 2
    steps = 0
    while k <= 3:
        steps += 1
        if steps > 1000:
            flag[0] = True
            break
        for i in range(k - 1, 0, -1):  # size reduction
            x = u[k - 1, i - 1]
            if abs(abs(x - math.floor(x)) - 0.5) <= REL * max(1.0, abs(x)):
                flag[0] = True  # round() at a half: too close to call
            q = np.rint(x)
            if q != 0:
                for r in range(3):
                    a[r, k - 1] -= q * a[r, i - 1]
                for c in range(i - 1):
                    u[k - 1, c] -= q * u[i - 1, c]
                u[k - 1, i - 1] -= q
        lhs = _dot3(b[:, k - 1], b[:, k - 1])
        rhs = (LLL_DELTA - abs(u[k - 1, k - 2]) ** 2) * _dot3(b[:, k - 2], b[:, k - 2])
        if not _lt(lhs, rhs, REL * max(abs(lhs), abs(rhs)), flag):  # Lovász holds
            k += 1
            continue
        for r in range(3):  # swap the k-th and (k-1)-th basis vectors
            a[r, k - 1], a[r, k - 2] = a[r, k - 2], a[r, k - 1]
        for s in range(k - 1, k + 1):
            for c in range(s - 1):
                u[s - 1, c] = _dot3(a[:, s - 1], b[:, c]) / m[c]
            for r in range(3):
                t = 0.0
                for c in range(s - 1):
                    t += b[r, c] * u[s - 1, c]
                b[r, s - 1] = a[r, s - 1] - t
            m[s - 1] = _dot3(b[:, s - 1], b[:, s - 1])
        if k > 2:
            k -= 1
        else:  # pymatgen's lstsq with a diagonal matrix: a division
            for rr in range(k, 3):
                for c in range(k - 2, k):
                    u[rr, c] = _dot3(a[:, rr], b[:, c]) / m[c]
    return a.T.copy()


@cached_njit
def _mat(a, b, c, d, e, f, g, h, i):
    """A 3x3 float matrix from its rows."""
    out = np.empty((3, 3))
    out[0, 0], out[0, 1], out[0, 2] = a, b, c
    out[1, 0], out[1, 1], out[1, 2] = d, e, f
    out[2, 0], out[2, 1], out[2, 2] = g, h, i
    return out


@cached_njit
def _transform(g, mm):
    """``Mᵀ G M``."""
    t = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            t[i, j] = g[i, 0] * mm[0, j] + g[i, 1] * mm[1, j] + g[i, 2] * mm[2, j]
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            out[i, j] = mm[0, i] * t[0, j] + mm[1, i] * t[1, j] + mm[2, i] * t[2, j]
    return out


@cached_njit
def _sign(x, e, tol, flag) -> float:
    """pymatgen's ``0 if abs(x) < e else x / abs(x)``."""
    if _lt(abs(x), e, tol, flag):
        return 0.0
    return 1.0 if x > 0 else -1.0


@cached_njit
def _niggli_parameters(lll, e, flag):
    """The Niggli loop of ``get_niggli_reduced_lattice`` on the metric tensor of ``lll``:
    (a, b, c, alpha, beta, gamma)."""
    g = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            g[i, j] = _dot3(lll[i], lll[j])
    tol = REL * max(g[0, 0], g[1, 1], g[2, 2])
    for _ in range(100):
        a_, b_, c_ = g[0, 0], g[1, 1], g[2, 2]
        e_, n_, y_ = 2 * g[1, 2], 2 * g[0, 2], 2 * g[0, 1]
        if _lt(b_ + e, a_, tol, flag) or (
            _lt(abs(a_ - b_), e, tol, flag) and _lt(abs(n_) + e, abs(e_), tol, flag)
        ):  # A1
            g = _transform(g, _mat(0.0, -1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
            a_, b_, c_ = g[0, 0], g[1, 1], g[2, 2]
            e_, n_, y_ = 2 * g[1, 2], 2 * g[0, 2], 2 * g[0, 1]
        if _lt(c_ + e, b_, tol, flag) or (
            _lt(abs(b_ - c_), e, tol, flag) and _lt(abs(y_) + e, abs(n_), tol, flag)
        ):  # A2
            g = _transform(g, _mat(-1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, -1.0, 0.0))
            continue
        sl = _sign(e_, e, tol, flag)
        sm = _sign(n_, e, tol, flag)
        sn = _sign(y_, e, tol, flag)
        p = sl * sm * sn
        if p == 1:  # A3
            i = -1.0 if sl == -1 else 1.0
            j = -1.0 if sm == -1 else 1.0
            k = -1.0 if sn == -1 else 1.0
            g = _transform(g, _mat(i, 0.0, 0.0, 0.0, j, 0.0, 0.0, 0.0, k))
        elif p == 0 or p == -1:  # A4
            i = -1.0 if sl == 1 else 1.0
            j = -1.0 if sm == 1 else 1.0
            k = -1.0 if sn == 1 else 1.0
            if i * j * k == -1:
                if sn == 0:
                    k = -1.0
                elif sm == 0:
                    j = -1.0
                elif sl == 0:
                    i = -1.0
            g = _transform(g, _mat(i, 0.0, 0.0, 0.0, j, 0.0, 0.0, 0.0, k))
        a_, b_, c_ = g[0, 0], g[1, 1], g[2, 2]
        e_, n_, y_ = 2 * g[1, 2], 2 * g[0, 2], 2 * g[0, 1]
        if (
            _lt(b_ + e, abs(e_), tol, flag)
            or (_lt(abs(e_ - b_), e, tol, flag) and _lt(2 * n_, y_ - e, tol, flag))
            or (_lt(abs(e_ + b_), e, tol, flag) and _lt(y_, -e, tol, flag))
        ):  # A5
            mm = np.eye(3)
            mm[1, 2] = -e_ / abs(e_)
            g = _transform(g, mm)
            continue
        if (
            _lt(a_ + e, abs(n_), tol, flag)
            or (_lt(abs(a_ - n_), e, tol, flag) and _lt(2 * e_, y_ - e, tol, flag))
            or (_lt(abs(a_ + n_), e, tol, flag) and _lt(y_, -e, tol, flag))
        ):  # A6
            mm = np.eye(3)
            mm[0, 2] = -n_ / abs(n_)
            g = _transform(g, mm)
            continue
        if (
            _lt(a_ + e, abs(y_), tol, flag)
            or (_lt(abs(a_ - y_), e, tol, flag) and _lt(2 * e_, n_ - e, tol, flag))
            or (_lt(abs(a_ + y_), e, tol, flag) and _lt(n_, -e, tol, flag))
        ):  # A7
            mm = np.eye(3)
            mm[0, 1] = -y_ / abs(y_)
            g = _transform(g, mm)
            continue
        s5 = e_ + n_ + y_ + a_ + b_
        if _lt(s5, -e, tol, flag) or (
            _lt(abs(s5), e, tol, flag) and _lt(e, y_ + (a_ + n_) * 2, tol, flag)
        ):  # A8
            g = _transform(g, _mat(1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0))
            continue
        break
    a = math.sqrt(g[0, 0])
    b = math.sqrt(g[1, 1])
    c = math.sqrt(g[2, 2])
    ca, cb, cg = g[1, 2] / b / c, g[0, 2] / a / c, g[0, 1] / a / b
    if abs(ca) > 1 or abs(cb) > 1 or abs(cg) > 1:  # pymatgen's math.acos raises
        flag[0] = True
        return np.zeros(6)
    out = np.empty(6)
    out[0], out[1], out[2] = a, b, c
    out[3], out[4], out[5] = (
        math.degrees(math.acos(ca)),
        math.degrees(math.acos(cb)),
        math.degrees(math.acos(cg)),
    )
    return out


@cached_njit
def _target(p):
    """Lengths and angles of ``Lattice.from_parameters(*p)`` (its matrix, then
    ``lengths`` / ``angles``)."""
    ar, br, gr = math.radians(p[3]), math.radians(p[4]), math.radians(p[5])
    val = (math.cos(ar) * math.cos(br) - math.cos(gr)) / (math.sin(ar) * math.sin(br))
    val = min(max(val, -1.0), 1.0)
    gs = math.acos(val)
    mat = _mat(
        p[0] * math.sin(br),
        0.0,
        p[0] * math.cos(br),
        -p[1] * math.sin(ar) * math.cos(gs),
        p[1] * math.sin(ar) * math.sin(gs),
        p[1] * math.cos(ar),
        0.0,
        0.0,
        p[2],
    )
    lengths = np.empty(3)
    for i in range(3):
        lengths[i] = math.sqrt(_dot3(mat[i], mat[i]))
    angles = np.zeros(3)
    for d in range(3):
        j, k = (d + 1) % 3, (d + 2) % 3
        x = min(max(_dot3(mat[j], mat[k]) / (lengths[j] * lengths[k]), -1.0), 1.0)
        angles[d] = math.degrees(math.acos(x))
    return lengths, angles


@cached_njit
def sphere_points(matrix, r):
    """``Lattice(matrix).get_points_in_sphere([[0, 0, 0]], [0, 0, 0], r)`` for r >= 1 Å, as
    pymatgen's cell list yields it: integer images (K, 3), distances (K,), Cartesian points
    (K, 3), per point whether a boundary test (sphere, box, cube) was within margin, and
    whether some point left out was within margin of a boundary."""
    tol = 1e-8
    vmin = 0.0 - r - tol
    vmax = 0.0 + r + tol
    ledge = r if r >= 0.1 else 0.1
    r2 = r * r
    # |n_i| <= |x| |column i of the inverse| = |x| |row j x row k| / |det| (generous bound)
    nmax = np.zeros(3, dtype=np.int64)
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        c0 = matrix[j, 1] * matrix[k, 2] - matrix[j, 2] * matrix[k, 1]
        c1 = matrix[j, 2] * matrix[k, 0] - matrix[j, 0] * matrix[k, 2]
        c2 = matrix[j, 0] * matrix[k, 1] - matrix[j, 1] * matrix[k, 0]
        det = matrix[i, 0] * c0 + matrix[i, 1] * c1 + matrix[i, 2] * c2
        col = math.sqrt(c0 * c0 + c1 * c1 + c2 * c2) / abs(det)
        nmax[i] = int(math.ceil((r + 1.0) * col * (1 + 1e-6))) + 1
    n0, n1, n2 = 2 * nmax[0] + 1, 2 * nmax[1] + 1, 2 * nmax[2] + 1
    total = n0 * n1 * n2
    ints = np.zeros((total, 3), dtype=np.int64)
    pts = np.zeros((total, 3))
    dist = np.zeros(total)
    key = np.zeros(total, dtype=np.int64)
    edge = np.zeros(total, dtype=np.bool_)
    dropped_near = False  # a point left out by a boundary test within margin
    cnt = 0
    lex = 0
    x = np.zeros(3)
    for i in range(-nmax[0], nmax[0] + 1):
        for j in range(-nmax[1], nmax[1] + 1):
            for k in range(-nmax[2], nmax[2] + 1):
                lex += 1
                for m in range(3):
                    x[m] = (
                        float(i) * matrix[0, m] + float(j) * matrix[1, m] + float(k) * matrix[2, m]
                    )
                inside = True
                near = False
                for m in range(3):
                    if not (x[m] > vmin and x[m] < vmax):
                        inside = False
                    if abs(x[m] - vmin) <= EDGE * r or abs(x[m] - vmax) <= EDGE * r:
                        near = True
                d2 = 0.0
                for m in range(3):
                    d2 += x[m] * x[m]
                if abs(d2 - (r2 + tol)) <= EDGE * r2:
                    near = True
                if not (inside and d2 < r2 + tol):
                    dropped_near = dropped_near or near
                    continue
                cube = 0
                for m in range(3):
                    t = (x[m] - vmin + 1e-8) / ledge
                    if abs(t - np.rint(t)) <= EDGE * 4:
                        near = True
                    cube = cube * 3 + int(math.floor(t))
                ints[cnt, 0], ints[cnt, 1], ints[cnt, 2] = i, j, k
                pts[cnt] = x
                dist[cnt] = math.sqrt(d2)
                key[cnt] = cube * (total + 1) + (total - lex)  # cubes ascending, images descending
                edge[cnt] = near
                cnt += 1
    order = np.arange(cnt)  # sort by key (all distinct); insertion sort: short, cheap to compile
    for i in range(1, cnt):
        o = order[i]
        j = i - 1
        while j >= 0 and key[order[j]] > key[o]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = o
    return ints[order], dist[order], pts[order], edge[order], dropped_near


@cached_njit
def _angle_ok(v1, v2, l1, l2, target, flag) -> bool:
    """pymatgen's ``isclose(degrees(arccos(clip(v1·v2 / l1 / l2))), target, atol=1, rtol=0)``."""
    x = _dot3(v1, v2) / l1 / l2
    x = min(max(x, -1.0), 1.0)
    dev = abs(math.degrees(math.acos(x)) - target)
    if abs(dev - 1.0) <= ANG:
        flag[0] = True
    return dev <= 1.0


@cached_njit
def niggli_scale(matrix, lll):
    """(status, scale, det_sign): the integer matrix S whose rows pymatgen's
    ``get_niggli_reduced_lattice`` takes (aligned = S @ matrix, negated when det_sign < 0).

    ``lll``: pymatgen's ``lattice.lll_matrix`` if known, else an empty (0, 3) array for the
    replay's own (:func:`scale_of` passes both as C-ordered copies: one compiled signature).
    status OK,
    AMBIGUOUS (some decision within margin: use pymatgen), NO_MAPPING, or LLL_AMBIGUOUS (a
    decision of the LLL replay within margin, e.g. an exact half to round in a skewed basis
    of a cubic lattice: call again with pymatgen's ``lll_matrix``)."""
    flag = np.zeros(1, dtype=np.bool_)
    scale = np.zeros((3, 3), dtype=np.int64)
    m = matrix
    det_m = (
        m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
        - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
        + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0])
    )
    norms = math.sqrt(_dot3(m[0], m[0]) * _dot3(m[1], m[1]) * _dot3(m[2], m[2]))
    if abs(det_m) <= 1e-6 * norms:
        return AMBIGUOUS, scale, 0
    e = NIGGLI_TOL * abs(det_m) ** (1 / 3)
    if lll.shape[0] == 0:
        own = _lll(matrix, flag)
        if flag[0]:
            return LLL_AMBIGUOUS, scale, 0
        params = _niggli_parameters(own, e, flag)
    else:
        params = _niggli_parameters(lll, e, flag)
    if flag[0]:
        return AMBIGUOUS, scale, 0
    lengths, angles = _target(params)
    r = max(lengths[0], lengths[1], lengths[2]) * (1 + e)
    if r < 1.0:  # pymatgen's cell list takes another route below 1 Å
        return AMBIGUOUS, scale, 0
    ints, dist, pts, edge, dropped_near = sphere_points(matrix, r)
    if dropped_near:
        return AMBIGUOUS, scale, 0
    hi, lo = 1 + e, 1 / (1 + e)
    cand = np.zeros((3, len(dist)), dtype=np.int64)
    ncand = np.zeros(3, dtype=np.int64)
    for p in range(len(dist)):
        for w in range(3):
            q = dist[p] / lengths[w]
            if abs(q - hi) <= REL or abs(q - lo) <= REL:
                return AMBIGUOUS, scale, 0
            if q < hi and q > lo:
                if edge[p]:
                    return AMBIGUOUS, scale, 0
                cand[w, ncand[w]] = p
                ncand[w] += 1
    na, nb, nc = ncand[0], ncand[1], ncand[2]
    ln = np.empty(len(dist))
    for p in range(len(dist)):
        ln[p] = math.sqrt(_dot3(pts[p], pts[p]))
    gam = np.zeros((na, nb), dtype=np.bool_)
    alp = np.zeros((nb, nc), dtype=np.bool_)
    bet = np.zeros((na, nc), dtype=np.bool_)
    for i in range(na):
        pa = cand[0, i]
        for j in range(nb):
            pb = cand[1, j]
            gam[i, j] = _angle_ok(pts[pa], pts[pb], ln[pa], ln[pb], angles[2], flag)
        for k in range(nc):
            pc = cand[2, k]
            bet[i, k] = _angle_ok(pts[pa], pts[pc], ln[pa], ln[pc], angles[1], flag)
    for j in range(nb):
        pb = cand[1, j]
        for k in range(nc):
            pc = cand[2, k]
            alp[j, k] = _angle_ok(pts[pb], pts[pc], ln[pb], ln[pc], angles[0], flag)
    if flag[0]:
        return AMBIGUOUS, scale, 0
    first = -1
    fi = fj = fk = 0
    for i in range(na):
        for j in range(nb):
            if not gam[i, j]:
                continue
            for k in range(nc):
                if not (alp[j, k] and bet[i, k]):
                    continue
                s = np.empty((3, 3), dtype=np.int64)
                s[0], s[1], s[2] = ints[cand[0, i]], ints[cand[1, j]], ints[cand[2, k]]
                det = (
                    s[0, 0] * (s[1, 1] * s[2, 2] - s[1, 2] * s[2, 1])
                    - s[0, 1] * (s[1, 0] * s[2, 2] - s[1, 2] * s[2, 0])
                    + s[0, 2] * (s[1, 0] * s[2, 1] - s[1, 1] * s[2, 0])
                )
                if det == 0:
                    continue
                if det > 0:
                    sign = 1 if det_m > 0 else -1
                    return OK, s, sign
                if first < 0:
                    first, fi, fj, fk = 1, i, j, k
    if first < 0:
        return NO_MAPPING, scale, 0
    scale[0], scale[1], scale[2] = ints[cand[0, fi]], ints[cand[1, fj]], ints[cand[2, fk]]
    return OK, scale, (-1 if det_m > 0 else 1)


def scale_of(matrix: np.ndarray, lll: np.ndarray | None = None) -> tuple[int, np.ndarray, int]:
    """:func:`niggli_scale` on C-ordered float64 copies (``lll`` None: the replay's own)."""
    lll = np.zeros((0, 3)) if lll is None else np.array(lll, dtype=np.float64, order="C")
    return niggli_scale(np.array(matrix, dtype=np.float64, order="C"), lll)
