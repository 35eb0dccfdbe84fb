"""Two campaigns submitted and run at once on the embedded LaunchPad, with ``status`` and
``query`` called in a loop from a third process throughout: nothing lost, no lock timeout,
and every answer consistent with the results store at that moment (it only ever moves
forward, and never contradicts what the store finally holds)."""

from __future__ import annotations

import json

import pytest

from smoacs_flows.stores.candidates import FUNNEL
from tests.chaos._procs import launches

pytestmark = pytest.mark.chaos


def _funnel(rows: list[dict]) -> dict[str, int]:
    out = dict.fromkeys(FUNNEL, 0)
    for r in rows:
        for s in FUNNEL[: FUNNEL.index(r["stage"]) + 1]:
            out[s] += 1
    return out


def _fizzle_traces(home) -> str:
    """The stack traces of fizzled launches (for the failure message)."""
    from smoacs_flows.makers.launchpad import EmbeddedLaunchPad

    lp = EmbeddedLaunchPad(home / "launchpad" / "fireworks.json")
    with lp.session(write=False):
        found = list(lp.launches.find({"state": "FIZZLED"}))
    return "\n".join(
        str(((x.get("action") or {}).get("stored_data") or {}).get("_exception", {}))[-3000:]
        for x in found
    )


def test_two_campaigns_at_once(concurrent_runs) -> None:
    c = concurrent_runs
    for name, (code, log) in c["runs"].items():
        assert code == 0, f"{name}:\n{log}\n{_fizzle_traces(c['home'])}"
        assert f"campaign {name} v1: done" in log, log
        assert "locked by another process" not in log
    # nothing lost: every firework completed once, every candidate exactly once
    fws, lnc = launches(c["home"])
    assert fws and {fw["state"] for fw in fws} == {"COMPLETED"}
    by_id = {x["launch_id"]: x for x in lnc}
    for fw in fws:
        assert [by_id[i]["state"] for i in fw["launches"]] == ["COMPLETED"], fw["name"]
    final = {}
    for name, r in c["final"].items():
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        ids = [x["candidate_id"] for x in rows]
        assert len(ids) == len(set(ids)) == 4 and all(i.startswith(f"{name}-") for i in ids)
        assert {x["state"] for x in rows} == {"done"}
        assert sum(x["stage"] == "dft" for x in rows) == 1
        final[name] = {x["candidate_id"]: x for x in rows}

    # the answers given while both ran
    assert len(c["answers"]) >= 2, "too few status/query rounds to mean anything"
    last: dict[str, dict[str, int]] = {}
    seen = dict.fromkeys(final, False)
    for a in c["answers"]:
        name, st, q = a["campaign"], a["status"], a["query"]
        for r in (st, q):
            assert "locked by another process" not in r.stderr and "Traceback" not in r.stderr
        if st.returncode == 2 and not seen[name]:
            assert f"unknown campaign {name!r}" in st.stderr  # not submitted yet
            continue
        assert st.returncode == 0, st.stderr
        seen[name] = True
        funnel = json.loads(st.stdout)["funnel"]
        if q.returncode == 2 and not last.get(name):  # no candidate in the store yet
            assert "unknown campaign" in q.stderr and "results store" in q.stderr, q.stderr
            assert not funnel["proposed"], funnel
            continue
        assert q.returncode == 0, q.stderr
        rows = json.loads(q.stdout)
        ids = [x["candidate_id"] for x in rows]
        assert len(ids) == len(set(ids)) and set(ids) <= set(final[name])
        got = _funnel(rows)
        # the query (no update) right after status: the store can only have moved forward
        for s in FUNNEL:
            if funnel.get(s) is not None:
                assert got[s] >= funnel[s], (s, got, funnel)
            assert got[s] >= last.get(name, {}).get(s, 0), ("went back", s, a["t"])
        last[name] = got
        # nothing an answer says contradicts what the store finally holds
        for x in rows:
            f = final[name][x["candidate_id"]]
            assert x["formula"] == f["formula"] and x["campaign"] == name
            for k in ("unique", "sun", "verdict", "mlip_energy_per_atom"):
                if x[k] is not None:
                    assert x[k] == f[k], (k, x, f)
    assert all(seen.values())
