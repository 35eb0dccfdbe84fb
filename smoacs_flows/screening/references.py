"""Reference phases: fetch (Materials Project, Alexandria), load from files, cache in a store.

Entries are pymatgen ``ComputedEntry``/``ComputedStructureEntry`` objects with MP2020
compatibility applied. They are cached in a montydb ``MontyStore`` under ``$SMOACS_HOME``,
one document per chemical system (``"Fe-Mn-Sb"``: the entries whose elements are exactly that
set), so a phase diagram over all subsystems of a candidate is a union of documents.

MLIP-relaxed reference energies are cached in a second collection keyed by
``(mlip, chemsys)``, so each subsystem is relaxed once for every campaign that shares the store.

Writes are all-or-nothing as far as we control them: every entry is converted and validated
before the single store update, so a bad file leaves the store untouched.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import logging
import math
import os
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from monty.json import MontyDecoder
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry

from smoacs_flows.config import smoacs_home
from smoacs_flows.errors import InputError

log = logging.getLogger(__name__)

#: Alexandria PBE data (CC-BY 4.0): bz2 JSON files of ComputedStructureEntries. The convex-hull
#: dump is tried first; the full release is the fallback. Override with $SMOACS_ALEXANDRIA_URLS
#: (comma-separated list of file URLs or local paths).
ALEXANDRIA_URLS = ["https://alexandria.icams.rub.de/data/pbe/convex_hull/convex_hull_pbe.json.bz2"]
MP_KEY_HELP = (
    "MP_API_KEY is not set: create a key at https://next-gen.materialsproject.org/api and "
    "`export MP_API_KEY=<your key>` (it is read from the environment only, never stored)"
)


# ----------------------------------------------------------------------------- helpers


def normalize_chemsys(chemsys: str | Iterable[str]) -> str:
    """``"Sb-Fe-Mn"`` or ``["Fe", "Mn", "Sb"]`` → ``"Fe-Mn-Sb"`` (validated, sorted)."""
    from pymatgen.core import Element

    parts = chemsys.split("-") if isinstance(chemsys, str) else list(chemsys)
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        raise InputError(f"empty chemical system {chemsys!r}")
    for p in parts:
        if not Element.is_valid_symbol(p):
            raise InputError(f"unknown element symbol {p!r} in chemical system {chemsys!r}")
    return "-".join(sorted(set(parts)))


def entry_chemsys(entry: ComputedEntry) -> str:
    """The chemical system of an entry, e.g. ``"Fe-O"``."""
    return "-".join(sorted(el.symbol for el in entry.composition.elements))


def subsystems(chemsys: str) -> list[str]:
    """All non-empty subsystems of a chemical system (``Fe-O`` → ``Fe``, ``O``, ``Fe-O``)."""
    els = normalize_chemsys(chemsys).split("-")
    return ["-".join(c) for n in range(1, len(els) + 1) for c in itertools.combinations(els, n)]


def apply_mp2020(entries: Sequence[ComputedEntry], where: str = "") -> list[ComputedEntry]:
    """MP2020 corrections (POTCAR check off: the energies are trusted as GGA/GGA+U).

    Entries the scheme rejects (wrong run type, inconsistent U values) are an error naming them.
    """
    compat = MaterialsProject2020Compatibility(check_potcar=False)
    out = []
    for e in entries:
        try:
            processed = compat.process_entry(e, on_error="raise", inplace=False)
        except Exception as exc:  # CompatibilityError and friends
            raise InputError(
                f"{where}entry {e.entry_id or e.composition.reduced_formula}: "
                f"not MP2020-compatible ({str(exc).split(' for {')[0]})"
            ) from None
        out.append(processed)
    return out


def quiet_missing_electronegativities() -> None:
    """Read every element's Pauling electronegativity once with pymatgen's "No Pauling
    electronegativity for He/Ne/Ar" warning filtered out.

    pymatgen sorts formulas by electronegativity and warns the first time it meets an element
    without one; the MP elemental references hold He, Ne and Ar entries, so every reader of
    them printed three warnings that say nothing about the user's candidates. The value (NaN)
    is cached on each ``Element``, so after this no other read warns; pymatgen's other
    warnings are untouched.
    """
    import warnings

    from pymatgen.core import Element

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="No Pauling electronegativity for", category=UserWarning
        )
        for el in Element:
            _ = el.X


def _decode_entries(obj: Any, where: str) -> list[ComputedEntry]:
    """Entries from a decoded JSON value: a list, a dict of entries, or ``{"entries": [...]}``."""
    quiet_missing_electronegativities()
    if isinstance(obj, dict) and "entries" in obj and "@class" not in obj:
        obj = obj["entries"]
    if isinstance(obj, dict) and "@class" not in obj:
        obj = list(obj.values())
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise InputError(f"{where}: expected a JSON list of entries, got {type(obj).__name__}")
    from smoacs_flows.safe_import import check_mson

    decoder = MontyDecoder()
    out: list[ComputedEntry] = []
    for i, d in enumerate(obj):
        check_mson(d, f"{where}[{i}]", InputError)  # allow-listed @module, before any import
        try:
            e = decoder.process_decoded(d)
        except Exception as exc:  # noqa: BLE001 - reported with its position
            raise InputError(f"{where}[{i}]: cannot decode entry ({exc})") from None
        if not isinstance(e, ComputedEntry):
            raise InputError(f"{where}[{i}]: not a ComputedEntry (got {type(e).__name__})")
        if not math.isfinite(e.uncorrected_energy) or e.composition.num_atoms <= 0:
            raise InputError(f"{where}[{i}] ({e.entry_id}): non-finite energy or empty composition")
        out.append(e)
    if not out:
        raise InputError(f"{where}: no entries")
    return out


def read_entries_file(path: str | Path) -> list[ComputedEntry]:
    """Entries from a JSON, JSON.gz or JSON.bz2 file; errors name the file and position."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from None
    return _decode_entries(obj, str(path))


