"""A curated library of crystal prototypes, decorated with a chemical system's elements.

The offline convex hull (:mod:`smoacs_flows.screening.prototype_hull`) needs competing phases
for every chemical system that reaches the stability stage. This module builds them: the
common elemental, binary and ternary structure types of inorganic and intermetallic chemistry
(Strukturbericht designations with their archetype compound), each given by its conventional
or primitive cell with site roles ``A``, ``B``, ``C``. :func:`decorate` puts a system's
elements on the roles in every distinct way and scales the cell so the shortest bond is the
sum of the atomic radii; the MLIP relaxation then finds each phase's own volume and shape.

Coordinates are the standard Wyckoff positions (International Tables, first origin choice
where there are two); the tests check every prototype's space group with spglib.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Lattice, Structure

_T = 1.0 / 3.0
_TT = 2.0 / 3.0


@dataclass(frozen=True)
class Prototype:
    """One structure type: cell parameters (Å, degrees; rescaled on decoration) and the
    fractional coordinates of each role's sites."""

    name: str  # e.g. "rocksalt_B1"
    archetype: str  # e.g. "NaCl"
    spacegroup: int  # international number, checked by the tests
    abc: tuple[float, float, float]
    angles: tuple[float, float, float]
    sites: tuple[tuple[str, tuple[float, float, float]], ...]

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles used, in order (``("A", "B")``)."""
        return tuple(sorted({r for r, _ in self.sites}))

    @property
    def stoichiometry(self) -> dict[str, int]:
        """Sites per role in the cell."""
        out: dict[str, int] = {}
        for r, _ in self.sites:
            out[r] = out.get(r, 0) + 1
        return out

    def structure(self, species: dict[str, str]) -> Structure:
        """The prototype's cell with ``species[role]`` on each role's sites (unscaled)."""
        lat = Lattice.from_parameters(*self.abc, *self.angles)
        return Structure(lat, [species[r] for r, _ in self.sites], [c for _, c in self.sites])


def _p(name, archetype, sg, abc, angles, *sites) -> Prototype:
    return Prototype(name, archetype, sg, tuple(abc), tuple(angles), tuple(sites))


def _pnma_4c(x: float, z: float) -> list[tuple[float, float, float]]:
    """The four positions of Wyckoff 4c (x, 1/4, z) of Pnma."""
    pts = [(x, 0.25, z), (0.5 - x, 0.75, z + 0.5), (-x, 0.75, -z), (x + 0.5, 0.25, 0.5 - z)]
    return [(a % 1, b % 1, c % 1) for a, b, c in pts]


def _p63mmc_6h(x: float) -> list[tuple[float, float, float]]:
    """The six positions of Wyckoff 6h (x, 2x, 1/4) of P6_3/mmc."""
    pts = [
        (x, 2 * x, 0.25),
        (-2 * x, -x, 0.25),
        (x, -x, 0.25),
        (-x, -2 * x, 0.75),
        (2 * x, x, 0.75),
        (-x, x, 0.75),
    ]
    return [(a % 1, b % 1, c % 1) for a, b, c in pts]


_CUBIC = (90.0, 90.0, 90.0)
_HEX = (90.0, 90.0, 120.0)
_FCC_PRIM = (60.0, 60.0, 60.0)

#: elemental structure types (the shipped MP ground states join them on the hull)
ELEMENTAL: tuple[Prototype, ...] = (
    _p("fcc_A1", "Cu", 225, (2.5, 2.5, 2.5), _FCC_PRIM, ("A", (0, 0, 0))),
    _p("bcc_A2", "W", 229, (3.0, 3.0, 3.0), _CUBIC, ("A", (0, 0, 0)), ("A", (0.5, 0.5, 0.5))),
    _p("hcp_A3", "Mg", 194, (2.5, 2.5, 4.08), _HEX, ("A", (_T, _TT, 0.25)), ("A", (_TT, _T, 0.75))),
    _p(
        "diamond_A4",
        "C",
        227,
        (2.5, 2.5, 2.5),
        _FCC_PRIM,
        ("A", (0, 0, 0)),
        ("A", (0.25, 0.25, 0.25)),
    ),
)

#: binary structure types, roles A and B
BINARY: tuple[Prototype, ...] = (
    _p("rocksalt_B1", "NaCl", 225, (3, 3, 3), _FCC_PRIM, ("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))),
    _p("CsCl_B2", "CsCl", 221, (3, 3, 3), _CUBIC, ("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))),
    _p(
        "zincblende_B3",
        "ZnS",
        216,
        (3, 3, 3),
        _FCC_PRIM,
        ("A", (0, 0, 0)),
        ("B", (0.25, 0.25, 0.25)),
    ),
    _p(
        "wurtzite_B4",
        "ZnO",
        186,
        (3, 3, 4.9),
        _HEX,
        ("A", (_T, _TT, 0)),
        ("A", (_TT, _T, 0.5)),
        ("B", (_T, _TT, 0.375)),
        ("B", (_TT, _T, 0.875)),
    ),
    _p(
        "NiAs_B81",
        "NiAs",
        194,
        (3.6, 3.6, 5.0),
        _HEX,
        ("A", (0, 0, 0)),
        ("A", (0, 0, 0.5)),
        ("B", (_T, _TT, 0.25)),
        ("B", (_TT, _T, 0.75)),
    ),
    # MnP (B31), Pnma; CrAs parameters (a 5.649, b 3.463, c 6.212 Å): A and B on 4c
    _p(
        "MnP_B31",
        "MnP",
        62,
        (5.649, 3.463, 6.212),
        _CUBIC,
        *(("A", c) for c in _pnma_4c(0.0064, 0.2006)),
        *(("B", c) for c in _pnma_4c(0.2046, 0.5834)),
    ),
    _p(
        "fluorite_C1",
        "CaF2",
        225,
        (3.8, 3.8, 3.8),
        _FCC_PRIM,
        ("A", (0, 0, 0)),
        ("B", (0.25, 0.25, 0.25)),
        ("B", (0.75, 0.75, 0.75)),
    ),
    _p(
        "L12",
        "Cu3Au",
        221,
        (3.7, 3.7, 3.7),
        _CUBIC,
        ("B", (0, 0, 0)),
        ("A", (0, 0.5, 0.5)),
        ("A", (0.5, 0, 0.5)),
        ("A", (0.5, 0.5, 0)),
    ),
    _p("L10", "CuAu", 123, (2.8, 2.8, 3.7), _CUBIC, ("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))),
    # D0_3 (BiF3 / Fe3Al) in the primitive fcc cell: B 4a, A 4b + 8c
    _p(
        "D03",
        "BiF3",
        225,
        (4.0, 4.0, 4.0),
        _FCC_PRIM,
        ("B", (0, 0, 0)),
        ("A", (0.5, 0.5, 0.5)),
        ("A", (0.25, 0.25, 0.25)),
        ("A", (0.75, 0.75, 0.75)),
    ),
    # D0_19 (Ni3Sn), P6_3/mmc: A 6h (x 2x 1/4, x = 5/6), B 2c
    _p(
        "D019",
        "Ni3Sn",
        194,
        (5.3, 5.3, 4.25),
        _HEX,
        ("B", (_T, _TT, 0.25)),
        ("B", (_TT, _T, 0.75)),
        *(("A", c) for c in _p63mmc_6h(5.0 / 6.0)),
    ),
    # D0_22 (Al3Ti), I4/mmm conventional cell: B 2a, A 2b + 4d
    _p(
        "D022",
        "Al3Ti",
        139,
        (3.85, 3.85, 8.6),
        _CUBIC,
        ("B", (0, 0, 0)),
        ("B", (0.5, 0.5, 0.5)),
        ("A", (0, 0, 0.5)),
        ("A", (0.5, 0.5, 0)),
        ("A", (0, 0.5, 0.25)),
        ("A", (0.5, 0, 0.25)),
        ("A", (0, 0.5, 0.75)),
        ("A", (0.5, 0, 0.75)),
    ),
    _p(
        "AlB2_C32",
        "AlB2",
        191,
        (3.0, 3.0, 3.25),
        _HEX,
        ("A", (0, 0, 0)),
        ("B", (_T, _TT, 0.5)),
        ("B", (_TT, _T, 0.5)),
    ),
    # C11_b (MoSi2), I4/mmm: A 2a, B 4e (0 0 z, z = 1/3)
    _p(
        "MoSi2_C11b",
        "MoSi2",
        139,
        (3.2, 3.2, 7.85),
        _CUBIC,
        ("A", (0, 0, 0)),
        ("A", (0.5, 0.5, 0.5)),
        ("B", (0, 0, 1 / 3)),
        ("B", (0, 0, 2 / 3)),
        ("B", (0.5, 0.5, 0.5 + 1 / 3)),
        ("B", (0.5, 0.5, 0.5 - 1 / 3)),
    ),
    # A15 (Cr3Si), Pm-3n: A 6c, B 2a
    _p(
        "A15",
        "Cr3Si",
        223,
        (4.6, 4.6, 4.6),
        _CUBIC,
        ("B", (0, 0, 0)),
        ("B", (0.5, 0.5, 0.5)),
        ("A", (0.25, 0, 0.5)),
        ("A", (0.75, 0, 0.5)),
        ("A", (0.5, 0.25, 0)),
        ("A", (0.5, 0.75, 0)),
        ("A", (0, 0.5, 0.25)),
        ("A", (0, 0.5, 0.75)),
    ),
    # Cu2Sb (C38), P4/nmm origin choice 1: A 2a + 2c (z 0.27), B 2c (z 0.70)
    _p(
        "Cu2Sb_C38",
        "Cu2Sb",
        129,
        (4.0, 4.0, 6.1),
        _CUBIC,
        ("A", (0, 0, 0)),
        ("A", (0.5, 0.5, 0)),
        ("A", (0, 0.5, 0.27)),
        ("A", (0.5, 0, 0.73)),
        ("B", (0, 0.5, 0.70)),
        ("B", (0.5, 0, 0.30)),
    ),
    # Fe2P (C22), P-62m: A 3f (x 0.2568) + 3g (x 0.5946), B 1b + 2c
    _p(
        "Fe2P_C22",
        "Fe2P",
        189,
        (5.865, 5.865, 3.456),
        _HEX,
        *(
            ("A", c)
            for x, z in ((0.2568, 0.0), (0.5946, 0.5))
            for c in ((x, 0, z), (0, x, z), (1 - x, 1 - x, z))
        ),
        ("B", (0, 0, 0.5)),
        ("B", (_T, _TT, 0)),
        ("B", (_TT, _T, 0)),
    ),
    # Ni2In (B8_2), P6_3/mmc: A 2a + 2d, B 2c
    _p(
        "Ni2In_B82",
        "Ni2In",
        194,
        (4.18, 4.18, 5.13),
        _HEX,
        ("A", (0, 0, 0)),
        ("A", (0, 0, 0.5)),
        ("A", (_T, _TT, 0.75)),
        ("A", (_TT, _T, 0.25)),
        ("B", (_T, _TT, 0.25)),
        ("B", (_TT, _T, 0.75)),
    ),
)

#: ternary structure types, roles A, B, C
TERNARY: tuple[Prototype, ...] = (
    # half Heusler (C1_b, MgAgAs), primitive fcc cell: A 4a, B 4b, C 4c
    _p(
        "half_heusler_C1b",
        "MgAgAs",
        216,
        (4.2, 4.2, 4.2),
        _FCC_PRIM,
        ("A", (0, 0, 0)),
        ("B", (0.5, 0.5, 0.5)),
        ("C", (0.25, 0.25, 0.25)),
    ),
    # full Heusler (L2_1, Cu2MnAl): A 8c, B 4a, C 4b
    _p(
        "heusler_L21",
        "Cu2MnAl",
        225,
        (4.2, 4.2, 4.2),
        _FCC_PRIM,
        ("B", (0, 0, 0)),
        ("C", (0.5, 0.5, 0.5)),
        ("A", (0.25, 0.25, 0.25)),
        ("A", (0.75, 0.75, 0.75)),
    ),
    # inverse Heusler (XA, Hg2CuTi): A 4a + 4c, B 4b, C 4d
    _p(
        "inverse_heusler_XA",
        "Hg2CuTi",
        216,
        (4.2, 4.2, 4.2),
        _FCC_PRIM,
        ("A", (0, 0, 0)),
        ("A", (0.25, 0.25, 0.25)),
        ("B", (0.5, 0.5, 0.5)),
        ("C", (0.75, 0.75, 0.75)),
    ),
    # cubic perovskite (E2_1, CaTiO3): A 1b (12-fold), B 1a, C (X) 3d
    _p(
        "perovskite_E21",
        "CaTiO3",
        221,
        (3.9, 3.9, 3.9),
        _CUBIC,
        ("B", (0, 0, 0)),
        ("A", (0.5, 0.5, 0.5)),
        ("C", (0.5, 0, 0)),
        ("C", (0, 0.5, 0)),
        ("C", (0, 0, 0.5)),
    ),
)

LIBRARY: tuple[Prototype, ...] = ELEMENTAL + BINARY + TERNARY
BY_NAME = {p.name: p for p in LIBRARY}


def _radius(symbol: str) -> float:
    """An atomic radius (Å) for the initial scale: pymatgen's atomic radius, else 1.5 Å."""
    r = Element(symbol).atomic_radius
    return float(r) if r is not None and math.isfinite(float(r)) else 1.5


