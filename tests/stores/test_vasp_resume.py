"""A VASP DFT job fails with an error custodian cannot fix; ``resume --incar`` reruns that
branch only, and the candidate then shows its verdict.

The boundary faked is the VASP binary only. The relaxations and the static run through
atomate2's ``monkeypatch_vasp`` (reference outputs: the real FeO run in ../shared). The DOS job
runs through the *real* atomate2 ``run_vasp`` and custodian, with a fake ``vasp`` executable
that prints VASP's real EDDDAV error until its INCAR has NELM = 200, and then leaves the real
FeO outputs. POTCARs stay ``POTCAR.spec`` (licensed files are not available here).
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from atomate2.vasp.run import run_vasp as REAL_RUN_VASP
from jobflow import Flow
from jobflow.managers.fireworks import flow_to_workflow
from pymatgen.io.vasp import Incar

from smoacs_flows.cli import main
from smoacs_flows.makers import HalfMetalDftMaker
from smoacs_flows.makers.jobs import route, summary_job
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from smoacs_flows.stores import embedded_job_store
from smoacs_flows.stores.results import query, update_results
from tests.dft._feo import feo_sun_output, run_tagged, sun_standin, work_until_idle
from tests.dft.test_vasp_flow import STAGES, _build_refs

TAG = "smoacs:feo:v1"
FAKE_VASP = """#!{python}
import gzip, re, shutil, sys
from pathlib import Path
incar = Path("INCAR").read_text()
m = re.search(r"^\\s*NELM\\s*=\\s*(\\d+)", incar, re.M)
if not m or int(m.group(1)) != 200:
    print(" running on    2 total cores")
    print(" Error EDDDAV: Call to ZHEGV failed. Returncode =   7 1  16")
    sys.exit(1)
for name in ("vasprun.xml", "OUTCAR", "CONTCAR", "OSZICAR"):
    with gzip.open(Path({ref!r}) / (name + ".gz"), "rb") as src, open(name, "wb") as dst:
        shutil.copyfileobj(src, dst)
