"""The real FeO VASP outputs as one S.U.N.-stage output, for tests that run the DFT stage alone
(importable by worker processes: tests.dft._feo)."""

from __future__ import annotations

import os
from pathlib import Path

from fireworks import Workflow
from jobflow import job
from pymatgen.core import Structure

from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.makers.worker import work


@job
def sun_standin(out: dict) -> dict:
    """The S.U.N. stage's output (upstream stages are not under test)."""
    return out


def feo_sun_output(feo: Path, cid: str, e_above_hull: float) -> dict:
    """A S.U.N. output holding one FeO candidate ``cid`` built from ``feo/POSCAR.gz``."""
    s = Structure.from_file(feo / "POSCAR.gz")
    rec = {
        "id": cid,
        "reduced_formula": "FeO",
        "formula": s.composition.formula,
        "elements": ["Fe", "O"],
        "structure": s.as_dict(),
        "screening": {"mlip_energy_per_atom": -6.0, "e_above_hull": e_above_hull},
    }
    return {
        "records": [rec],
        "counts": {"proposed": 1, "prefiltered": 1, "relaxed": 1, "sun": 1},
        "notes": [],
    }


def work_until_idle(lp: EmbeddedLaunchPad, launch_dir: Path, tag: str) -> None:
    """A cpu worker in this process on the fireworks tagged ``tag`` until none is ready; the
    working folder (which the worker changes) is restored."""
    cwd = os.getcwd()
    try:
        work(lp, "cpu", launch_dir, tag=tag, until_idle=True)
    finally:
        os.chdir(cwd)


def run_tagged(wf: Workflow, tags: list[str], launch_dir: Path) -> EmbeddedLaunchPad:
    """Add ``wf`` with ``tags`` on every firework to the embedded LaunchPad and run it with a
    cpu worker (on the last tag) until idle; the LaunchPad."""
    for fw in wf.fws:
        fw.spec["tags"] = list(tags)
    lp = EmbeddedLaunchPad()
    lp.add_wf(wf)
    work_until_idle(lp, launch_dir, tags[-1])
    return lp
