"""Configuration discovery as FireWorks and jobflow do it, ``launchers init`` and ``config``.

The reference for the LaunchPad search is FireWorks itself: ``fireworks.fw_config`` computes
``LAUNCHPAD_LOC`` at import, in a fresh process with the same environment and working folder.
The reference for the JobStore is jobflow's own ``SETTINGS.JOB_STORE`` in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smoacs_flows.cli import main
from smoacs_flows.errors import SmoacsError, SpecError
from smoacs_flows.makers.discovery import find_launchpad_file
from smoacs_flows.makers.launchers import render_templates
from smoacs_flows.makers.launchpad import EmbeddedLaunchPad, open_launchpad
from smoacs_flows.stores.jobstore import resolve_job_store
from tests.makers._campaign import ROOT


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FW_CONFIG_FILE",)}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def _fireworks_launchpad_loc(cwd: Path, env: dict[str, str]) -> str | None:
    """FireWorks' own answer (fw_config at import)."""
    out = subprocess.run(
        [sys.executable, "-c", "from fireworks import fw_config; print(fw_config.LAUNCHPAD_LOC)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    last = out.splitlines()[-1] if out else "None"
    return None if last == "None" else str(Path(cwd, last).resolve())


def _mine(cwd: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str | None:
    monkeypatch.chdir(cwd)
    for k in ("HOME", "FW_CONFIG_FILE"):
        if k in env:
            monkeypatch.setenv(k, env[k])
        else:
            monkeypatch.delenv(k, raising=False)
    found = find_launchpad_file(None)
    return None if found.path is None else str(found.path.resolve())


def test_launchpad_search_matches_fireworks(tmp_path, monkeypatch):
    home, work, cfg = tmp_path / "home", tmp_path / "work", tmp_path / "cfg"
    for d in (home / ".fireworks", work, cfg):
        d.mkdir(parents=True)
    env = _env(HOME=str(home))
    # nothing anywhere: FireWorks has no LAUNCHPAD_LOC, smoacs-flows falls back to embedded
    assert _fireworks_launchpad_loc(work, env) is None
    assert _mine(work, monkeypatch, env) is None
    assert isinstance(open_launchpad(None), EmbeddedLaunchPad)
    # ~/.fireworks/my_launchpad.yaml
    (home / ".fireworks" / "my_launchpad.yaml").write_text("embedded: $SMOACS_HOME/lp.json\n")
    assert _mine(work, monkeypatch, env) == _fireworks_launchpad_loc(work, env)
    assert _mine(work, monkeypatch, env).startswith(str(home))
    # FW_CONFIG_FILE with CONFIG_FILE_DIR wins over ~/.fireworks (atomate2's layout)
    (cfg / "my_launchpad.yaml").write_text(f"embedded: {tmp_path}/cfg-lp.json\n")
    (cfg / "FW_config.yaml").write_text(f"CONFIG_FILE_DIR: {cfg}\n")
    env = _env(HOME=str(home), FW_CONFIG_FILE=str(cfg / "FW_config.yaml"))
    assert _mine(work, monkeypatch, env) == _fireworks_launchpad_loc(work, env)
    assert _mine(work, monkeypatch, env) == str(cfg / "my_launchpad.yaml")
    lp = open_launchpad(None)
    assert isinstance(lp, EmbeddedLaunchPad) and lp.path == tmp_path / "cfg-lp.json"
    # LAUNCHPAD_LOC names the file directly
    other = tmp_path / "other.yaml"
    other.write_text(f"embedded: {tmp_path}/other.json\n")
    (cfg / "FW_config.yaml").write_text(f"CONFIG_FILE_DIR: {cfg}\nLAUNCHPAD_LOC: {other}\n")
    assert _mine(work, monkeypatch, env) == _fireworks_launchpad_loc(work, env) == str(other)
    # a my_launchpad.yaml in the working folder is found too (FireWorks' search path)
    del env["FW_CONFIG_FILE"]
    (work / "my_launchpad.yaml").write_text(f"embedded: {tmp_path}/cwd.json\n")
    assert _mine(work, monkeypatch, env) == _fireworks_launchpad_loc(work, env)
    assert _mine(work, monkeypatch, env) == str(work / "my_launchpad.yaml")
    # --launchpad wins over everything
    assert find_launchpad_file(other).path == other
    # a FW_CONFIG_FILE naming nothing is an error (FireWorks ignores it silently)
    monkeypatch.setenv("FW_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(SmoacsError, match="FW_CONFIG_FILE=.*missing.yaml: no such file"):
        find_launchpad_file(None)


def _montystore_jobflow(tmp_path: Path) -> Path:
    path = tmp_path / "jobflow.yaml"
    db = str(tmp_path / "jf-db")
    common = {"type": "MontyStore", "database_path": db, "database_name": "jf"}
    path.write_text(
        yaml.safe_dump(
            {
                "JOB_STORE": {
                    "docs_store": {**common, "collection_name": "outputs", "key": "uuid"},
                    "additional_stores": {
                        "data": {**common, "collection_name": "blobs", "key": "blob_uuid"}
                    },
                }
            }
        )
    )
    return path


def test_job_store_order(tmp_path, monkeypatch):
    jf = _montystore_jobflow(tmp_path)
    store, origin, line = resolve_job_store()
    assert origin == "embedded" and "default" in line
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(jf))
    store, origin, line = resolve_job_store()
    assert origin == "jobflow" and store.docs_store.database_path == str(tmp_path / "jf-db")
    assert f"JOBFLOW_CONFIG_FILE={jf}" in line
    monkeypatch.setenv("SMOACS_JOB_STORE", str(ROOT / "stores" / "embedded.yaml"))
    assert resolve_job_store()[1] == "env"
    assert resolve_job_store(ROOT / "stores" / "mongodb.yaml")[1] == "option"
    monkeypatch.delenv("SMOACS_JOB_STORE")
    # a jobflow file without JOB_STORE (jobflow would fall back to a MemoryStore): an error
    empty = tmp_path / "empty.yaml"
    empty.write_text("UID_TYPE: uuid4\n")
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(empty))
    with pytest.raises(SpecError, match="JOB_STORE: missing"):
        resolve_job_store()


def test_embedded_yaml_through_jobflow_creates_no_literal_folder(tmp_path):
    """jobflow itself loads stores/embedded.yaml (as its JOB_STORE file)."""
    cfg = tmp_path / "jobflow.yaml"
    cfg.write_text(f"JOB_STORE: {ROOT / 'stores' / 'embedded.yaml'}\n")
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import jobflow; s = jobflow.SETTINGS.JOB_STORE; s.connect(); "
        "s.docs_store.update({'uuid': 'u', 'index': 1, 'output': 1}, key=['uuid', 'index']); "
        "print(s.docs_store.database_path, s.docs_store.database_name)"
    )
    env = _env(JOBFLOW_CONFIG_FILE=str(cfg), SMOACS_HOME=str(home))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(home / "jobstore"), "smoacs"]
    assert list(work.iterdir()) == []  # no ./$SMOACS_HOME/jobstore
    assert any((home / "jobstore").iterdir())


