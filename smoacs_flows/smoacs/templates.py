"""Crystal templates: files, folders, synthetic cubic perovskites and supercells."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from smoacs_flows.errors import InputError

TEMPLATE_SUFFIXES = (".cif", ".json", ".vasp", ".poscar")


@dataclass
class Template:
    """A starting geometry: lattice and fractional coordinates, with optional site roles."""

    id: str
    structure: Structure
    #: per-site role ("A", "B", "X") for perovskites, else None
    roles: list[str] | None = None
    #: (min, max) lattice length in Å allowed during optimisation
    length_range: tuple[float, float] | None = None
    #: explicit oxidation patterns (one number per site), or None to enumerate
    patterns: list[tuple[int, ...]] | None = None
    #: formula units per cell (for moments per formula unit)
    formula_units: int = 1
    meta: dict = field(default_factory=dict)

    @property
    def n_sites(self) -> int:
        """Number of sites."""
        return len(self.structure)


def synthetic_perovskite(
    rng: np.random.Generator, length_range: tuple[float, float] = (2.0, 10.0), index: int = 0
) -> Template:
    """Cubic ABX3 as in the SMOACS paper: B at the origin with X at the edge centres
    (½,0,0), (0,½,0), (0,0,½) (the BX6 octahedron, B–X = a/2), A at the body centre in the
    12-fold cuboctahedral cage (A–X = a/√2); a = b = c random."""
    a = float(rng.uniform(*length_range))
    coords = [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]
    s = Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"], coords)
    return Template(
        id=f"perovskite-{index:04d}",
        structure=s,
        roles=["A", "B", "X", "X", "X"],
        length_range=length_range,
        meta={"kind": "synthetic_perovskite", "a": a},
    )


def read_structure(path: Path) -> Structure:
    """Read one structure file (CIF, pymatgen JSON, POSCAR); errors name the file."""
    from smoacs_flows.io import check_input_file, warnings_only_on_success

    check_input_file(path, "template file")  # no /dev/zero behind a symlink, no huge file
    try:
        with warnings_only_on_success():
            if path.suffix.lower() == ".json":
                s = Structure.from_dict(json.loads(path.read_text()))
            else:
                s = Structure.from_file(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure is bad input
        raise InputError(f"template file {path}: cannot be read as a structure ({exc})") from None
    if len(s) == 0:
        raise InputError(f"template file {path}: contains no sites")
    if len(s) > MAX_TEMPLATE_SITES:  # 1,008 sites ended in a RecursionError
        raise InputError(
            f"template file {path}: {len(s)} sites, over the {MAX_TEMPLATE_SITES}-site limit of "
            "a template (use its primitive cell; supercells come from the campaign's supercell)"
        )
    return s


#: most sites of a template file
MAX_TEMPLATE_SITES = 256


def load_templates(path: str | Path) -> list[Template]:
    """Templates from a structure file or a folder of them (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in TEMPLATE_SUFFIXES)
        if not files:
            raise InputError(f"template folder {path}: no {'/'.join(TEMPLATE_SUFFIXES)} files")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"template path {path}: no such file or folder")
    out = []
    for f in files:
        s = read_structure(f)
        s = Structure(s.lattice, [site.species.elements[0] for site in s], s.frac_coords)
        out.append(Template(id=f.stem, structure=s, meta={"kind": "file", "path": str(f)}))
    return out


def make_supercell(template: Template, scaling: tuple[int, int, int]) -> Template:
    """Supercell of a template; roles and explicit patterns are tiled with the sites."""
    if tuple(scaling) == (1, 1, 1):
        return template
    s = template.structure.copy()
    s.add_site_property("template_site", list(range(len(s))))
    s.make_supercell(list(scaling))
    origin = [int(i) for i in s.site_properties["template_site"]]
    s.remove_site_property("template_site")
    mult = int(np.prod(scaling))
    lo_hi = template.length_range
    if lo_hi is not None:
        k = max(scaling)
        lo_hi = (lo_hi[0] * k, lo_hi[1] * k)
    return Template(
        id=f"{template.id}-x{'x'.join(map(str, scaling))}",
        structure=s,
        roles=[template.roles[i] for i in origin] if template.roles else None,
        length_range=lo_hi,
        patterns=[tuple(p[i] for i in origin) for p in template.patterns]
        if template.patterns
        else None,
        formula_units=template.formula_units * mult,
        meta={**template.meta, "supercell": list(scaling), "origin_site": origin},
    )
