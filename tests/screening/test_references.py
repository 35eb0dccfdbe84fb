"""Reference phases: file import, the chemsys-keyed store, MP key, Alexandria conversion."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from smoacs_flows.cli import main
from smoacs_flows.errors import InputError
from smoacs_flows.screening.references import (
    ReferenceStore,
    alexandria_entries,
    fetch,
    load_file,
    normalize_chemsys,
    read_entries_file,
    subsystems,
)

from ._data import MP_ELEMENTS, perov_rows


def test_chemsys_helpers():
    assert normalize_chemsys("Sb-Fe-Mn") == "Fe-Mn-Sb"
    assert sorted(subsystems("O-Fe")) == ["Fe", "Fe-O", "O"]
    assert len(subsystems("Fe-Mn-Sb")) == 7
    with pytest.raises(InputError, match="Xx"):
        normalize_chemsys("Fe-Xx")


def test_refs_load_cli_into_store(smoacs_home, capsys):
    assert main(["refs", "load", str(MP_ELEMENTS), "--source", "mp-2023"]) == 0
    assert "89 new entries" in capsys.readouterr().out
    with ReferenceStore() as st:
        assert len(st.chemsys_list()) == 89
        feo = st.get("O-Fe")
        assert sorted(e.composition.reduced_formula for e in feo) == ["Fe", "O2"]
        assert all(e.data["source"] == "mp-2023" for e in feo)
        # reloading adds nothing (deduplicated by entry_id)
        assert sum(load_file(MP_ELEMENTS, store=st).values()) == 0
        assert len(st.get("Fe", include_subsystems=False)) == 1


def test_bad_reference_files_leave_the_store_untouched(smoacs_home, tmp_path):
    with gzip.open(MP_ELEMENTS, "rt") as fh:
        good = json.load(fh)
    entries = list(good.values())[:3]
    bad_nan = [dict(entries[0]), dict(entries[1], energy=float("nan"))]
    bad_run = [entries[0], dict(entries[2], parameters={"run_type": "R2SCAN"})]
    cases = {
        "nan.json": (json.dumps(bad_nan), "non-finite energy"),
        "type.json": (
            json.dumps([{"@module": "pymatgen.core", "@class": "Composition", "Fe": 1}]),
            "not a ComputedEntry",
        ),
        "run.json": (json.dumps(bad_run), "not MP2020-compatible"),
        "broken.json": ("[{", "not readable JSON"),
    }
    for name, (text, msg) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(InputError, match=msg) as exc:
            load_file(p)
        assert name in str(exc.value)
    with ReferenceStore() as st:
        assert st.chemsys_list() == []  # nothing partial
    assert main(["refs", "load", str(tmp_path / "nan.json")]) == 2


def test_missing_mp_key_is_a_clear_error(smoacs_home, monkeypatch, capsys):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(InputError, match="export MP_API_KEY"):
        fetch("mp", ["Fe-O"])
    assert main(["refs", "fetch", "--source", "mp", "--chemsys", "Fe-O"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MP_API_KEY is not set")


def test_alexandria_conversion_selects_systems_and_applies_mp2020():
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    docs, comps = [], {}
    for i, r in enumerate(perov_rows("test", 30)):
        s = Structure.from_str(r["cif"], fmt="cif")
        hub = {"V": 3.25} if "V" in s.composition and "O" in s.composition else {}
        e = ComputedStructureEntry(
            s, -6.0 * len(s), entry_id=f"agm{i:09d}", parameters={"hubbards": hub} if hub else {}
        )
        docs.append(e.as_dict())
        comps[e.entry_id] = {el.symbol for el in s.composition.elements}
    systems = ["Ti-Os-N-O-F", "V-Rh-N-O-F", "Cs-Rb-N"]
    got = {e.entry_id: e for e in alexandria_entries(docs, systems)}
    # exactly the entries whose elements lie inside one of the systems
    inside = {k for k, els in comps.items() if any(els <= set(cs.split("-")) for cs in systems)}
    assert set(got) == inside == {"agm000000000", "agm000000003", "agm000000014"}
    # run type from the U values; corrections as pymatgen's MP2020 scheme gives them
    assert got["agm000000000"].parameters["run_type"] == "GGA"
    assert got["agm000000003"].parameters["run_type"] == "GGA+U"
    compat = MaterialsProject2020Compatibility(check_potcar=False)
    for d in docs:
        if d["entry_id"] in got:
            mine = got[d["entry_id"]]
            e = ComputedStructureEntry.from_dict(d)
            e.parameters = {**e.parameters, "run_type": mine.parameters["run_type"]}
            assert mine.energy == pytest.approx(compat.process_entry(e).energy, abs=1e-9)
    # the published MP2020 constants (Wang et al., Sci. Rep. 11, 15496 (2021)): oxide -0.687,
    # N -0.361, F -0.462 eV per anion; V in GGA+U -1.7 eV per V
    anions = -0.687 - 0.361 - 0.462
    assert got["agm000000000"].energy == pytest.approx(-30.0 + anions, abs=1e-9)
    assert got["agm000000003"].energy == pytest.approx(-30.0 + anions - 1.7, abs=1e-9)
    assert alexandria_entries(docs, ["He-Ne"]) == []


def test_read_entries_accepts_list_dict_and_wrapped(tmp_path):
    with gzip.open(MP_ELEMENTS, "rt") as fh:
        entries = list(json.load(fh).values())[:4]
    for name, obj in {"l.json": entries, "w.json": {"entries": entries}}.items():
        p = tmp_path / name
        p.write_text(json.dumps(obj))
        assert len(read_entries_file(p)) == 4


def _alexandria_dump(path) -> str:
    """A bz2 JSON dump in Alexandria's layout ({"entries": [ComputedStructureEntry dicts]})."""
    import bz2

    from pymatgen.core import Lattice

    docs = []
    for i, r in enumerate(perov_rows("test", 20)):
        s = Structure.from_str(r["cif"], fmt="cif")
        docs.append(ComputedStructureEntry(s, -6.0 * len(s), entry_id=f"agm{i:09d}").as_dict())
    s0 = Structure.from_str(perov_rows("test", 1)[0]["cif"], fmt="cif")
    # as in Alexandria's hull dump, every element has an elemental phase
    for i, el in enumerate(sorted({el.symbol for el in s0.composition.elements})):
        s = Structure(Lattice.cubic(3.0), [el], [[0, 0, 0]])
        docs.append(ComputedStructureEntry(s, -3.0, entry_id=f"agm{900 + i:09d}").as_dict())
    with bz2.open(path, "wt", encoding="utf-8") as fh:
        json.dump({"entries": docs}, fh)
    return "-".join(sorted(el.symbol for el in s0.composition.elements))


