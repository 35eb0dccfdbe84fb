"""pymatgen's ``IStructure.get_primitive_structure()`` (default arguments) with its candidate
translation filter computed in one vectorised step.

pymatgen (2026.10) first narrows the candidate primitive translations ``min_vecs`` (differences
of the smallest species group's coordinates) by calling ``pbc_coord_intersection`` once per
site: a periodic ``cKDTree`` query keeping the rows of ``min_vecs`` that lie within the
doubled tolerance (Chebyshev, in fractional units scaled by ``1 / tol``) of some
``group - site``. Each call keeps or drops each row on its own, so the sequence of calls keeps
exactly the rows that pass every test, in their order; :func:`_kept_translations` evaluates all
those tests at once with the same scaled, clipped, wrapped coordinates. A distance within 1e-9
of the bound (where the tree's and numpy's last bits could disagree) returns None and the
caller runs pymatgen's own method. The rest of :func:`primitive_structure` is pymatgen's code
path, operation for operation (site grouping, supercell matrices by determinant, validity
tests, position averaging, recursion, final Niggli reduction), so the result is pymatgen's.
Checked against pymatgen in tests/screening/test_matching_niggli.py and
benchmarks/reduce_exact.py.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from pymatgen.core import IStructure, Lattice, Structure

TOLERANCE = 0.25  # get_primitive_structure's default (Å)
MARGIN = 1e-9


def _kept_translations(
    min_vecs: np.ndarray, groups: list[np.ndarray], tol: np.ndarray
) -> np.ndarray | None:
    """The rows of ``min_vecs`` that pymatgen's per-site ``pbc_coord_intersection`` calls keep
    (every site of every group), or None when a distance is too close to the bound."""
    scale = 1.0 / tol
    top = scale * (1 - 1e-15)
    a = np.clip((min_vecs % 1.0) * scale, 0, top)
    keep = np.ones(len(min_vecs), dtype=bool)
    for g in groups:
        diffs = (g[None, :, :] - g[:, None, :]).reshape(-1, 3)  # group - site, every site
        b = np.clip((diffs % 1.0) * scale, 0, top)
        d = np.abs(a[:, None, :] - b[None, :, :])
        d = np.minimum(d, scale - d).max(axis=-1)  # periodic Chebyshev distance
        if (np.abs(d - 1.0) <= MARGIN).any():
            return None
        near = (d < 1.0).reshape(len(min_vecs), len(g), len(g)).any(axis=-1)
        keep &= near.all(axis=-1)
    return min_vecs[keep]


def _hnf(form_units: int) -> Iterator[tuple[int, np.ndarray]]:
    """pymatgen's supercell matrices of determinant dividing ``form_units`` (> 1), batched by
    diagonal, in its order."""
    for det in (i for i in range(1, form_units + 1) if form_units % i == 0):
        if det == 1:
            continue
        for a in (i for i in range(1, det + 1) if det % i == 0):
            for e in (i for i in range(1, det // a + 1) if (det // a) % i == 0):
                g = det // a // e
                yield (
                    det,
                    np.array(
                        [
                            [[a, b, c], [0, e, f], [0, 0, g]]
                            for b, c, f in itertools.product(range(a), range(a), range(e))
                        ]
                    ),
                )


def primitive_structure(self: IStructure) -> IStructure | Structure | None:
    """``self.get_primitive_structure()`` (tolerance 0.25, no site properties in the grouping,
    no lattice constraint, reduced), or None where the filter cannot vouch for pymatgen's."""
    sites = sorted(self._sites, key=lambda site: site.species_string)
    grouped_sites = [
        list(grp) for _, grp in itertools.groupby(sites, key=lambda site: site.species_string)
    ]
    grouped_frac_coords = [np.array([s.frac_coords for s in g]) for g in grouped_sites]
    min_frac_coords = min(grouped_frac_coords, key=len)
    min_vecs = min_frac_coords - min_frac_coords[0]
    super_ftol = np.divide(TOLERANCE, self.lattice.abc)
    min_vecs = _kept_translations(min_vecs, sorted(grouped_frac_coords, key=len), super_ftol * 2)
    if min_vecs is None:
        return None
    grouped_non_nbrs = []
    for gf_coords in grouped_frac_coords:
        fdist = gf_coords[None, :, :] - gf_coords[:, None, :]
        fdist -= np.round(fdist)
        np.abs(fdist, fdist)
        non_nbrs = np.any(fdist > 2 * super_ftol[None, None, :], axis=-1)
        np.fill_diagonal(non_nbrs, val=True)
        grouped_non_nbrs.append(non_nbrs)
    num_fu = functools.reduce(math.gcd, map(len, grouped_sites))
    for size, ms in _hnf(num_fu):
        inv_ms = np.linalg.inv(ms)
        dist = inv_ms[:, :, None, :] - min_vecs[None, None, :, :]
        dist -= np.round(dist)
        np.abs(dist, dist)
        inds = np.all(np.any(np.all(dist < super_ftol, axis=-1), axis=-1), axis=-1)
        for inv_m, latt_mat in zip(inv_ms[inds], ms[inds], strict=True):
            new_m = np.dot(inv_m, self.lattice.matrix)
            ftol = np.divide(TOLERANCE, np.sqrt(np.sum(new_m**2, axis=1)))
            built = _merged_sites(grouped_sites, grouped_frac_coords, grouped_non_nbrs,
                                  latt_mat, ftol, size)  # fmt: skip
            if built is None:
                continue
            new_sp, new_coords, new_props, new_labels = built
            new_latt = Lattice(np.dot(np.linalg.inv(latt_mat), self.lattice.matrix))
            struct = Structure(
                new_latt,
                new_sp,
                new_coords,
                site_properties=new_props,
                labels=new_labels,
                coords_are_cartesian=False,
            )
            primitive = struct.get_primitive_structure(
                tolerance=TOLERANCE, use_site_props=False, constrain_latt=[], reduce=True
            )
            return primitive.get_reduced_structure()
    return self.copy()


