"""Reference predictions of matgl's own MEGNet models, for tests/predictors/data/.

Throwaway: this runs in a separate environment with matgl and DGL (it does not import
smoacs_flows), e.g.::

    python3.11 -m venv /tmp/matglenv
    /tmp/matglenv/bin/pip install "matgl==1.1.3" "dgl==2.1.0" "torch==2.2.1" "numpy<2" \
        "pymatgen==2024.5.1" "torchdata==0.7.1" "lightning<2.3"
    # matgl's pretrained_models/<name>/{model.json,model.pt,state.pt} at the shipped commit
    git --git-dir=<matgl.git> archive e9cde229 pretrained_models | tar -x -C /tmp/matgl-models
    /tmp/matglenv/bin/python scripts/megnet_matgl_reference.py /tmp/matgl-models/pretrained_models \
        tests/predictors/data/megnet_matgl_reference.json

(dgl 2.1.0 ships graphbolt libraries for torch <= 2.2.1, hence that torch.) The structures
are textbook crystals at experimental or Materials Project lattice constants, plus one
distorted low-symmetry supercell; the JSON keeps each structure's lattice, species and
fractional coordinates so that the test needs neither matgl nor this script.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

MODELS = {
    "megnet-mp-2018-eform": "MEGNet-MP-2018.6.1-Eform",
    "megnet-mp-2019-bandgap": "MEGNet-MP-2019.4.1-BandGap-mfi",
}


def structures() -> dict[str, object]:
    """Named pymatgen Structures (primitive cells where that is the usual choice)."""
    from pymatgen.core import Lattice, Structure

    def prim(s: Structure) -> Structure:
        return s.get_primitive_structure()

    out = {
        "Si (diamond)": prim(
            Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.4687), ["Si"], [[0, 0, 0]])
        ),
        "Fe (bcc)": prim(Structure(Lattice.cubic(2.833), ["Fe", "Fe"], [[0, 0, 0], [0.5] * 3])),
        "NaCl (rock salt)": prim(
            Structure.from_spacegroup(
                "Fm-3m", Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]
            )
        ),
        "MgO (rock salt)": prim(
            Structure.from_spacegroup(
                "Fm-3m", Lattice.cubic(4.256), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]
            )
        ),
        "GaAs (zinc blende)": prim(
            Structure.from_spacegroup(
                "F-43m", Lattice.cubic(5.75), ["Ga", "As"], [[0, 0, 0], [0.25] * 3]
            )
        ),
        "SrTiO3 (cubic perovskite)": Structure(
            Lattice.cubic(3.945),
            ["Sr", "Ti", "O", "O", "O"],
            [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
        "Co2MnSi (full Heusler)": prim(
            Structure.from_spacegroup(
                "Fm-3m",
                Lattice.cubic(5.654),
                ["Mn", "Si", "Co"],
                [[0, 0, 0], [0.5] * 3, [0.25] * 3],
            )
        ),
        "ZnO (wurtzite)": Structure.from_spacegroup(
            "P6_3mc",
            Lattice.hexagonal(3.25, 5.207),
            ["Zn", "O"],
            [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]],
        ),
        "TiO2 (rutile)": Structure.from_spacegroup(
            "P4_2/mnm",
            Lattice.tetragonal(4.594, 2.959),
            ["Ti", "O"],
            [[0, 0, 0], [0.305] * 2 + [0]],
        ),
    }
    # a distorted, triclinic BaTiO3 supercell (seeded): general geometry, 10 sites
    rng = np.random.default_rng(21)
    bto = Structure(
        Lattice.cubic(4.0),
        ["Ba", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    bto.make_supercell([2, 1, 1])
    strain = np.eye(3) + rng.normal(0.0, 0.03, (3, 3))
    bto = Structure(
        Lattice(bto.lattice.matrix @ strain),
        bto.species,
        bto.frac_coords + rng.normal(0.0, 0.02, bto.frac_coords.shape),
    )
    out["BaTiO3 (distorted 2x1x1)"] = bto
    return out


def main(models_dir: str, out_path: str) -> None:
    """Predict every structure with both models (all four gap fidelities) and write JSON."""
    import dgl
    import matgl
    import pymatgen.core
    import torch
    from matgl.ext.pymatgen import Structure2Graph

    torch.set_num_threads(1)
    loaded, sha = {}, {}
    for name, folder in MODELS.items():
        path = Path(models_dir) / folder
        sha[name] = hashlib.sha256((path / "state.pt").read_bytes()).hexdigest()
        loaded[name] = matgl.load_model(path)
    eform, gap = loaded["megnet-mp-2018-eform"], loaded["megnet-mp-2019-bandgap"]
    rows = []
    for label, s in structures().items():
        row = {
            "name": label,
            "formula": s.composition.reduced_formula,
            "lattice": s.lattice.matrix.tolist(),
            "species": [site.specie.symbol for site in s],
            "frac_coords": s.frac_coords.tolist(),
            "n_edges": {},
        }
        for name, m in loaded.items():
            conv = Structure2Graph(element_types=m.model.element_types, cutoff=m.model.cutoff)
            row["n_edges"][name] = int(conv.get_graph(s)[0].num_edges())
        row["formation_energy_per_atom"] = float(eform.predict_structure(s))
        row["band_gap"] = {
            fid: float(gap.predict_structure(s, state_attr=torch.tensor([i])))
            for i, fid in enumerate(["PBE", "GLLB-SC", "HSE", "SCAN"])
        }
        rows.append(row)
        print(label, row["formation_energy_per_atom"], row["band_gap"])
    doc = {
        "what": "matgl's own predictions (model.predict_structure) of its published MEGNet models",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": {
            "python": platform.python_version(),
            "matgl": matgl.__version__,
            "dgl": dgl.__version__,
            "torch": torch.__version__,
            "pymatgen": pymatgen.core.__version__,
            "numpy": np.__version__,
        },
        "matgl_repository": "https://github.com/materialsvirtuallab/matgl",
        "models": {
            n: {"path": f"pretrained_models/{MODELS[n]}", "state_sha256": sha[n]} for n in MODELS
        },
        "fidelity_state_attr": {"PBE": 0, "GLLB-SC": 1, "HSE": 2, "SCAN": 3},
        "structures": rows,
    }
    Path(out_path).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