# ----------------------------------------------------------------------------- the store


class ReferenceStore:
    """Reference entries and MLIP reference energies in montydb under ``$SMOACS_HOME``."""

    def __init__(self, path: str | Path | None = None) -> None:
        from maggma.stores import MontyStore

        self.path = Path(path) if path else smoacs_home() / "stores"
        self.path.mkdir(parents=True, exist_ok=True)
        kw = {"database_path": str(self.path), "database_name": "smoacs"}
        self.entries = MontyStore("reference_entries", key="chemsys", **kw)
        self.mlip = MontyStore("mlip_reference_energies", key="key", **kw)
        self.entries.connect()
        self.mlip.connect()

    def close(self) -> None:
        """Close both collections."""
        self.entries.close()
        self.mlip.close()

    def __enter__(self) -> ReferenceStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # entries ------------------------------------------------------------------
    def add(self, entries: Sequence[ComputedEntry], source: str) -> dict[str, int]:
        """Add entries (merged per chemsys, deduplicated by entry_id); returns counts added.

        All documents are built first and written in one update.
        """
        by_sys: dict[str, list[ComputedEntry]] = defaultdict(list)
        for e in entries:
            by_sys[entry_chemsys(e)].append(e)
        docs, added = [], {}
        for cs, new in by_sys.items():
            old = self.entries.query_one({"chemsys": cs}) or {"entries": []}
            seen = {d.get("entry_id") for d in old["entries"]}
            merged = list(old["entries"])
            n = 0
            for e in new:
                eid = e.entry_id or f"{source}-{cs}-{len(merged)}"
                if eid in seen:
                    continue
                d = e.as_dict()
                d["entry_id"] = eid
                d.setdefault("data", {})["source"] = source
                merged.append(d)
                seen.add(eid)
                n += 1
            docs.append({"chemsys": cs, "entries": merged, "n_entries": len(merged)})
            added[cs] = n
        if docs:
            self.entries.update(docs, key="chemsys")
        return added

    def chemsys_list(self) -> list[str]:
        """Chemical systems with cached entries."""
        return sorted(self.entries.distinct("chemsys"))

    def get(self, chemsys: str, include_subsystems: bool = True) -> list[ComputedEntry]:
        """Entries of a chemical system and (by default) all its subsystems."""
        keys = subsystems(chemsys) if include_subsystems else [normalize_chemsys(chemsys)]
        decoder = MontyDecoder()
        out: list[ComputedEntry] = []
        for doc in self.entries.query({"chemsys": {"$in": keys}}):
            out.extend(decoder.process_decoded(d) for d in doc["entries"])
        return out

    # MLIP reference energies -------------------------------------------------
    def get_mlip(self, mlip: str, chemsys: str) -> dict[str, dict] | None:
        """``{entry_id: {"energy_per_atom", "structure", "ok", "error"}}`` or None if absent."""
        doc = self.mlip.query_one({"key": f"{mlip}:{normalize_chemsys(chemsys)}"})
        return None if doc is None else doc["results"]

    def put_mlip(self, mlip: str, chemsys: str, results: dict[str, dict]) -> None:
        """Cache the MLIP-relaxed results of one chemsys's reference entries."""
        cs = normalize_chemsys(chemsys)
        self.mlip.update(
            [{"key": f"{mlip}:{cs}", "mlip": mlip, "chemsys": cs, "results": results}], key="key"
        )

    def get_raw(self, key: str) -> dict[str, dict] | None:
        """The cached results under an explicit key (prototype phases), or None."""
        doc = self.mlip.query_one({"key": key})
        return None if doc is None else doc["results"]

    def put_raw(self, key: str, mlip: str, chemsys: str, results: dict[str, dict]) -> None:
        """Cache results under an explicit key (one document)."""
        doc = {"key": key, "mlip": mlip, "chemsys": chemsys, "results": results}
        self.mlip.update([doc], key="key")