def test_launchers_templates_are_the_rendered_ones():
    for name, text in render_templates().items():
        assert (ROOT / "launchers" / name).read_text() == text, name


def test_launchers_init_embedded(tmp_path, capsys):
    from fireworks import FWorker
    from fireworks.utilities.fw_serializers import load_object_from_file
    from jobflow.settings import JobflowSettings

    d = tmp_path / "fw"
    assert main(["launchers", "init", str(d), "--embedded"]) == 0
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(
        ["FW_config.yaml", "my_launchpad.yaml", "jobflow.yaml", "gpu", "cpu", "vasp"]
        + [f"my_{k}_{q}.yaml" for k in ("fworker", "qadapter") for q in ("gpu", "cpu", "vasp")]
    )
    for q in ("gpu", "cpu", "vasp"):  # FireWorks' standard names, for qlaunch -c DIR/<queue>
        assert sorted(p.name for p in (d / q).iterdir()) == [
            "my_fworker.yaml",
            "my_launchpad.yaml",
            "my_qadapter.yaml",
        ]
    assert yaml.safe_load((d / "FW_config.yaml").read_text()) == {"CONFIG_FILE_DIR": str(d)}
    assert oct((d / "my_launchpad.yaml").stat().st_mode)[-3:] == "600"
    assert isinstance(open_launchpad(d / "my_launchpad.yaml"), EmbeddedLaunchPad)
    for q in ("gpu", "cpu", "vasp"):
        assert FWorker.from_file(str(d / f"my_fworker_{q}.yaml")).category == q
        qa = load_object_from_file(str(d / f"my_qadapter_{q}.yaml"))
        cmd = qa["rocket_launch"].split()
        assert cmd[-1] == "singleshot"
        for flag in ("-l", "-w"):
            p = Path(cmd[cmd.index(flag) + 1])
            assert p.is_absolute() and p.is_file()
        script = qa.get_script_str(str(tmp_path))
        assert f"export FW_CONFIG_FILE={d}/FW_config.yaml" in script
    vasp = load_object_from_file(str(d / "my_qadapter_vasp.yaml")).get_script_str(".")
    assert "#SBATCH --ntasks=32" in vasp and "#SBATCH --cpus-per-task=1" in vasp
    assert 'ATOMATE2_VASP_CMD="srun vasp_std"' in vasp and "OMP_NUM_THREADS=1" in vasp
    assert "NCORE" in (d / "my_qadapter_vasp.yaml").read_text()
    # jobflow reads the JOB_STORE: the embedded montydb store, absolute
    os.environ["JOBFLOW_CONFIG_FILE"] = str(d / "jobflow.yaml")
    try:
        store = JobflowSettings().JOB_STORE
    finally:
        del os.environ["JOBFLOW_CONFIG_FILE"]
    assert Path(store.docs_store.database_path) == Path(os.environ["SMOACS_HOME"]) / "jobstore"
    pbs = tmp_path / "pbs"
    argv = ["launchers", "init", str(pbs), "--embedded", "--scheduler", "pbs"]
    assert main([*argv, "--pbs-flavour", "torque"]) == 0
    script = load_object_from_file(str(pbs / "my_qadapter_vasp.yaml")).get_script_str(".")
    assert "#PBS -l nodes=1:ppn=32" in script
    assert "mpiexec -n $(wc -l < $PBS_NODEFILE) vasp_std" in script


