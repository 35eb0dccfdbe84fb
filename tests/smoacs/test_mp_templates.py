"""Materials Project templates through the real mp-api client, against a local stand-in server
that speaks the two endpoints the client uses (heartbeat, materials/summary)."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mp_api.client.core.settings import MAPI_CLIENT_SETTINGS
from pymatgen.core import Lattice, Structure

from smoacs_flows.campaign import campaign_from_dict
from smoacs_flows.cli import main
from smoacs_flows.config import smoacs_home
from smoacs_flows.errors import InputError, SpecError
from smoacs_flows.smoacs.propose import ProposalRun, build_templates

KEY = "k" * 28 + "1234"  # 32 characters, like a real key
DB_VERSION = "2025.09.25"


def _materials() -> dict[str, dict]:
    """Seven rock-salt-like materials; mp-7 has 64 sites (above max_sites)."""
    out = {}
    for i, (a, b) in enumerate(
        [("Na", "Cl"), ("Mg", "O"), ("Ca", "O"), ("K", "Br"), ("Li", "F"), ("Ba", "S")]
    ):
        s = Structure(Lattice.cubic(4.0 + 0.2 * i), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
        out[f"mp-{i + 1}"] = s.as_dict()
    big = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    big.make_supercell([2, 4, 4])
    out["mp-7"] = big.as_dict()
    return out


class _Server:
    def __init__(self) -> None:
        self.materials = _materials()
        self.hits: list[tuple[str, dict, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                u = urllib.parse.urlparse(self.path)
                q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
                outer.hits.append((u.path, q, self.headers.get("x-api-key", "")))
                if u.path.rstrip("/").endswith("heartbeat"):
                    body = {
                        "db_version": DB_VERSION,
                        "version": MAPI_CLIENT_SETTINGS.MIN_EMMET_VERSION,
                        "access_controlled_batch_ids": [],
                    }
                elif u.path.rstrip("/").endswith("materials/summary"):
                    docs = []
                    wanted = q.get("material_ids")
                    wanted = set(wanted.split(",")) if wanted else None
                    for mid, s in outer.materials.items():
                        n = len(s["sites"])
                        if "nsites_max" in q and n > int(q["nsites_max"]):
                            continue
                        if wanted is not None and mid not in wanted:
                            continue
                        els = {sp["element"] for site in s["sites"] for sp in site["species"]}
                        if "exclude_elements" in q and els & set(q["exclude_elements"].split(",")):
                            continue
                        doc = {"material_id": mid}
                        if "structure" in q.get("_fields", ""):
                            doc["structure"] = s
                        docs.append(doc)
                    body = {"data": docs, "meta": {"total_doc": len(docs), "max_limit": 1000}}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"

    def summary_hits(self) -> list[dict]:
        return [q for path, q, _ in self.hits if "summary" in path]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    srv = _Server()
    threading.Thread(target=srv.httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("MP_API_ENDPOINT", srv.url)
    monkeypatch.setenv("MP_API_KEY", KEY)
    try:
        yield srv
    finally:
        srv.httpd.shutdown()


def _campaign(**tmpl) -> object:
    spec = {
        "name": "mp",
        "seed": 5,
        "device": "cpu",
        "templates": [{"source": "mp", "max_sites": 30, "n": 3, **tmpl}],
        "policy": "ionic",
        "losses": [{"term": "element_reduction"}],
        "schedule": {"steps": 2, "n_candidates": 3, "batch_size": 3},
    }
    return campaign_from_dict(spec)


def test_mp_templates_are_downloaded_once_with_provenance(server: _Server) -> None:
    camp = _campaign(criteria={"exclude_elements": ["Ba"]})
    prov: dict = {}
    temps = build_templates(camp, np.random.default_rng(0), provenance=prov)
    p = prov["templates[0]"]
    # the query reached the server: ≤ 30 sites, the criterion, the key as a header
    first = server.summary_hits()[0]
    assert first["nsites_max"] == "30" and first["exclude_elements"] == "Ba"
    assert all(key == KEY for path, _, key in server.hits if "summary" in path)
    # 5 materials match (mp-6 has Ba, mp-7 is too big); 3 drawn with the campaign seed
    assert p["n_matching"] == 5 and len(p["material_ids"]) == 3
    assert set(p["material_ids"]) <= {"mp-1", "mp-2", "mp-3", "mp-4", "mp-5"}
    assert p["database_version"] == DB_VERSION and p["endpoint"] == server.url
    assert [t.id for t in temps] == p["material_ids"]
    for t in temps:
        served = Structure.from_dict(server.materials[t.id])
        assert t.structure.matches(served) and t.meta["database_version"] == DB_VERSION
    # cached with provenance; the key is nowhere in it
    cache = Path(p["cache"])
    assert cache.parent == smoacs_home() / "templates" / "mp"
    raw = gzip.decompress(cache.read_bytes())
    assert KEY.encode() not in raw
    assert json.loads(raw)["provenance"]["material_ids"] == p["material_ids"]
    # a second build reads the cache: no request at all
    n_hits = len(server.hits)
    again = build_templates(camp, np.random.default_rng(0))
    assert [t.id for t in again] == [t.id for t in temps] and len(server.hits) == n_hits
    # another seed draws from the same matches into another cache file
    other = build_templates(_campaign_seed(camp, 6), np.random.default_rng(0), provenance=prov)
    assert len(other) == 3 and Path(prov["templates[0]"]["cache"]) != cache


def _campaign_seed(camp, seed: int):
    data = camp.model_dump(mode="json")
    data["seed"] = seed
    return campaign_from_dict(data)


def test_propose_records_the_provenance(server: _Server, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: mp\nseed: 5\ndevice: cpu\ntemplates: [{source: mp, max_sites: 30, n: 2}]\n"
        "losses: [{term: element_reduction}]\n"
        "schedule: {steps: 2, n_candidates: 2, batch_size: 2}\n"
    )
    out = tmp_path / "out"
    assert main(["propose", str(path), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    prov = summary["template_provenance"]["templates[0]"]
    assert prov["database_version"] == DB_VERSION and len(prov["material_ids"]) == 2
    recs = [json.loads(x) for x in (out / "proposals.jsonl").read_text().splitlines()]
    assert {r["template_id"] for r in recs} == set(prov["material_ids"])
    assert KEY not in (out / "summary.json").read_text()
    assert summary["loss_terms"]["element_reduction"] == {
        "term": "element_reduction",
        "weight": 1.0,
        "reads": [],
    }


def test_no_key_and_no_cache_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(InputError) as err:
        ProposalRun(_campaign(), predictors={})
    msg = str(err.value)
    assert msg.startswith("templates[0]: source mp needs MP_API_KEY")
    assert str(smoacs_home() / "templates" / "mp") in msg
    # through the CLI: one line, exit 2, nothing written
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: mp\ntemplates: [{source: mp, max_sites: 30, n: 2}]\n"
        "losses: [{term: element_reduction}]\n"
    )
    out = tmp_path / "out"
    assert main(["propose", str(path), "--out", str(out), "--quiet"]) == 2
    err_text = capsys.readouterr().err.strip()
    assert err_text.startswith("error: templates[0]: source mp needs MP_API_KEY")
    assert len(err_text.splitlines()) == 1 and not out.exists()


def test_unreachable_server_names_the_cache_and_hides_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MP_API_KEY", KEY)
    monkeypatch.setenv("MP_API_ENDPOINT", "http://127.0.0.1:9/")  # discard port: refused
    with pytest.raises(InputError) as err:
        ProposalRun(_campaign(), predictors={})
    msg = str(err.value)
    assert "cannot download templates from the Materials Project" in msg
    assert str(smoacs_home() / "templates" / "mp") in msg and KEY not in msg
    assert not list((smoacs_home() / "templates" / "mp").glob("*"))


def test_offline_validation_skips_an_uncached_mp_source(monkeypatch) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    run = ProposalRun(_campaign(), predictors={}, remote_templates=False)
    assert run.templates == [] and len(run.batches) == 1


def test_bad_criteria_and_misplaced_options_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"templates\[0\]\.criteria\.colour: not a criterion"):
        ProposalRun(_campaign(criteria={"colour": "red"}), predictors={})
    with pytest.raises(SpecError, match="templates.0: max_sites applies to source: mp only"):
        campaign_from_dict(
            {
                "name": "x",
                "templates": [{"source": "perovskite", "max_sites": 3}],
                "losses": [{"term": "element_reduction"}],
            }
        )
