"""Two habits of the screening side: the neutrality rejection of an intermetallic names the
policy that admits it, and reading the shipped MP elemental references (He, Ne, Ar among
them) no longer prints pymatgen's "No Pauling electronegativity" warnings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pymatgen.core import Lattice, Structure

from smoacs_flows.screening.prefilter import PrefilterConfig, prefilter_one
from tests.dft.gpaw_structures import bcc_fe, nimnsb


def _co2mnsi(a: float = 5.65) -> Structure:
    """Full-Heusler Co2MnSi (L2_1, Fm-3m): Co 8c, Mn 4a, Si 4b."""
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Co", "Mn", "Si"], [[0.25] * 3, [0, 0, 0], [0.5] * 3]
    ).get_primitive_structure()


@pytest.mark.parametrize("make", [bcc_fe, _co2mnsi, nimnsb], ids=["Fe", "Co2MnSi", "NiMnSb"])
def test_intermetallic_rejection_names_the_metallic_policy(make):
    s = make()
    (why,) = prefilter_one({}, s, PrefilterConfig())  # the default policy: ionic
    assert why.startswith("not charge-neutral under policy ionic")
    assert "--policy ionic+metallic" in why
    # and that policy does admit it
    assert prefilter_one({}, s, PrefilterConfig(neutrality_policy="ionic+metallic")) == []


def test_no_hint_where_no_policy_would_help():
    rocksalt = Structure(Lattice.cubic(4.2), ["Na", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (why,) = prefilter_one({}, rocksalt, PrefilterConfig())  # Na+ O2-: off by one
    assert why == "not charge-neutral under policy ionic"
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert prefilter_one({}, nacl, PrefilterConfig()) == []


def test_elemental_references_read_without_electronegativity_warnings():
    """In a fresh interpreter (pymatgen caches the value per element once warned)."""
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        from pymatgen.analysis.phase_diagram import PhaseDiagram
        from smoacs_flows.screening.builtin_refs import elemental_references
        entries = elemental_references()
        assert {"He", "Ne", "Ar"} <= {e.reduced_formula for e in entries}
        PhaseDiagram(entries)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert "No Pauling electronegativity" not in proc.stderr