@contextlib.contextmanager
def served_alexandria_dump(tmp_path) -> Iterator[tuple[str, str, list[str]]]:
    """A local HTTP server (Alexandria's stand-in) serving a dump of :func:`_alexandria_dump`
    as ``/convex_hull_pbe.json.bz2``: yields (base URL, its chemical system, paths requested)."""
    served = tmp_path / "www"
    served.mkdir()
    cs = _alexandria_dump(served / "convex_hull_pbe.json.bz2")
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", cs, hits
    finally:
        server.shutdown()


def test_alexandria_download_over_http_is_cached(tmp_path, monkeypatch, capsys):
    """The real download path against a local HTTP server serving a dump we made."""
    from smoacs_flows.config import smoacs_home

    with served_alexandria_dump(tmp_path) as (base, cs, hits):
        monkeypatch.setenv("SMOACS_ALEXANDRIA_URLS", f"{base}/convex_hull_pbe.json.bz2")
        assert main(["refs", "fetch", "--source", "alexandria", "--chemsys", cs]) == 0
        n_hits = len(hits)
        assert n_hits >= 1
        cached = smoacs_home() / "downloads" / "alexandria" / "convex_hull_pbe.json.bz2"
        assert cached.is_file() and not list(cached.parent.glob("*.part"))
        with ReferenceStore() as store:
            got = store.get(cs)
        assert got and all(e.entry_id.startswith("agm") for e in got)
        # a second fetch reads the cache, not the network
        assert main(["refs", "fetch", "--source", "alexandria", "--chemsys", cs]) == 0
        assert len(hits) == n_hits
        # a missing file on the server: a clear error, nothing cached
        monkeypatch.setenv("SMOACS_ALEXANDRIA_URLS", f"{base}/nope.json.bz2")
        capsys.readouterr()
        assert main(["refs", "fetch", "--source", "alexandria", "--chemsys", cs]) == 2
        assert "cannot download" in capsys.readouterr().err
        assert not (cached.parent / "nope.json.bz2").exists()
        assert not list(cached.parent.glob("*.part"))