def _merged_sites(grouped_sites, grouped_frac_coords, grouped_non_nbrs, latt_mat, ftol, size):
    """pymatgen's validity test of one supercell matrix and, if valid, the averaged sites of
    the smaller cell (species, coordinates, properties, labels); None if not valid."""
    new_coords, new_sp, new_labels = [], [], []
    new_props: dict = defaultdict(list)
    for gsites, gf_coords, non_nbrs in zip(
        grouped_sites, grouped_frac_coords, grouped_non_nbrs, strict=True
    ):
        all_frac = np.dot(gf_coords, latt_mat)
        fdist = all_frac[None, :, :] - all_frac[:, None, :]
        fdist = np.abs(fdist - np.round(fdist))
        close_in_prim = np.all(fdist < ftol[None, None, :], axis=-1)
        groups = np.logical_and(close_in_prim, non_nbrs)
        if not np.all(np.sum(groups, axis=0) == size):
            return None
        for group in groups:
            if not np.all(groups[group][:, group]):
                return None
        added = np.zeros(len(gsites))
        new_frac_coords = all_frac % 1
        for grp_idx, group in enumerate(groups):
            if not added[grp_idx]:
                added[group] = True
                inds = np.where(group)[0]
                coords = new_frac_coords[inds[0]]  # a view, updated in place as in pymatgen
                for inner_idx, ind in enumerate(inds[1:]):
                    offset = new_frac_coords[ind] - coords
                    coords += (offset - np.round(offset)) / (inner_idx + 2)
                new_sp.append(gsites[inds[0]].species)
                for k in gsites[inds[0]].properties:
                    new_props[k].append(gsites[inds[0]].properties[k])
                new_labels.append(gsites[inds[0]].label)
                new_coords.append(coords)
    return new_sp, new_coords, new_props, new_labels