print(" writing wavefunctions")
"""


def _counts(lp: EmbeddedLaunchPad) -> dict[str, tuple[str, int, int]]:
    with lp.session(write=False):
        return {
            d["name"]: (d["state"], len(d.get("launches", [])), len(d.get("archived_launches", [])))
            for d in lp.fireworks.find({"spec.tags": TAG})
        }


@pytest.fixture
def vasp_boundary(monkeypatch, tmp_path, shared_data):
    import atomate2.vasp.jobs.base as base
    from atomate2.utils.testing.vasp import monkeypatch_vasp
    from jobflow import CURRENT_JOB

    feo = shared_data / "vasp" / "FeO_spin"
    gen = monkeypatch_vasp(monkeypatch, tmp_path / "refs", nelect=40)
    mock = next(gen)
    _build_refs(feo, tmp_path / "refs")
    relaxes = {k: v for k, v in STAGES.items() if k != "spin DOS uniform"}
    mock(
        {name: folder for name, (folder, _) in relaxes.items()},
        {
            name: {
                "incar_settings": keys,
                "check_inputs": ["incar", "poscar", "potcar"],
                "clear_inputs": False,
            }
            for name, (_, keys) in relaxes.items()
        },
    )
    fake = tmp_path / "bin" / "vasp_std"
    fake.parent.mkdir()
    fake.write_text(FAKE_VASP.format(python=sys.executable, ref=str(feo)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    mocked = base.run_vasp

    def dispatch(*args, **kwargs):
        if CURRENT_JOB.job.name == "spin DOS uniform":
            kwargs["vasp_cmd"] = str(fake)
            return REAL_RUN_VASP(*args, **kwargs)
        return mocked(*args, **kwargs)

    monkeypatch.setattr(base, "run_vasp", dispatch)
    yield feo
    next(gen, None)


@pytest.mark.slow
def test_custodian_failure_resumed_with_incar_override(vasp_boundary, tmp_path, capsys):
    feo = vasp_boundary
    sun_out = {
        **feo_sun_output(feo, "feo-0", 0.02),
        "scores": {"feo-0": {"e_above_hull": 0.02, "stable": True, "unique": True, "novel": True}},
        "stage_rejected": {},
    }
    meta = {"campaign": "feo"}
    sun = route(sun_standin(sun_out), "cpu", {**meta, "stage": "sun"})
    sun.name = "sun"
    # symprec None: the reference outputs are for the structure exactly as given
    dft = HalfMetalDftMaker(
        settings={
            "engine": "vasp",
            "max_candidates": 1,
            "symprec": None,
            "vasp": {"max_errors": 1},
        },
        metadata=meta,
    ).make(sun.output)
    summ = route(summary_job(sun.output, dft.output), "cpu", {**meta, "stage": "summary"})
    summ.name = "summary"
    wf = flow_to_workflow(
        Flow([sun, dft, summ]),
        store=embedded_job_store(),
        name="feo v1",
        metadata={"smoacs_campaign": "feo", "smoacs_version": 1, "tags": ["smoacs:feo", TAG]},
    )
    lp = run_tagged(wf, ["smoacs:feo", TAG], tmp_path / "launches")
    first = _counts(lp)
    assert first["spin DOS uniform"][0] == "FIZZLED"
    for name in ("MP GGA relax 1", "MP GGA relax 2", "MP GGA static", "sun"):
        assert first[name] == ("COMPLETED", 1, 0), name
    # the jobs after the failed one fizzle at once; the campaign summary is not blocked
    assert first["analyse_vasp_dos_job"][0] == "FIZZLED"
    assert first["summary"][0] == "COMPLETED"

    # the candidate is failed, with custodian's reason
    update_results(launchpad=lp)
    (c,) = query(campaign="feo")
    assert c.summary["state"] == "failed" and "edddav" in c.summary["failure"].lower()

    capsys.readouterr()
    assert main(["resume", "feo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would rerun spin DOS uniform" in out and "VaspErrorHandler" in out
    assert "analyse_vasp_dos_job" not in out  # reruns with the job it waits on
    assert _counts(lp) == first  # a dry run changes nothing
    # a malformed override changes nothing either
    assert main(["resume", "feo", "--incar", "ALGO"]) != 0
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["resume", "feo", "--gpaw", "maxiter=9"]) != 0
    assert "--gpaw applies to GPAW jobs" in capsys.readouterr().err
    assert _counts(lp) == first

    assert main(["resume", "feo", "--incar", "ALGO=All,NELM=200", "--max-errors", "2"]) == 0
    assert "rerunning spin DOS uniform" in capsys.readouterr().out
    work_until_idle(lp, tmp_path / "launches", TAG)
    after = _counts(lp)
    assert {st for st, _, _ in after.values()} == {"COMPLETED"}
    assert after["spin DOS uniform"] == ("COMPLETED", 1, 1)
    assert after["analyse_vasp_dos_job"] == ("COMPLETED", 1, 1)
    assert after["summary"] == ("COMPLETED", 1, 1)  # re-summarised with the verdict
    for name in ("MP GGA relax 1", "MP GGA relax 2", "MP GGA static", "sun"):
        assert after[name] == ("COMPLETED", 1, 0), name  # not recomputed

    # the override reached the failed job only
    store = embedded_job_store()
    store.connect()
    dirs = {
        n: Path(store.query_one({"name": n}, load=False)["output"]["dir_name"].split(":", 1)[-1])
        for n in ("spin DOS uniform", "MP GGA static")
    }
    dos_incar = Incar.from_file(dirs["spin DOS uniform"] / "INCAR.gz")
    assert dos_incar["NELM"] == 200 and dos_incar["ALGO"].lower() == "all"
    assert Incar.from_file(dirs["MP GGA static"] / "INCAR.gz").get("NELM") != 200

    update_results(launchpad=lp)
    (c,) = query(campaign="feo")
    assert c.summary["state"] == "done" and c.summary["verdict"] == "semiconductor"
    assert c.doc["dft"]["engine"] == "vasp" and c.summary["failure"] is None
