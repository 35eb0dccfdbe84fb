"""The pure-torch MEGNet predictor against matgl itself, finite differences and its files.

References (none of them computed by this project's code):

* ``data/megnet_matgl_reference.json``: matgl 1.1.3 + DGL's own ``predict_structure`` on ten
  crystals, made by ``scripts/megnet_matgl_reference.py`` in a separate environment (command
  and versions inside the file);
* matgl's published tutorial output for CsCl (docs/tutorials, matgl commit 0bab0b17,
  printed to three decimals);
* central finite differences for the gradients.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from smoacs_flows.errors import InputError, SpecError
from smoacs_flows.predictors.base import SoftCrystalBatch, build_predictor
from smoacs_flows.predictors.megnet import (
    ELEMENT_Z,
    FIDELITIES,
    MODELS_DIR,
    SHIPPED,
    build,
    predict_structures,
)

REFERENCE = Path(__file__).parent / "data" / "megnet_matgl_reference.json"
EFORM, GAP = "megnet-mp-2018-eform", "megnet-mp-2019-bandgap"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def ref_structures(reference) -> list[Structure]:
    return [
        Structure(Lattice(r["lattice"]), r["species"], r["frac_coords"])
        for r in reference["structures"]
    ]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_match_their_provenance(name: str) -> None:
    root = MODELS_DIR / name
    prov = json.loads((root / "provenance.json").read_text())
    assert prov["source"]["repository"] == "https://github.com/materialsvirtuallab/matgl"
    assert len(prov["source"]["commit"]) == 40
    for fname, meta in prov["source"]["files"].items():
        data = (root / fname).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], fname
    assert "BSD 3-Clause" in (root / "LICENSE").read_text()
    assert (root / "state.pt").stat().st_size < 1_000_000
    # plain tensors: the safe loader reads it
    state = torch.load(root / "state.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_reference_was_made_from_the_shipped_weights(reference) -> None:
    for name, meta in reference["models"].items():
        data = (MODELS_DIR / name / "state.pt").read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["state_sha256"]
    assert reference["versions"]["matgl"] and reference["versions"]["dgl"]
    assert len(reference["structures"]) >= 8


def test_formation_energy_matches_matgl(reference, ref_structures) -> None:
    # all ten crystals in one batch (batching must not mix crystals)
    ours = predict_structures(build(model=EFORM), ref_structures)
    theirs = [r["formation_energy_per_atom"] for r in reference["structures"]]
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_band_gap_matches_matgl_at_every_fidelity(reference, ref_structures, fidelity) -> None:
    ours = predict_structures(build(model=GAP, fidelity=fidelity), ref_structures)
    theirs = [r["band_gap"][fidelity] for r in reference["structures"]]
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", SHIPPED)
def test_neighbour_graph_has_matgls_edge_count(reference, ref_structures, name) -> None:
    p = build(model=name)
    batch = SoftCrystalBatch.from_structures(ref_structures)
    p.refresh(batch)
    counts = torch.bincount(p._graph.edges.edge_crystal, minlength=len(ref_structures))
    assert counts.tolist() == [r["n_edges"][name] for r in reference["structures"]]


def test_matches_matgls_published_tutorial_for_cscl() -> None:
    # matgl docs/tutorials "Property Predictions using MEGNet or M3GNet Models" (0bab0b17)
    s = Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(4.1437), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    assert predict_structures(build(model=EFORM), [s])[0] == pytest.approx(-2.272, abs=6e-4)
    published = {"PBE": 4.825, "GLLB-SC": 8.323, "HSE": 6.317, "SCAN": 5.965}
    for fid, value in published.items():
        got = predict_structures(build(model=GAP, fidelity=fid), [s])[0]
        assert got == pytest.approx(value, abs=6e-4), fid


def _soft_perovskite() -> SoftCrystalBatch:
    """A strained cubic perovskite with mixed A (Sr/Ba) and B (Ti/Zr) sites, float64."""
    torch.manual_seed(0)
    s = Structure(
        Lattice.cubic(4.0),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    b = SoftCrystalBatch.from_structures([s])
    probs = b.element_probs.double()
    probs[0, 37], probs[0, 55] = 0.7, 0.3  # Sr, Ba
    probs[1, 21], probs[1, 39] = 0.6, 0.4  # Ti, Zr
    lattice = b.lattice.double() + 0.05 * torch.randn(1, 3, 3, dtype=torch.float64)
    frac = b.frac_coords.double() + 0.01 * torch.randn(5, 3, dtype=torch.float64)
    return SoftCrystalBatch(lattice, frac, probs, b.crystal_index, b.n_sites)


@pytest.mark.parametrize(("name", "fidelity"), [(EFORM, None), (GAP, "PBE"), (GAP, "HSE")])
def test_gradients_match_finite_differences(name, fidelity) -> None:
    p = build(model=name, fidelity=fidelity, dtype="float64")
    base = _soft_perovskite()
    p.refresh(base)  # the graph stays fixed while we differentiate
    prop = p.property_name
    lat = base.lattice.clone().requires_grad_(True)
    frac = base.frac_coords.clone().requires_grad_(True)
    probs = base.element_probs.clone().requires_grad_(True)

    def f(lat_, frac_, probs_) -> torch.Tensor:
        b = SoftCrystalBatch(lat_, frac_, probs_, base.crystal_index, base.n_sites)
        return p.predict(b)[prop].sum()

    g_lat, g_frac, g_probs = torch.autograd.grad(f(lat, frac, probs), (lat, frac, probs))
    h = 1e-5
    checks = [(0, (0, 0, 0)), (0, (0, 1, 2)), (0, (0, 2, 2)), (1, (2, 1)), (1, (4, 0))]
    checks += [(2, (0, 37)), (2, (0, 55)), (2, (1, 39)), (2, (3, 7))]
    for which, idx in checks:
        args = [lat.detach(), frac.detach(), probs.detach()]
        plus, minus = (a.clone() for a in (args[which], args[which]))
        plus[idx] += h
        minus[idx] -= h
        a_plus, a_minus = list(args), list(args)
        a_plus[which], a_minus[which] = plus, minus
        with torch.no_grad():
            fd = float((f(*a_plus) - f(*a_minus)) / (2 * h))
        grad = float((g_lat, g_frac, g_probs)[which][idx])
        assert grad == pytest.approx(fd, rel=1e-5, abs=1e-7), (which, idx)
    assert float(g_probs[0, 37]) != pytest.approx(float(g_probs[0, 55]), abs=1e-6)


def test_one_hot_soft_batch_equals_the_structure_and_mixing_moves_it() -> None:
    p = build(model=GAP)
    s = Structure(
        Lattice.cubic(3.945),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    b = SoftCrystalBatch.from_structures([s])
    one_hot = float(p.predict(b)["band_gap"][0])
    assert one_hot == pytest.approx(predict_structures(p, [s])[0], abs=1e-6)
    probs = b.element_probs.clone()
    probs[1, 21], probs[1, 39] = 0.5, 0.5  # Ti/Zr half and half
    mixed = float(
        p.predict(SoftCrystalBatch(b.lattice, b.frac_coords, probs, b.crystal_index, b.n_sites))[
            "band_gap"
        ][0]
    )
    assert abs(mixed - one_hot) > 1e-3


def test_refresh_follows_the_geometry() -> None:
    p = build(model=EFORM)
    s = Structure(Lattice.cubic(2.833), ["Fe", "Fe"], [[0, 0, 0], [0.5] * 3])
    b = SoftCrystalBatch.from_structures([s])
    p.refresh(b)
    assert p.needs_graph_refresh
    big = SoftCrystalBatch(
        b.lattice * 1.5, b.frac_coords, b.element_probs, b.crystal_index, b.n_sites
    )
    stale = float(p.predict(big)["formation_energy_per_atom"][0])
    p.refresh(big)
    fresh = float(p.predict(big)["formation_energy_per_atom"][0])
    s.scale_lattice(s.volume * 1.5**3)
    assert fresh == pytest.approx(predict_structures(build(model=EFORM), [s])[0], abs=1e-5)
    assert stale != pytest.approx(fresh, abs=1e-4)  # second neighbours (4.25 Å) left the 4 Å cutoff


def test_campaign_spec_and_options() -> None:
    p = build_predictor({"type": "megnet", "model": GAP, "fidelity": "hse"})
    assert p.properties == {"band_gap": "eV"} and p.fidelity_name == "HSE"
    assert build_predictor({"type": "megnet", "model": GAP}).fidelity_name == "PBE"
    e = build_predictor({"type": "megnet", "model": EFORM})
    assert e.properties == {"formation_energy_per_atom": "eV/atom"}
    assert e.supported_z == frozenset(ELEMENT_Z) and len(ELEMENT_Z) == 89
    assert 84 not in e.supported_z and 89 in e.supported_z
    with pytest.raises(SpecError, match="fidelity"):
        build(model=GAP, fidelity="LDA")
    with pytest.raises(SpecError, match="no fidelity"):
        build(model=EFORM, fidelity="PBE")
    with pytest.raises(SpecError, match="unknown"):
        build(model=GAP, cutoff=6.0)
    with pytest.raises(InputError, match="neither a shipped model"):
        build(model="megnet-nonexistent")


def test_unsupported_elements_are_refused() -> None:
    s = Structure(Lattice.cubic(3.4), ["Po"], [[0, 0, 0]])
    with pytest.raises(InputError, match="outside"):
        predict_structures(build(model=EFORM), [s])


def test_models_list_and_predict_cli(reference, ref_structures, tmp_path, capsys) -> None:
    from smoacs_flows.cli import main

    assert main(["models", "list", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert models[EFORM]["type"] == "megnet" and models[EFORM]["mae"] == 0.028
    assert models[EFORM]["units"] == "eV/atom"
    assert models[GAP]["mae"] == 0.314 and models[GAP]["fidelities"] == list(FIDELITIES)
    assert models["perov5-band-gap"]["type"] == "alignn"  # the ALIGNN models stay listed
    folder = tmp_path / "cifs"
    folder.mkdir()
    for k, s in enumerate(ref_structures[:3]):
        s.to(filename=str(folder / f"s{k}.cif"))
    out = tmp_path / "pred.csv"
    args = ["predict", "--model", GAP, "--fidelity", "HSE", str(folder), "--out", str(out)]
    assert main(args) == 0
    rows = out.read_text().splitlines()[1:]
    got = [float(r.split(",")[2]) for r in rows]
    want = [r["band_gap"]["HSE"] for r in reference["structures"][:3]]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert main(["predict", "--model", "perov5-band-gap", "--fidelity", "HSE", str(folder)]) == 2


def test_perovskite_campaign_runs_on_megnet_and_scores_with_it() -> None:
    from smoacs_flows.smoacs.propose import ProposalRun
    from tests.smoacs.helpers import perovskite_campaign

    camp = perovskite_campaign(
        predictors={
            "gap": {"type": "megnet", "model": GAP, "fidelity": "PBE"},
            "eform": {"type": "megnet", "model": EFORM},
        },
        losses=[
            {"term": "band_gap_hinge", "predictor": "gap", "target": 1.5, "margin": 0.04},
            {"term": "formation_energy", "predictor": "eform", "threshold": -0.5},
            {"term": "tolerance_factor", "target": 0.9},
        ],
        schedule={"steps": 4, "n_candidates": 4, "batch_size": 4},
    )
    result = ProposalRun(camp).run()
    assert result.records
    structs = [Structure.from_dict(r["structure"]) for r in result.records]
    gaps = predict_structures(build(model=GAP), structs)
    eforms = predict_structures(build(model=EFORM), structs)
    for rec, gap, ef in zip(result.records, gaps, eforms):
        assert rec["predicted"]["gap.band_gap"] == pytest.approx(gap, abs=1e-4)
        assert rec["predicted"]["eform.formation_energy_per_atom"] == pytest.approx(ef, abs=1e-4)


def test_network_takes_a_fidelity_index_or_a_distribution() -> None:
    p = build(model=GAP, dtype="float64")
    net, n = p.network, 3
    like = torch.zeros(1, dtype=torch.float64)
    by_index = net.state_input(n, torch.tensor([2]), like)
    by_probs = net.state_input(n, torch.tensor([[0.0, 0.0, 1.0, 0.0]]), like)
    assert by_index.shape == (n, 16) and torch.equal(by_index, by_probs)
    half = net.state_input(1, torch.tensor([[0.5, 0.0, 0.5, 0.0]]), like)
    table = net.embedding.layer_state_embedding.weight.double()
    assert torch.allclose(half[0], 0.5 * (table[0] + table[2]))
