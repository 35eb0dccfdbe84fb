"""``predict`` warns when a structure lies outside a model's stated domain: the perov_5 models
on rock-salt MgO or on a 2x1x1 perovskite supercell, not on held-out perov_5 crystals."""

from __future__ import annotations

import json

from pymatgen.core import Lattice, Structure

from smoacs_flows.cli import main
from smoacs_flows.predictors.alignn import SHIPPED_DIR
from smoacs_flows.predictors.alignn_training import load_dataset
from smoacs_flows.predictors.domain import domain_problems

CARD = json.loads((SHIPPED_DIR / "perov5-band-gap" / "model_card.json").read_text())


def test_held_out_perovskites_are_inside(shared_data) -> None:
    data = load_dataset(shared_data / "perov_5" / "test.csv", "dir_gap", limit=30)
    inside = [s for s in data.structures if not domain_problems(CARD, s)]
    assert len(inside) >= 20  # most rows (some are distorted or mixed-anion cells)


def test_rock_salt_and_supercells_are_outside() -> None:
    mgo = Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert any("5-atom" in p for p in domain_problems(CARD, mgo))
    sto = Structure(
        Lattice.cubic(3.9),
        ["Sr", "Ti", "O", "O", "O"],
        [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
    )
    assert domain_problems(CARD, sto) == []
    big = sto.copy()
    big.make_supercell([2, 1, 1])
    assert domain_problems(CARD, big)
    pu = sto.copy()
    pu.replace_species({"Sr": "Pu"})
    assert any("Pu" in p for p in domain_problems(CARD, pu))


def test_predict_warns_on_stderr(tmp_path, capsys) -> None:
    mgo = Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = tmp_path / "mgo.cif"
    mgo.to(filename=str(path))
    assert main(["predict", str(path), "--model", "perov5-band-gap"]) == 0
    err = capsys.readouterr().err
    assert "warning: mgo: outside perov5-band-gap's domain" in err
