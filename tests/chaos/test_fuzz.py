"""Fuzz: malformed campaigns, structure files and command-line arguments.

Every case must exit 0 or 2; on 2 with exactly one ``error:`` line naming the field, option or
file, never a traceback, and nothing partial written (no output folder, no temporary folder
beside it, no workflow added to the LaunchPad). The CLI is called in-process for speed (a few
real subprocess cases at the end). Examples are derandomised so CI is reproducible;
``SMOACS_CHAOS_FUZZ=N`` runs N random examples per test instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smoacs_flows.makers.launchpad import EmbeddedLaunchPad
from tests.chaos._cli import CASES, Outcome, assert_clean, call, case_key
from tests.makers._campaign import CHEAP_STAGES, ROOT, TEMPLATES, tiny_campaign

pytestmark = pytest.mark.chaos

_N = int(os.environ.get("SMOACS_CHAOS_FUZZ", "0"))


def _settings(n: int) -> settings:
    """``n`` derandomised examples, or SMOACS_CHAOS_FUZZ random ones."""
    return settings(
        max_examples=_N or n,
        derandomize=not _N,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


#: a cheap proposal campaign (no predictor: synthetic perovskites, geometric loss terms)
PEROV = {
    "name": "fuzz",
    "device": "cpu",
    "templates": [{"source": "perovskite", "count": 2, "patterns": [[2, 4, -2]]}],
    "exclude": ["rohs"],
    "losses": [{"term": "tolerance_factor", "target": 0.9}, {"term": "element_reduction"}],
    "geometry": {"angles": {"fixed": True}, "coords": {"mode": "bounded", "epsilon": 0.1}},
    "schedule": {"steps": 5, "n_candidates": 4, "batch_size": 4},
    "success": {"tolerance_window": [0.8, 1.0]},
}
#: the orchestration tests' campaign (CHGNet, a template file, screening and DFT stages)
FLOW = tiny_campaign(name="fuzzflow", n=4, batch=2, stages=CHEAP_STAGES)

NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(
        [0, -1, 1, 2, 10**6, 10**9, 10**18, 10**100, 1e308, -1e308, 1e-300, 0.5, -0.5]
        + [math.inf, -math.inf, math.nan]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "Xx", "Qq", "Fe", "rohs", "perovskite", "nowhere.cif", "cuda:7", "auto"]),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=4),
    st.just({}),
    st.dictionaries(st.sampled_from(["a", "term", "source", "x"]), st.integers(-3, 3), max_size=2),
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a nested dict/list (containers included)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _apply(base: dict, muts: list[tuple]) -> dict:
    """Apply (op, path, value) mutations: ``set`` a value, ``del`` a key, ``add`` a key."""
    data = json.loads(json.dumps(base))
    for op, path, value in muts:
        if op == "add" and path == ("",):  # an unknown top-level key
            data[value] = 1
            continue
        try:
            parent = _get(data, path[:-1])
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the path
        key = path[-1]
        fits = isinstance(parent, dict) and isinstance(key, str)
        fits = fits or (isinstance(parent, list) and isinstance(key, int) and key < len(parent))
        if not fits:
            continue
        if op == "set":
            parent[key] = value
        elif op == "del":
            parent.pop(key) if isinstance(parent, list) else parent.pop(key, None)
        elif op == "add" and isinstance(parent[key], dict):
            parent[key][value] = 1
    return data


def mutations(base: dict) -> st.SearchStrategy:
    """Lists of 1-3 mutations of ``base``."""
    paths = _paths(base)
    one = st.one_of(
        st.tuples(st.just("set"), st.sampled_from(paths), NASTY),
        st.tuples(st.just("del"), st.sampled_from(paths), st.none()),
        st.tuples(
            st.just("add"),
            st.sampled_from([p for p in paths if isinstance(_get(base, p), dict)] + [("",)]),
            st.sampled_from(["stepz", "colour", "name2", "x"]),
        ),
    )
    return st.lists(one, min_size=1, max_size=3)


#: whole-file corruptions of a campaign's YAML text
BROKEN = st.one_of(
    st.sampled_from(
        [
            "",
            "~",
            "just a string",
            "- a\n- list",
            "name: [unclosed",
            "a: b: c",
            "\t- tab",
            "*undefined_alias",
            "!!python/object/apply:os.system ['echo pwned']",
            "name: x\n  bad indent: 1",
            "[" * 5000,
            "{a: " * 3000,
            "%YAML 9.9\n---\na: 1",
            "name: !!binary 'not base64!'",
            "templates: !!set {a, b}",
        ]
    ),
    st.binary(max_size=64),
    st.text(max_size=200),
)


def _dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def _names_from(muts: list[tuple]) -> tuple[str, ...]:
    out: list[str] = []
    for op, path, value in muts:
        out += [str(p) for p in path if not isinstance(p, int)]
        if op == "add":
            out.append(str(value))
    return tuple(out)


def _lp_fireworks() -> int:
    lp_file = Path(os.environ["SMOACS_HOME"]) / "launchpad" / "fireworks.json"
    if not lp_file.exists():
        return 0
    lp = EmbeddedLaunchPad(lp_file)
    with lp.session(write=False):
        return lp.fireworks.count_documents({})


def _no_partial(out: Path, o: Outcome) -> None:
    """A failed call leaves neither ``out`` nor a temporary folder beside it."""
    if o.code != 0:
        assert not out.exists(), f"{out} left behind by {o.argv}: {o.err}"
        stray = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert not stray, f"temporary output {stray} left behind by {o.argv}"


# ----------------------------------------------------------------------------- campaigns


def _propose(data: bytes, names: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(data)
        out = Path(d) / "out"
        argv = ["propose", str(path), "--out", str(out), "--quiet", "--steps", "1", "--n", "2"]
        o = call(argv)
        assert_clean(o, (str(path), "c.yaml", *names) if names else (str(path),))
        _no_partial(out, o)
        if o.code == 0:
            assert (out / "proposals.jsonl").is_file()


@_settings(60)
@given(muts=mutations(PEROV))
def test_propose_mutated_campaign(muts) -> None:
    _propose(_dump(_apply(PEROV, muts)), _names_from(muts))


@_settings(20)
@given(text=BROKEN)
def test_propose_broken_yaml(text) -> None:
    _propose(text if isinstance(text, bytes) else text.encode(), ())


@_settings(40)
@given(muts=mutations(FLOW))
def test_submit_mutated_campaign(muts) -> None:
    data = _apply(FLOW, muts)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(_dump(data))
        before = _lp_fireworks()
        o = call(["submit", str(path), "--new-version"])
        assert_clean(o, (str(path), "c.yaml", *_names_from(muts)))
        if o.code != 0:
            assert _lp_fireworks() == before, "a failed submit added fireworks"


@_settings(10)
@given(text=BROKEN)
def test_submit_broken_yaml(text) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        before = _lp_fireworks()
        o = call(["submit", str(path)])
        assert_clean(o, (str(path),))
        assert o.code == 2 and _lp_fireworks() == before


# ----------------------------------------------------------------------------- structures

VALID_CIF = (TEMPLATES / "half_heusler_C1b.cif").read_text()

FLOATS = st.one_of(
    st.floats(min_value=-20, max_value=20),
    st.sampled_from([0.0, math.nan, math.inf, -math.inf, 1e300, 1e-300]),
)


def _cif(a: float, b: float, c: float, al: float, be: float, ga: float, sites: list) -> str:
    lines = VALID_CIF.split("loop_")[0]
    for key, v in (("a", a), ("b", b), ("c", c)):
        lines = lines.replace(f"_cell_length_{key}   4.17193001", f"_cell_length_{key}   {v}")
    for key, v in (("alpha", al), ("beta", be), ("gamma", ga)):
        lines = lines.replace(f"_cell_angle_{key}   60.00000000", f"_cell_angle_{key}   {v}")
    body = (
        "loop_\n _symmetry_equiv_pos_site_id\n _symmetry_equiv_pos_as_xyz\n  1  'x, y, z'\n"
        "loop_\n _atom_site_type_symbol\n _atom_site_label\n _atom_site_symmetry_multiplicity\n"
        " _atom_site_fract_x\n _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n"
    )
    for i, (el, x, y, z, occ) in enumerate(sites):
        body += f"  {el}  {el}{i}  1  {x}  {y}  {z}  {occ}\n"
    return lines + body


def _poscar(lattice: list[list[float]], species: list[str], counts: list[int], coords) -> str:
    text = "fuzz\n1.0\n" + "".join(" ".join(map(str, v)) + "\n" for v in lattice)
    text += " ".join(species) + "\n" + " ".join(map(str, counts)) + "\nDirect\n"
    return text + "".join(" ".join(map(str, c)) + "\n" for c in coords)


ELEMENT = st.sampled_from(["Mn", "Ni", "Sb", "Fe", "Xx", "D", "", "1", "Og"])
COORD = st.one_of(st.floats(min_value=-1, max_value=2), st.sampled_from([math.nan, math.inf]))

STRUCTURE_FILE = st.one_of(
    # a valid CIF cut at a random byte
    st.integers(0, len(VALID_CIF) - 1).map(lambda n: ("c.cif", VALID_CIF[:n])),
    # zero-volume, NaN or huge cells, overlapping, unknown or partially occupied sites
    st.builds(
        lambda cell, sites: ("c.cif", _cif(*cell, sites)),
        st.tuples(FLOATS, FLOATS, FLOATS, FLOATS, FLOATS, FLOATS),
        st.lists(
            st.tuples(ELEMENT, COORD, COORD, COORD, st.sampled_from([1, 0.5, 0, 2])),
            min_size=0,
            max_size=4,
        ),
    ),
    st.builds(
        lambda a, nan_at, overlap: ("c.cif", _cif(a, a, a, 60, 60, 60, _sites(nan_at, overlap))),
        st.sampled_from([4.17, 0.0, 1e-9, math.nan]),
        st.integers(-1, 2),
        st.booleans(),
    ),
    # POSCAR with NaN / zero lattices, count mismatches, NaN coordinates
    st.builds(
        lambda lat, sp, counts, coords: ("POSCAR", _poscar(lat, sp, counts, coords)),
        st.lists(st.lists(FLOATS, min_size=3, max_size=3), min_size=3, max_size=3),
        st.lists(ELEMENT, min_size=1, max_size=2),
        st.lists(st.integers(-1, 3), min_size=1, max_size=2),
        st.lists(st.lists(COORD, min_size=3, max_size=3), min_size=0, max_size=3),
    ),
    st.builds(
        lambda nan, zero: (
            "POSCAR",
            _poscar(
                [[0, 2.1, 2.1], [2.1, 0, 2.1], [2.1, 2.1, 0]] if not zero else [[0, 0, 0]] * 3,
                ["Mn", "Sb"],
                [1, 1],
                [[0, 0, 0], [0.25, 0.25, "nan" if nan else 0.25]],
            ),
        ),
        st.booleans(),
        st.booleans(),
    ),
    # a pymatgen JSON that is not one
    st.sampled_from(
        [
            ("s.json", "{}"),
            ("s.json", "[1, 2]"),
            ("s.json", '{"lattice": 3}'),
            ("s.json", "{not json"),
            ("s.json", '{"@module": "os", "@class": "system"}'),
        ]
    ),
    st.binary(max_size=200).map(lambda b: ("c.cif", b)),
)


def _sites(nan_at: int, overlap: bool) -> list:
    sites = [["Ni", 0.25, 0.25, 0.25, 1], ["Mn", 0.5, 0.5, 0.5, 1], ["Sb", 0, 0, 0, 1]]
    if 0 <= nan_at < 3:
        sites[nan_at][1] = "nan"
    if overlap:
        sites[1][1:4] = [0.2501, 0.25, 0.25]
    return sites


def _write(d: Path, spec: tuple[str, str | bytes]) -> Path:
    name, content = spec
    path = d / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


class _Reached(Exception):
    """The input passed validation and the expensive engine was reached."""


@_settings(60)
@given(spec=STRUCTURE_FILE)
def test_dft_run_structure_files(spec, monkeypatch_module) -> None:
    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        path = _write(d, spec)
        out = d / "out"
        try:
            o = call(["dft", "run", str(path), "--out", str(out)])
        except _Reached:
            assert not out.exists()  # the engine's folder is temporary until it succeeds
            return
        assert_clean(o, (str(path),), allow=(2,))
        _no_partial(out, o)


@_settings(30)
@given(spec=STRUCTURE_FILE)
def test_screen_structure_files(spec) -> None:
    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        (d / "in").mkdir()
        path = _write(d / "in", spec)
        out = d / "out"
        src = d / "in" if path.suffix.lower() == ".cif" else path
        o = call(["screen", str(src), "--out", str(out), "--mlip", "none", "--jobs", "1"])
        assert_clean(o, (str(path), str(src)))
        _no_partial(out, o)


@_settings(30)
@given(spec=STRUCTURE_FILE)
def test_propose_template_files(spec) -> None:
    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        path = _write(d, spec)
        data = json.loads(json.dumps(PEROV))
        data["templates"] = [{"source": str(path)}]
        data["losses"] = [{"term": "element_reduction"}]
        data["success"] = {}
        camp = d / "c.yaml"
        camp.write_bytes(_dump(data))
        out = d / "out"
        argv = ["propose", str(camp), "--out", str(out), "--quiet", "--steps", "1", "--n", "1"]
        o = call(argv)
        assert_clean(o, (str(path), "templates"))
        _no_partial(out, o)


@pytest.fixture(scope="module")
def monkeypatch_module():
    """The GPAW engine replaced by a sentinel: reaching it means validation passed."""
    mp = pytest.MonkeyPatch()

    def reached(*a, **kw):
        raise _Reached

    mp.setattr("smoacs_flows.dft.gpaw_engine.run_gpaw", reached)
    yield mp
    mp.undo()


# ----------------------------------------------------------------------------- arguments

ARG = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "1e309", "nan", "inf", "-inf", "", " ", "x", "Xx"]),
    st.sampled_from(["99999999999999999999", "0.5", "-0.5", "Fe,Mn", ",", "=", "a=b", "=1"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=10).filter(
        lambda s: "\x00" not in s
    ),
    st.integers(-(10**20), 10**20).map(str),
)


def _argv(options: list[str], flags: list[str] = ()) -> st.SearchStrategy:
    """Random option/value pairs (and flags) in random order."""
    pair = st.tuples(st.sampled_from(options), ARG).map(lambda t: [t[0], t[1]])
    flag = st.sampled_from(list(flags) or ["--help"]).map(lambda f: [f])
    return st.lists(pair | flag if flags else pair, min_size=1, max_size=4).map(
        lambda xs: [a for x in xs for a in x]
    )


@pytest.fixture(scope="module")
def campaign_home(tmp_path_factory):
    """A SMOACS_HOME with the FLOW campaign submitted (fireworks, no results yet)."""
    home = tmp_path_factory.mktemp("fuzz_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("SMOACS_HOME", str(home))
    d = tmp_path_factory.mktemp("fuzz_camp")
    path = d / "c.yaml"
    path.write_bytes(_dump(FLOW))
    o = call(["submit", str(path)])
    assert o.code == 0, o.err
    mp.undo()
    return home, path


@pytest.fixture
def in_campaign_home(campaign_home, monkeypatch):
    monkeypatch.setenv("SMOACS_HOME", str(campaign_home[0]))
    return campaign_home


def _option_names(argv: list[str]) -> tuple[str, ...]:
    names = [a for a in argv if a.startswith("--")]
    return (*names, *(n.lstrip("-") for n in names), *(a.strip() for a in argv))


def _lp_snapshot(home: Path) -> bytes:
    return (home / "launchpad" / "fireworks.json").read_bytes()


@_settings(40)
@given(
    extra=_argv(
        [
            "--campaign",
            "--version",
            "--verdict",
            "--e-hull-max",
            "--include",
            "--exclude",
            "--max-elements",
            "--polarisation-min",
            "--moment-min",
            "--where",
            "--state",
            "--sort",
            "--limit",
            "--format",
        ],
        ["--desc", "--sun", "--stable", "--no-update"],
    )
)
def test_query_arguments(extra, in_campaign_home) -> None:
    home = in_campaign_home[0]
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "q.json"
        fmt = [] if "--format" in extra else ["--format", "json"]
        o = call(["query", *extra, *fmt, "--out", str(out)])
        assert_clean(o, _option_names(extra))
        if o.code != 0:
            assert not out.exists()
    assert _lp_snapshot(home)  # the LaunchPad is still readable


@_settings(30)
@given(
    extra=_argv(
        [
            "--version",
            "--stage",
            "--fw",
            "--incar",
            "--max-errors",
            "--gpaw",
            "--walltime",
            "--category",
            "--lost-after",
        ],
        ["--dry-run"],
    ),
    name=st.sampled_from(["fuzzflow", "nope", ""]),
)
def test_resume_and_status_arguments(extra, name, in_campaign_home) -> None:
    home = in_campaign_home[0]
    before = _lp_snapshot(home)
    o = call(["resume", name, *extra])
    assert_clean(o, (*_option_names(extra), repr(name)))
    # nothing failed in this campaign: nothing on the LaunchPad may change
    fws = json.loads(_lp_snapshot(home))["fireworks"]["fireworks"]
    assert fws == json.loads(before)["fireworks"]["fireworks"]
    lost = [a for a in extra if a in ("--lost-after", "--version")]
    status = ["status", name, *(extra[extra.index(a) : extra.index(a) + 2] for a in lost)]
    o = call([status[0], status[1], *[x for pair in status[2:] for x in pair], "--json"])
    assert_clean(o, (*_option_names(extra), repr(name)))


@_settings(40)
@given(
    extra=_argv(
        [
            "--ecut",
            "--kpoint-density",
            "--dense-kpoint-density",
            "--engine",
            "--min-gap",
            "--near-hm",
            "--max-errors",
            "--wall-time",
        ],
        ["--relax", "--json"],
    )
)
def test_dft_run_arguments(extra, monkeypatch_module, tmp_path_factory) -> None:
    d = tmp_path_factory.mktemp("dftargs")
    out = d / "out"
    try:
        o = call(["dft", "run", str(TEMPLATES / "half_heusler_C1b.cif"), "--out", str(out), *extra])
    except _Reached:
        return
    assert_clean(o, _option_names(extra), allow=(2,))
    _no_partial(out, o)


@_settings(30)
@given(
    extra=_argv(
        [
            "--e-hull-max",
            "--fmax",
            "--steps",
            "--gap-max",
            "--max-elements",
            "--min-distance",
            "--policy",
            "--jobs",
            "--refs",
            "--method",
        ],
    )
)
def test_screen_arguments(extra, tmp_path_factory) -> None:
    d = tmp_path_factory.mktemp("screenargs")
    out = d / "out"
    o = call(["screen", str(TEMPLATES), "--out", str(out), "--mlip", "none", *extra])
    assert_clean(o, (*_option_names(extra), str(TEMPLATES)))
    _no_partial(out, o)


@_settings(30)
@given(extra=_argv(["--n", "--steps", "--seed"], ["--force"]))
def test_propose_arguments(extra, tmp_path_factory) -> None:
    d = tmp_path_factory.mktemp("proposeargs")
    camp = d / "c.yaml"
    camp.write_bytes(_dump(PEROV))
    out = d / "out"
    small = [] if "--steps" in extra else ["--steps", "1"]
    small += [] if "--n" in extra else ["--n", "2"]
    o = call(["propose", str(camp), "--out", str(out), "--quiet", *small, *extra], limit=120)
    assert_clean(o, _option_names(extra))
    _no_partial(out, o)


@_settings(12)
@given(
    lp=st.one_of(  # MongoDB files are not fuzzed: each unreachable host waits for a timeout
        st.sampled_from(["", "~", "- a", "a: [", "\xff", "embedded: /proc/nope/x.json"]),
        st.sampled_from(["host: 127.0.0.1\nport: x", "embedded: ''"]),
    ),
    store=st.one_of(BROKEN, st.sampled_from(["type: embedded", "docs_store: 3"])),
    which=st.sampled_from(["--launchpad", "--store"]),
)
def test_submit_launchpad_and_store_files(lp, store, which, tmp_path_factory) -> None:
    d = tmp_path_factory.mktemp("lpfile")
    camp = d / "c.yaml"
    camp.write_bytes(_dump(FLOW))
    f = d / "file.yaml"
    content = lp if which == "--launchpad" else store
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = _lp_fireworks()
    o = call(["submit", str(camp), which, str(f), "--new-version"], limit=120)
    assert_clean(o, (str(f),))
    if o.code != 0:
        assert _lp_fireworks() == before


# ----------------------------------------------------------------------------- subprocess


@pytest.mark.parametrize(
    ("argv", "name", "content", "needle"),
    [
        (["propose", "{f}", "--out", "{d}/out"], "c.yaml", b"\xff\xfe\x00garbage", "c.yaml"),
        (["propose", "{f}", "--out", "{d}/out"], "c.yaml", b"schedule: {steps: -1}", "c.yaml"),
        (["dft", "run", "{f}", "--out", "{d}/out"], "c.cif", VALID_CIF[:300].encode(), "c.cif"),
        (["query", "--where", "colour=red"], "x", b"", "colour"),
        (["resume", "nope"], "x", b"", "nope"),
        (["submit", "{f}"], "c.yaml", b"templates: []", "c.yaml"),
    ],
)
def test_real_processes(argv, name, content, needle, tmp_path) -> None:
    f = tmp_path / name
    f.write_bytes(content)
    argv = [a.format(f=f, d=tmp_path) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "smoacs_flows.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    CASES[case_key(argv)] += 1
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert needle in lines[0] or str(f) in lines[0], lines
    assert not (tmp_path / "out").exists()
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
