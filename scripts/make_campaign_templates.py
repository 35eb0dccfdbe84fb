"""Write the prototype templates used by campaigns/halfmetal_small.yaml (primitive cells).

Half-Heusler C1b (XYZ, F-43m), full Heusler L2_1 (X2YZ, Fm-3m), rock salt and zinc blende.
Species are placeholders: SMOACS re-optimises every site's element distribution.
"""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Lattice, Structure

OUT = Path(__file__).resolve().parents[1] / "campaigns" / "templates"


def fcc_prim(a: float) -> Lattice:
    """Primitive fcc lattice of the conventional constant ``a``."""
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def main() -> None:
    """Write the CIFs."""
    OUT.mkdir(parents=True, exist_ok=True)
    protos = {
        "half_heusler_C1b": Structure(
            fcc_prim(5.9), ["Ni", "Mn", "Sb"], [[0.25] * 3, [0.5] * 3, [0, 0, 0]]
        ),
        "full_heusler_L21": Structure(
            fcc_prim(5.65),
            ["Co", "Co", "Mn", "Si"],
            [[0.25] * 3, [0.75] * 3, [0.5] * 3, [0, 0, 0]],
        ),
        "rocksalt": Structure(fcc_prim(4.6), ["Cr", "Te"], [[0, 0, 0], [0.5] * 3]),
        "zincblende": Structure(fcc_prim(5.8), ["Cr", "As"], [[0, 0, 0], [0.25] * 3]),
    }
    for name, s in protos.items():
        s.to(filename=str(OUT / f"{name}.cif"))
        print(f"wrote {OUT / name}.cif ({s.composition.reduced_formula} prototype)")


if __name__ == "__main__":
    main()
