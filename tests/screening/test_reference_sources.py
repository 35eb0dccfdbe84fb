"""stages.screening.reference_sources: the S.U.N. stage fills the reference store from MP /
Alexandria itself, once per chemical system (Alexandria through a local stand-in server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoacs_flows.errors import InputError
from smoacs_flows.makers.settings import ScreeningSettings
from smoacs_flows.makers.stages import _references
from smoacs_flows.screening.references import ReferenceStore, ensure_sources

from .test_references import served_alexandria_dump


@pytest.fixture
def alexandria(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with served_alexandria_dump(tmp_path) as (base, cs, hits):
        monkeypatch.setenv("SMOACS_ALEXANDRIA_URLS", f"{base}/convex_hull_pbe.json.bz2")
        yield cs, hits


def test_sun_references_are_fetched_once_per_system(alexandria, tmp_path: Path) -> None:
    cs, hits = alexandria
    st = ScreeningSettings(references="store", reference_sources=["alexandria"])
    refs = _references(st, tmp_path, {cs})
    assert refs and all(e.entry_id.startswith("agm") for e in refs)
    assert all(e.data.get("source") == "alexandria" for e in refs)
    n = len(hits)
    assert n >= 1
    with ReferenceStore() as store:
        assert ensure_sources(store, [cs], ["alexandria"]) == {}  # recorded: nothing asked
    assert len(_references(st, tmp_path, {cs})) == len(refs) and len(hits) == n


def test_mp_source_without_a_key_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with ReferenceStore() as store, pytest.raises(InputError, match="MP_API_KEY is not set"):
        ensure_sources(store, ["Fe-Mn-Si"], ["mp"])


def test_sources_need_the_store() -> None:
    with pytest.raises(ValueError, match="reference_sources needs references: store"):
        ScreeningSettings(reference_sources=["mp"])