def scaled(structure: Structure, bond_factor: float = 1.0) -> Structure:
    """``structure`` uniformly scaled so that no pair is closer than ``bond_factor`` times the
    sum of its atomic radii, and at least one pair is exactly that close."""
    s = structure.copy()
    species = [site.specie.symbol for site in s]
    radii = np.array([_radius(x) for x in species])
    ratio = 0.0
    for i, j, d in _pairs(s):
        ratio = max(ratio, bond_factor * (radii[i] + radii[j]) / d)
    s.scale_lattice(s.volume * ratio**3)
    return s


def _pairs(s: Structure) -> Iterable[tuple[int, int, float]]:
    """Every pair (i, j, distance) within 1.5 x the shortest distance, images included."""
    cutoff = 1.0
    while True:
        nbrs = s.get_neighbor_list(cutoff)
        if len(nbrs[0]):
            break
        cutoff *= 2
    dmin = float(np.min(nbrs[3]))
    keep = nbrs[3] <= 1.5 * dmin
    return zip(nbrs[0][keep], nbrs[1][keep], nbrs[3][keep])


@dataclass(frozen=True)
class Phase:
    """A decorated prototype: a competing phase of one chemical system."""

    prototype: str
    chemsys: str  # the elements it holds, sorted, "-"-joined
    assignment: tuple[tuple[str, str], ...]  # (role, element)
    structure: Structure

    @property
    def key(self) -> str:
        """A stable identifier: ``prototype:role=El,role=El``."""
        return self.prototype + ":" + ",".join(f"{r}={e}" for r, e in self.assignment)