# ----------------------------------------------------------------------------- sources


def load_file(path: str | Path, store: ReferenceStore | None = None, source: str = "file") -> dict:
    """Import a JSON(.gz) list of entries into the store, MP2020-corrected."""
    entries = apply_mp2020(read_entries_file(path), where=f"{path}: ")
    return _add(entries, source, store)


def fetch_mp(chemsys: Sequence[str]) -> list[ComputedEntry]:
    """Competing phases (all subsystems) from the Materials Project through mp-api.

    Needs ``MP_API_KEY`` in the environment; the key is never logged or stored.
    """
    key = os.environ.get("MP_API_KEY")
    if not key:
        raise InputError(MP_KEY_HELP)
    from mp_api.client import MPRester

    out: list[ComputedEntry] = []
    with MPRester(api_key=key) as mpr:
        for cs in chemsys:
            els = normalize_chemsys(cs).split("-")
            got = mpr.get_entries_in_chemsys(
                els, additional_criteria={"thermo_types": ["GGA_GGA+U"]}
            )
            if not got:
                raise InputError(f"Materials Project returned no entries for {cs}")
            out.extend(got)
    return apply_mp2020(out, where="Materials Project ")


def alexandria_entries(docs: Iterable[dict], chemsys: Sequence[str]) -> list[ComputedEntry]:
    """Select and convert Alexandria entry dicts that lie in any of the chemical systems.

    Alexandria entries are PBE ComputedStructureEntries computed with MP-compatible settings;
    they are given ``run_type`` GGA/GGA+U from their ``parameters`` (or their U values) and MP2020
    corrections are re-applied.
    """
    wanted = [set(normalize_chemsys(c).split("-")) for c in chemsys]
    decoder = MontyDecoder()
    out = []
    for d in docs:
        els = {k for k, v in d.get("composition", {}).items() if v}
        if not els or not any(els <= w for w in wanted):
            continue
        e = decoder.process_decoded(d)
        params = dict(e.parameters or {})
        if params.get("run_type") not in ("GGA", "GGA+U"):
            hub = params.get("hubbards") or {}
            params["run_type"] = "GGA+U" if any(hub.values()) else "GGA"
        e.parameters = params
        out.append(e)
    return apply_mp2020(out, where="Alexandria ")