def test_launchers_init_bad_input_writes_nothing(tmp_path, capsys):
    cases = [
        (["launchers", "init", str(tmp_path / "no" / "fw")], "parent folder"),
        (["launchers", "init", str(tmp_path / "fw"), "--scheduler", "lsf"], "--scheduler 'lsf'"),
        (
            ["launchers", "init", str(tmp_path / "fw"), "--launchpad", str(tmp_path / "x.yaml")],
            "no such LaunchPad file",
        ),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("host: [unclosed\n")
    cases.append(
        (["launchers", "init", str(tmp_path / "fw"), "--launchpad", str(bad)], "invalid YAML")
    )
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    cases.append(
        (
            ["launchers", "init", str(tmp_path / "fw"), "--launchpad", str(binary)],
            "cannot read LaunchPad file",
        )
    )
    nodata = tmp_path / "nodata.yaml"
    nodata.write_text("docs_store: {type: MemoryStore}\n")
    cases.append(
        (
            ["launchers", "init", str(tmp_path / "fw"), "--store", str(nodata)],
            "additional_stores.data: missing",
        )
    )
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "binary.yaml", "nodata.yaml"]


def test_config_json_names_the_sources(tmp_path, monkeypatch, capsys):
    jf = _montystore_jobflow(tmp_path)
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(jf))
    monkeypatch.setenv("MP_API_KEY", "secret-value-123")
    assert main(["config", "--json"]) == 0
    out = capsys.readouterr().out
    rep = json.loads(out)
    assert rep["job_store"]["origin"] == "jobflow"
    assert rep["job_store"]["where"] == f"montydb {tmp_path / 'jf-db'}"
    assert rep["launchpad"]["kind"] == "embedded" and rep["mp_api_key_set"] is True
    assert "secret-value-123" not in out
    assert rep["mlip_weights"]["chgnet"] and rep["gpaw"]["installed"] is True


def test_lpad_on_the_default_embedded_launchpad(tmp_path):
    """FireWorks' plain ``lpad`` cannot open an embedded LaunchPad file (KeyError 'host');
    ``smoacs-flows lpad`` runs the same command line on it."""
    home = tmp_path / "home"
    lp_file = tmp_path / "my_launchpad.yaml"
    lp_file.write_text(f"embedded: {home}/launchpad/fireworks.json\n")
    env = _env(SMOACS_HOME=str(home), HOME=str(tmp_path))
    lpad = Path(sys.executable).parent / "lpad"
    plain = subprocess.run(
        [str(lpad), "-l", str(lp_file), "get_wflows"], env=env, capture_output=True, text=True
    )
    assert plain.returncode != 0 and "KeyError: 'host'" in plain.stderr
    ours = subprocess.run(
        [sys.executable, "-m", "smoacs_flows.cli", "lpad", "-l", str(lp_file), "get_wflows"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == []
    assert f"embedded LaunchPad {home}/launchpad/fireworks.json" in ours.stderr


def test_launchers_init_mongodb_copies_and_plain_rlaunch(tmp_path, monkeypatch, capsys):
    from fireworks.utilities.fw_serializers import load_object_from_file
    from jobflow.settings import JobflowSettings
    from maggma.stores import GridFSStore, MongoStore

    src = ROOT / "launchers" / "my_launchpad.yaml"
    d = tmp_path / "fw"
    argv = ["launchers", "init", str(d), "--launchpad", str(src)]
    assert main([*argv, "--store", str(ROOT / "stores" / "mongodb.yaml")]) == 0
    assert f"qlaunch -c {d}/gpu -r rapidfire" in capsys.readouterr().out
    assert (d / "my_launchpad.yaml").read_text() == src.read_text()
    q = load_object_from_file(str(d / "my_qadapter_gpu.yaml"))
    assert q["rocket_launch"].startswith(f"rlaunch -l {d}/my_launchpad.yaml")  # FireWorks' own
    monkeypatch.setenv("JOBFLOW_CONFIG_FILE", str(d / "jobflow.yaml"))
    store = JobflowSettings().JOB_STORE  # built, not connected
    assert isinstance(store.docs_store, MongoStore)
    assert isinstance(store.additional_stores["data"], GridFSStore)
    # an existing folder is refused unless --force
    assert main(argv) == 2 and "not empty" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