def decorate(prototype: Prototype, elements: Iterable[str]) -> list[Phase]:
    """Every distinct decoration of ``prototype`` with exactly the given elements (one element
    per role, each element used), scaled to touching atomic radii. Decorations that give the
    same crystal (e.g. A and B swapped in rock salt) are kept once."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    els = sorted(set(elements))
    roles = prototype.roles
    if len(els) != len(roles):
        return []
    matcher = StructureMatcher(primitive_cell=False, scale=True, attempt_supercell=False)
    out: list[Phase] = []
    for perm in itertools.permutations(els):
        assign = dict(zip(roles, perm))
        s = scaled(prototype.structure(assign))
        if any(matcher.fit(s, p.structure) for p in out):
            continue
        out.append(Phase(prototype.name, "-".join(els), tuple(sorted(assign.items())), s))
    return out


#: experimental bond lengths (Å) of the diatomic elements, whose ground state is molecular
DIMERS = {"H": 0.741, "N": 1.098, "O": 1.208, "F": 1.412, "Cl": 1.988, "Br": 2.281, "I": 2.666}
#: elements that share another element's structure type in pymatgen's AFLOW library
ANALOGUES = {"Sb": ("As", "alpha As"), "Bi": ("As", "alpha As"), "Te": ("Se", "alpha Selenium")}
_MAX_ELEMENTAL_SITES = 32


def _aflow_elemental(symbol: str) -> list[tuple[str, Structure]]:
    """Elemental structures of ``symbol`` from pymatgen's AFLOW prototype library (its own
    element, or an analogue's structure type rescaled), at most 32 sites, no theoretical or
    high-pressure phases: ``[(name, structure)]``."""
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    src, only = ANALOGUES.get(symbol, (symbol, None))
    out = []
    for d in AFLOW_PROTOTYPE_LIBRARY:
        s = d["snl"].structure
        tags = d.get("tags", {})
        name = str(tags.get("mineral") or "")
        if len(s.composition.elements) != 1 or s.composition.elements[0].symbol != src:
            continue
        if len(s) > _MAX_ELEMENTAL_SITES or "Theoretical" in name or "ressure" in name:
            continue
        if only is not None and name != only:
            continue
        s = s.copy()
        s.replace_species({s.composition.elements[0]: symbol})
        if src != symbol:
            s = scaled(s)
        out.append((f"aflow_{tags.get('aflow')}", s))
    return out


def dimer(symbol: str, box: float = 8.0) -> Structure:
    """A diatomic molecule at its experimental bond length in a cubic box."""
    d = DIMERS[symbol]
    return Structure(
        Lattice.cubic(box), [symbol, symbol], [[0, 0, 0], [d, 0, 0]], coords_are_cartesian=True
    )


def is_nonmetal(symbol: str) -> bool:
    """Neither a metal nor a metalloid (pymatgen's classification): H, C, N, O, P, S, Se,
    the halogens and the noble gases."""
    el = Element(symbol)
    return not (el.is_metal or el.is_metalloid)


def elemental_phases(symbol: str) -> list[Phase]:
    """The elemental phases of one element: the close-packed, bcc and diamond types for
    metals and metalloids (diamond for carbon too), the element's own structures from
    the AFLOW library, and the molecule for diatomic gases. (A nonmetal packed like a metal
    is no competing phase, and CHGNet collapses such cells.)"""
    metallic = not is_nonmetal(symbol)
    group14 = Element(symbol).group == 14
    types = [p for p in ELEMENTAL if metallic or (p.name == "diamond_A4" and group14)]
    out = [ph for proto in types for ph in decorate(proto, [symbol])]
    for name, s in _aflow_elemental(symbol):
        out.append(Phase(name, symbol, (("A", symbol),), s))
    if symbol in DIMERS:
        out.append(Phase("dimer", symbol, (("A", symbol),), dimer(symbol)))
    return out


def phases_for(chemsys: str) -> list[Phase]:
    """Every prototype phase of exactly the elements of ``chemsys`` (``"Al-As"``): elemental
    phases for one element, binary types for two, ternary types for three, none beyond."""
    els = chemsys.split("-")
    if len(els) == 1:
        return elemental_phases(els[0])
    if sum(is_nonmetal(e) for e in els) > 1:
        # molecular and covalent nonmetal compounds (N-O, C-S, ...) are no intermetallic or
        # ionic structure type; the library has none for them
        return []
    lib = {2: BINARY, 3: TERNARY}.get(len(els), ())
    return [ph for proto in lib for ph in decorate(proto, els)]