def _read_url_or_path(src: str, cache_dir: Path) -> Any:
    """JSON from a local path or URL (downloads are cached under ``cache_dir``)."""
    if "://" in src:
        local = cache_dir / src.rstrip("/").rsplit("/", 1)[-1]
        if not local.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = local.with_suffix(local.suffix + ".part")
            try:
                with urllib.request.urlopen(src, timeout=60) as r, open(tmp, "wb") as fh:
                    while chunk := r.read(1 << 20):
                        fh.write(chunk)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise InputError(f"cannot download {src}: {exc}") from None
            tmp.rename(local)
        src = str(local)
    p = Path(src)
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(p.suffix, open)
    try:
        with opener(p, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{src}: not readable JSON ({exc})") from None


def fetch_alexandria(chemsys: Sequence[str], urls: Sequence[str] | None = None) -> list:
    """Competing phases from Alexandria's public PBE dumps (downloaded once, cached)."""
    env = os.environ.get("SMOACS_ALEXANDRIA_URLS")
    urls = list(urls or (env.split(",") if env else ALEXANDRIA_URLS))
    entries: list[ComputedEntry] = []
    for u in urls:
        obj = _read_url_or_path(u.strip(), smoacs_home() / "downloads" / "alexandria")
        docs = obj.get("entries", obj) if isinstance(obj, dict) else obj
        entries.extend(alexandria_entries(docs, chemsys))
    if not entries:
        raise InputError(f"Alexandria has no entries for {', '.join(chemsys)}")
    return entries


def fetch(source: str, chemsys: Sequence[str], store: ReferenceStore | None = None) -> dict:
    """Fetch competing phases for the chemical systems and cache them; returns counts added."""
    chemsys = [normalize_chemsys(c) for c in chemsys]
    if source == "mp":
        entries = fetch_mp(chemsys)
    elif source == "alexandria":
        entries = fetch_alexandria(chemsys)
    else:
        raise InputError(f"unknown reference source {source!r} (mp or alexandria)")
    return _add(entries, source, store)


def ensure_sources(
    store: ReferenceStore, chemsys: Iterable[str], sources: Sequence[str]
) -> dict[str, int]:
    """Fetch every chemical system from every source once into ``store``; returns entries added
    per source. Which (source, chemsys) pairs were fetched is recorded beside the entries, so
    a system with no entries of its own is not asked for again. Offline or without
    ``MP_API_KEY`` this raises the sources' own :class:`InputError`."""
    from maggma.stores import MontyStore

    done = MontyStore(
        "reference_fetches", key="key", database_path=str(store.path), database_name="smoacs"
    )
    done.connect()
    added: dict[str, int] = {}
    try:
        systems = sorted({normalize_chemsys(c) for c in chemsys})
        for src in sources:
            todo = [cs for cs in systems if done.query_one({"key": f"{src}:{cs}"}) is None]
            if not todo:
                continue
            counts = fetch(src, todo, store)
            done.update(
                [{"key": f"{src}:{cs}", "source": src, "chemsys": cs} for cs in todo], key="key"
            )
            added[src] = sum(counts.values())
    finally:
        done.close()
    return added


def _add(entries: Sequence[ComputedEntry], source: str, store: ReferenceStore | None) -> dict:
    if store is not None:
        return store.add(entries, source=source)
    with ReferenceStore() as st:
        return st.add(entries, source=source)
