"""Results store at scale: build N candidate documents from job outputs in the embedded
JobStore, then time typical filtered queries.

Synthetic campaign: N proposals (real pymatgen structures: the half-Heusler template with
random elements) spread over propose jobs of 512 records, a prefilter and a relaxation output
per propose job, and one S.U.N. output; 20 DFT results. Everything goes through the real
builder (JobStore → sections → documents → montydb + SQLite index) and the real query API.

Prints the builder throughput (documents/s; first build and an incremental no-op rerun) and,
per query, the time on the SQLite index and on the montydb collection itself (the Mongo query
path a MongoDB store would use, here without indexes), side by side in one run.

Every timed query is run on both paths and must return the same candidates in the same order
(ids compared, the run stops otherwise); the store path gets the same filter, sort and limit
pushed down as a MongoDB query (``ResultsStore.find``). On the cluster the peer is MongoDB with
the builder's indexes on the query fields; no MongoDB server is available here, so that path is
not measured. Writes benchmarks/results/query_scale.json.

    .venv/bin/python benchmarks/query_scale.py --n 50000
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import machine, write_result

ROOT = Path(__file__).resolve().parents[1]
ELEMENTS = [
    "Fe",
    "Mn",
    "Cr",
    "V",
    "Ti",
    "Cu",
    "Zn",
    "Al",
    "Si",
    "Ge",
    "Sn",
    "Sb",
    "In",
    "Co",
    "Ni",
    "Mg",
    "Ca",
    "Sr",
    "Ba",
    "Y",
    "Zr",
    "Nb",
    "Mo",
    "Ru",
    "Rh",
    "Pd",
    "Ag",
]
QUERIES = {
    "half-metals, E_hull<=0.1, no Co, <=4 el.": dict(
        verdict="half_metal", e_hull_max=0.1, exclude=["Co"], max_elements=4
    ),
    "S.U.N., contains Fe, top 50 by E_hull": dict(sun=True, include=["Fe"], limit=50),
    "failed DFT": dict(state="failed"),
    "|P|>=0.9, moment 2..4 μB/f.u.": dict(polarisation_min=0.9, moment_min=2.0, moment_max=4.0),
    "E_hull<=0.05, top 100": dict(e_hull_max=0.05, limit=100),
    "S.U.N., highest MLIP energy first, top 20": dict(
        sun=True, sort="mlip_energy_per_atom", descending=True, limit=20
    ),
}


def make_outputs(n: int, seed: int = 0) -> list[dict]:
    """Job documents of a synthetic campaign (``metadata`` as smoacs jobs have it)."""
    from pymatgen.core import Structure

    rng = random.Random(seed)
    tmpl = Structure.from_file(ROOT / "campaigns" / "templates" / "half_heusler_C1b.cif")
    tags = ["smoacs:bench", "smoacs:bench:v1"]
    now = datetime.now(UTC).isoformat()
    docs, sun_records, scores, rejected = [], [], {}, {}

    def jobdoc(stage: str, output: dict, i: int) -> dict:
        return {
            "uuid": f"{stage}-{i:05d}",
            "index": 1,
            "output": output,
            "completed_at": now,
            "name": stage,
            "metadata": {"campaign": "bench", "stage": stage, "tags": tags},
        }

    per = 512
    for j, start in enumerate(range(0, n, per)):
        recs = []
        for i in range(start, min(n, start + per)):
            els = rng.sample(ELEMENTS, 3)
            s = tmpl.copy()
            s.replace_species({sp: e for sp, e in zip(sorted(tmpl.composition), els)})
            recs.append(
                {
                    "id": f"bench-{i:06d}",
                    "batch": j,
                    "template_id": "half_heusler_C1b",
                    "formula": s.composition.formula,
                    "reduced_formula": s.composition.reduced_formula,
                    "elements": sorted(els),
                    "n_elements": 3,
                    "n_sites": len(s),
                    "structure": s.as_dict(),
                    "predicted": {"chgnet": rng.uniform(-8, -3)},
                    "losses": {"total": rng.uniform(0, 3)},
                    "success": {"all": True},
                }
            )
        docs.append(jobdoc("propose", {"records": recs}, j))
        kept = [r for r in recs if rng.random() < 0.6]
        docs.append(
            jobdoc(
                "prefilter",
                {
                    "records": kept,
                    "rejected": {r["id"]: ["band gap 0.4 > 0.1"] for r in recs if r not in kept},
                },
                j,
            )
        )
        relaxed = []
        for r in kept:
            r = dict(r)
            r["screening"] = {
                "mlip": "CHGNet",
                "relaxed": r["structure"],
                "mlip_energy_per_atom": rng.uniform(-8, -3),
                "relax_converged": True,
                "relax_steps": 40,
                "relax_wall_time": 1.0,
            }
            relaxed.append(r)
            eh = rng.expovariate(8.0)
            scores[r["id"]] = {
                "e_above_hull": eh,
                "stable": eh <= 0.1,
                "unique": True,
                "novel": rng.random() < 0.9,
            }
            if scores[r["id"]]["stable"] and scores[r["id"]]["novel"]:
                sun_records.append(r)
            else:
                rejected[r["id"]] = ["not S.U.N."]
        docs.append(jobdoc("relax", {"records": relaxed, "stage_rejected": {}}, j))
    docs.append(
        jobdoc("sun", {"records": sun_records, "scores": scores, "stage_rejected": rejected}, 0)
    )
    for k, r in enumerate(sun_records[:20]):
        p = rng.uniform(0.5, 1.0)
        docs.append(
            jobdoc(
                "dft",
                {
                    "candidate_id": r["id"],
                    "engine": "gpaw",
                    "structure": r["structure"],
                    "formula": r["formula"],
                    "reduced_formula": r["reduced_formula"],
                    "moment_per_fu": rng.choice([1.0, 2.0, 3.0, 2.6]),
                    "total_moment": 3.0,
                    "analysis": {
                        "verdict": "half_metal" if p > 0.95 else "magnetic_metal",
                        "polarisation": p,
                        "gaps": {},
                    },
                },
                k,
            )
        )
    return docs


def timed(fn, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls, seconds."""
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ["SMOACS_HOME"] = tempfile.mkdtemp(prefix="smoacs-query-scale-")
    from smoacs_flows.stores import embedded_job_store
    from smoacs_flows.stores.results import embedded_results_store, query, update_results

    t0 = time.perf_counter()
    docs = make_outputs(args.n)
    js = embedded_job_store()
    js.connect()
    # as jobflow stores smoacs jobs (``@job(data=["records"])``): records in the data store
    blobs = []
    for d in docs:
        recs = d["output"].pop("records", None)
        if recs is not None:
            info = {"@class": "", "@module": "", "blob_uuid": f"blob-{d['uuid']}"}
            d["output"]["records"] = {**info, "store": "data"}
            blobs.append({**info, "data": recs, "job_uuid": d["uuid"], "job_index": 1})
    js.docs_store._collection.insert_many(docs)
    js.additional_stores["data"]._collection.insert_many(blobs)
    t_gen = time.perf_counter() - t0
    print(
        f"synthetic job outputs: {len(docs)} job documents for {args.n} proposals ({t_gen:.1f} s)"
    )

    rs = embedded_results_store()
    t = time.perf_counter()
    stats = update_results(rs, embedded_job_store())
    t_build = time.perf_counter() - t
    n_docs = stats.get("documents_written", 0)
    t = time.perf_counter()
    stats2 = update_results(rs, embedded_job_store())
    t_noop = time.perf_counter() - t
    print(
        f"builder: {n_docs} candidate documents in {t_build:.1f} s = "
        f"{n_docs / t_build:.0f} documents/s; rerun with nothing new: {t_noop:.2f} s "
        f"({stats2.get('job_outputs_processed', 0)} outputs processed)"
    )

    rs.connect()
    index = rs.index
    result = {
        "machine": machine(),
        "n": args.n,
        "repeat": args.repeat,
        "builder": {"documents": n_docs, "first_build_s": t_build, "noop_rerun_s": t_noop},
        "queries": {},
    }
    print(f"{'query':<44} {'hits':>6} {'SQLite index':>13} {'montydb':>13} {'ratio':>6}")
    for name, kw in QUERIES.items():
        rs.index = index
        ids_ix = [c.candidate_id for c in query(campaign="bench", results=rs, **kw)]
        t_ix = timed(lambda kw=kw: query(campaign="bench", results=rs, **kw), args.repeat)
        rs.index = None
        t = time.perf_counter()
        ids_st = [c.candidate_id for c in query(campaign="bench", results=rs, **kw)]
        t_mdb = time.perf_counter() - t
        if ids_ix != ids_st:
            raise SystemExit(f"{name}: the index and the store return different candidates")
        result["queries"][name] = {
            "kwargs": kw,
            "hits": len(ids_ix),
            "index_median_s": t_ix,
            "store_s": t_mdb,
            "same_ids_and_order": True,
            "loadavg": list(os.getloadavg()),
        }
        print(
            f"{name:<44} {len(ids_ix):>6} {t_ix * 1e3:>10.0f} ms {t_mdb * 1e3:>10.0f} ms "
            f"{t_mdb / t_ix:>5.0f}x  same ids and order"
        )
    rs.index = index
    print(f"wrote {write_result('query_scale', result)}")


if __name__ == "__main__":
    main()
