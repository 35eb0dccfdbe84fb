"""The GPAW chain runs with one BLAS thread by default (threaded BLAS on GPAW's small matrices
made a demo DFT job several times slower on 2 cores), and leaves the pools alone when asked."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure
from threadpoolctl import threadpool_info, threadpool_limits

from smoacs_flows.dft import gpaw_engine
from smoacs_flows.dft.gpaw_engine import GPAWSettings, run_gpaw

pytest.importorskip("gpaw")


def _seen_threads(monkeypatch) -> list[list[int]]:
    """Replace the chain by a probe that records the BLAS/OpenMP pools' thread counts."""
    seen: list[list[int]] = []

    def probe(*args, **kwargs):
        seen.append([p["num_threads"] for p in threadpool_info()])
        return None

    monkeypatch.setattr(gpaw_engine, "_run_chain", probe)
    return seen


def test_one_blas_thread_inside_the_chain_by_default(monkeypatch):
    seen = _seen_threads(monkeypatch)
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with threadpool_limits(limits=2):  # as a worker without OMP_NUM_THREADS finds them
        before = [p["num_threads"] for p in threadpool_info()]
        run_gpaw(nacl, GPAWSettings())
        after = [p["num_threads"] for p in threadpool_info()]
    assert seen and seen[0] and set(seen[0]) == {1}, seen
    assert after == before  # restored on the way out


def test_blas_threads_none_leaves_the_pools_as_found(monkeypatch):
    seen = _seen_threads(monkeypatch)
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with threadpool_limits(limits=2):
        before = [p["num_threads"] for p in threadpool_info()]
        run_gpaw(nacl, GPAWSettings(blas_threads=None))
    assert seen == [before]
