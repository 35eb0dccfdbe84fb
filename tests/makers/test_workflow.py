"""Workflow structure: jobs, categories, batching, links, tags; submission rules and bad input."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from smoacs_flows.campaign import campaign_from_dict, load_campaign
from smoacs_flows.cli import main
from smoacs_flows.errors import SmoacsError, SpecError
from smoacs_flows.makers import HalfMetalCampaignMaker
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, embedded_launchpad_path
from smoacs_flows.makers.submit import submit
from tests._env import with_smoacs_home
from tests.makers._campaign import ROOT, tiny_campaign, write_campaign


def _stage_of(job) -> str:
    return job.metadata["stage"]


def test_flow_batching_categories_and_links():
    data = tiny_campaign(
        n=8,
        batch=2,
        stages={
            "orchestration": {"batches_per_job": 2, "relax_group": 1},
            "dft": {"engine": "gpaw", "category": "dftq"},
        },
    )
    camp = campaign_from_dict(data, base_dir=ROOT)
    flow = HalfMetalCampaignMaker().make(camp)
    jobs = [j for j, _ in flow.iterflow()]
    stages = Counter(_stage_of(j) for j in jobs)
    # 8 candidates / batch 2 = 4 optimiser batches, 2 per job → 2 proposal jobs
    assert stages == {"propose": 2, "prefilter": 2, "relax": 2, "sun": 1, "dft": 1, "summary": 1}
    cats = {_stage_of(j): j.config.manager_config["_category"] for j in jobs}
    assert cats == {
        "propose": "gpu",
        "relax": "gpu",
        "prefilter": "cpu",
        "sun": "cpu",
        "dft": "cpu",
        "summary": "cpu",
    }
    assert all(j.metadata["campaign"] == "tiny" for j in jobs)
    by_uuid = {j.uuid: j for j in jobs}
    parents = {j.name: sorted(by_uuid[p].name for p in ps) for j, ps in flow.iterflow()}
    assert parents["prefilter 000"] == ["propose b000-001"]
    assert parents["prefilter 001"] == ["propose b002-003"]
    assert parents["relax 000"] == ["prefilter 000"]
    assert parents["sun"] == ["relax 000", "relax 001"]
    assert parents["dft"] == ["sun"]
    assert parents["summary"] == ["dft", "sun"]
    # the fan-out never passes its category on: each dynamic DFT job is routed explicitly
    dft = next(j for j in jobs if _stage_of(j) == "dft")
    assert dft.config.pass_manager_config is False
    assert dft.maker.settings["category"] == "dftq"  # the fan-out is its Maker's method
    # batch indices of the proposal jobs cover every batch exactly once
    idx = sorted(i for j in jobs if _stage_of(j) == "propose" for i in j.function_args[1])
    assert idx == [0, 1, 2, 3]


def test_sweep_expands_into_proposal_jobs_with_distinct_ids():
    data = tiny_campaign(
        n=2,
        batch=2,
        stages={
            "orchestration": {
                "sweep": {
                    "mode": "grid",
                    "weights": {"energy": [1, 100], "magmom_min": [1, 10, 100]},
                }
            }
        },
    )
    camp = campaign_from_dict(data, base_dir=ROOT)
    flow = HalfMetalCampaignMaker().make(camp)
    props = [j for j, _ in flow.iterflow() if _stage_of(j) == "propose"]
    assert len(props) == 6  # 2 x 3 grid, one batch each
    weights = sorted(
        (v["weights"]["energy"], v["weights"]["magmom_min"])
        for v in (j.function_args[2] for j in props)
    )
    assert weights == sorted((e, m) for e in (1, 100) for m in (1, 10, 100))
    labels = {j.function_args[2]["label"] for j in props}
    assert len(labels) == 6
    # the variant campaign carries the weights and a distinct id prefix
    from smoacs_flows.makers.stages import variant_campaign

    v = props[-1].function_args[2]
    vc = variant_campaign(camp, v)
    assert vc.name == f"tiny.{v['label']}"
    assert {(x.term, x.weight) for x in vc.losses} == {
        ("energy", v["weights"]["energy"]),
        ("magmom_min", v["weights"]["magmom_min"]),
    }


def test_sweep_unknown_term_is_rejected():
    data = tiny_campaign(stages={"orchestration": {"sweep": {"weights": {"gap": [1, 2]}}}})
    with pytest.raises(SpecError, match=r"sweep.weights.gap: no loss term"):
        HalfMetalCampaignMaker().make(campaign_from_dict(data, base_dir=ROOT))


def test_submit_to_embedded_launchpad(tmp_path):
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign(n=4, batch=2))
    sub = submit(path)
    assert sub.version == 1 and sub.tag == "smoacs:tiny:v1"
    # 2 proposal + 2 prefilter + 2 relax + sun + dft + summary
    assert sub.n_fireworks == 9
    assert sub.categories == {"gpu": 4, "cpu": 5}
    lp = EmbeddedLaunchPad()
    assert lp.path == embedded_launchpad_path()
    assert str(lp.path).startswith(str(Path(tmp_path.parent)))  # under the test's SMOACS_HOME
    wf = lp.get_wf_by_fw_id(sub.fw_ids[0])
    assert wf.metadata["smoacs_campaign"] == "tiny" and wf.metadata["smoacs_version"] == 1
    names = {fw.fw_id: fw.name for fw in wf.fws}
    for fw in wf.fws:
        assert fw.spec["tags"] == ["smoacs:tiny", "smoacs:tiny:v1"]
        want = "gpu" if fw.spec["stage"] in ("propose", "relax") else "cpu"
        assert fw.spec["_category"] == want, fw.name
    children = {names[k]: sorted(names[c] for c in v) for k, v in wf.links.items()}
    assert children["sun"] == ["dft", "summary"]
    assert sorted(children["propose b000"] + children["propose b001"]) == [
        "prefilter 000",
        "prefilter 001",
    ]
    ready = {names[i] for i in lp.get_fw_ids({"state": "READY"})}
    assert ready == {"propose b000", "propose b001"}
    # the fireworks carry the embedded JobStore (montydb under SMOACS_HOME, with `data`)
    task = wf.fws[0].tasks[0]
    assert "data" in task["store"].additional_stores


def test_resubmit_refused_unless_new_version(tmp_path, capsys):
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign())
    assert main(["submit", str(path)]) == 0
    assert main(["submit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already on the embedded LaunchPad" in err and "--new-version" in err
    assert main(["submit", str(path), "--new-version", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    import json

    info = json.loads(out)
    assert info["version"] == 2 and info["tag"] == "smoacs:tiny:v2"
    lp = EmbeddedLaunchPad()
    assert len(lp.get_wf_ids({"metadata.smoacs_campaign": "tiny"})) == 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["stages"].update({"dft": {"engine": "castep"}}), "stages.dft.engine"),
        (lambda d: d["stages"].update({"dft": {"gpaw": {"ecutt": 3}}}), "stages.dft.gpaw.ecutt"),
        (
            lambda d: d["stages"].update(
                {"dft": {"engine": "vasp", "vasp": {"incar": {"NCOR": 4}}}}
            ),
            "stages.dft.vasp.incar: Cannot find NCOR",
        ),
        (
            lambda d: d["stages"].update(
                {"dft": {"engine": "vasp", "vasp": {"dos_maker": {"class": "atomate2.nope:X"}}}}
            ),
            "stages.dft.vasp.dos_maker.class: cannot import",
        ),
        (lambda d: d["stages"].update({"screening": {"fmaxx": 1}}), "stages.screening.fmaxx"),
        (
            lambda d: d["stages"].update({"screening": {"references": "nope.json.gz"}}),
            "nope.json.gz: no such file",
        ),
        (lambda d: d["schedule"].update({"stepz": 3}), "schedule.stepz"),
        (lambda d: d["templates"][0].update({"source": "/no/such/template.cif"}), "template"),
        (lambda d: d.update({"exclude": ["Xx"]}), "Xx"),
        (
            lambda d: d["predictors"].update({"chgnet": {"type": "chgnett"}}),
            "predictors.chgnet.type: 'chgnett' is unknown",
        ),
    ],
)
def test_invalid_campaign_adds_nothing(tmp_path, capsys, mutate, message):
    data = tiny_campaign()
    mutate(data)
    path = write_campaign(tmp_path / "bad.yaml", data)
    with with_smoacs_home(tmp_path / "home") as home:
        home.mkdir()
        for command in ("submit", "run"):
            assert main([command, str(path)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and message in err
            assert len(err.strip().splitlines()) == 1, err
            # checked before any LaunchPad or store is opened: not even an empty file
            assert _listing(home) == []


@pytest.mark.parametrize("n", ["0", "-1", "65"])
def test_run_with_a_bad_worker_count_writes_nothing(tmp_path, capsys, n):
    """``run --cpu-workers`` outside 1..64: one line naming the option, nothing written."""
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign())
    with with_smoacs_home(tmp_path / "home") as home:
        home.mkdir()
        assert main(["run", str(path), "--cpu-workers", n]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"error: --cpu-workers: {n} is not in 1..64", err
        assert _listing(home) == []


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_bad_store_file_writes_nothing(tmp_path, capsys):
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign())
    bad = tmp_path / "store.yaml"
    bad.write_text("docs_store: {type: MemoryStore, collection_name: outputs}\n")
    with with_smoacs_home(tmp_path / "home") as home:
        home.mkdir()
        (home / "keep.txt").write_text("x")
        before = _listing(home)
        assert main(["submit", str(path), "--store", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "additional_stores.data: missing" in err
        assert len(err.strip().splitlines()) == 1, err
        assert _listing(home) == before == ["keep.txt"]


def test_unreachable_launchpad_names_the_host(tmp_path, capsys):
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign())
    lpfile = tmp_path / "my_launchpad.yaml"
    # a URI with credentials is redacted (this first call also pays the one-off imports)
    lpfile.write_text(
        yaml.safe_dump(
            {
                "host": "mongodb://bob:pw123@127.0.0.1:9/fw",
                "uri_mode": True,
                "name": "fw",
                "mongoclient_kwargs": {"serverSelectionTimeoutMS": 300},
            }
        )
    )
    assert main(["submit", str(path), "--launchpad", str(lpfile)]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "pw123" not in err
    lpfile.write_text(
        yaml.safe_dump(
            {
                "host": "127.0.0.1",
                "port": 9,
                "name": "fw",
                "username": "alice",
                "password": "s3cret",
                "mongoclient_kwargs": {"serverSelectionTimeoutMS": 300},
            }
        )
    )
    # the file's 300 ms server selection is used, not pymongo's default 30 s
    t0 = time.perf_counter()
    assert main(["submit", str(path), "--launchpad", str(lpfile)]) == 2
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err
    assert "cannot reach the LaunchPad 127.0.0.1:9" in err
    assert "s3cret" not in err
    assert not embedded_launchpad_path().exists()  # nothing went to the embedded LaunchPad


def test_example_campaigns_build(tmp_path):
    """The shipped campaigns build into workflows (paper-size perovskite: many jobs)."""
    for name in ("halfmetal_small.yaml", "perovskite.yaml"):
        camp = load_campaign(ROOT / "campaigns" / name)
        flow = HalfMetalCampaignMaker(validate=False).make(camp)
        n_prop = sum(1 for j, _ in flow.iterflow() if _stage_of(j) == "propose")
        sch = camp.schedule
        assert n_prop == -(-sch.n_candidates // sch.batch_size)
    with pytest.raises(SmoacsError):
        submit(tmp_path / "missing.yaml")


def test_stage_makers_decorate_make_so_powerups_reach_their_settings():
    """atomate2's pattern: the stage Maker's ``make`` is the job, so jobflow's own
    ``Flow.update_maker_kwargs`` changes a stage's settings, by job name, in the submitted Flow;
    the change survives jobflow's JSON round trip and the categories stay routed."""
    from jobflow import Flow
    from monty.json import MontyDecoder, MontyEncoder

    from smoacs_flows.makers import MlipRelaxMaker, PrefilterMaker, SunFilterMaker

    camp = campaign_from_dict(tiny_campaign(n=4, batch=2), base_dir=ROOT)
    flow = HalfMetalCampaignMaker().make(camp)
    makers = {j.name: j.maker for j, _ in flow.iterflow() if j.maker is not None}
    assert isinstance(makers["prefilter 000"], PrefilterMaker)
    assert isinstance(makers["relax 000"], MlipRelaxMaker)
    assert isinstance(makers["sun"], SunFilterMaker)
    before = makers["relax 000"].settings["fmax"]
    new = before / 2
    flow.update_maker_kwargs({"_set": {"settings->fmax": new}}, name_filter="relax", dict_mod=True)
    import json

    back = json.loads(json.dumps(flow, cls=MontyEncoder), cls=MontyDecoder)
    assert isinstance(back, Flow)
    jobs = {j.name: j for j, _ in back.iterflow()}
    relax = [j for n, j in jobs.items() if n.startswith("relax")]
    assert relax and all(j.maker.settings["fmax"] == new for j in relax)
    # other stages keep theirs; routing is untouched by the powerup
    assert jobs["sun"].maker.settings["fmax"] == before
    assert {j.config.manager_config["_category"] for j in relax} == {"gpu"}
    assert jobs["prefilter 000"].config.manager_config["_category"] == "cpu"
