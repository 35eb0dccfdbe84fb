"""A campaign's templates: built from every ``templates`` entry (files, synthetic perovskites,
the Materials Project), and prepared (oxidation patterns, masks) on first use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from smoacs_flows.campaign import Campaign
from smoacs_flows.errors import SpecError
from smoacs_flows.smoacs.oxidation import OxidationTable
from smoacs_flows.smoacs.state import PreparedTemplate, prepare_template
from smoacs_flows.smoacs.templates import (
    Template,
    load_templates,
    make_supercell,
    synthetic_perovskite,
)


def build_templates(
    campaign: Campaign,
    rng: np.random.Generator,
    remote: bool = True,
    provenance: dict[str, Any] | None = None,
) -> list[Template]:
    """Every template of the campaign, with supercells and explicit patterns applied.

    ``remote`` False: a Materials Project source that is not cached yet is skipped instead of
    downloaded (checks before a run, e.g. building the Flow offline). ``provenance`` collects
    each remote source's provenance under its ``templates[i]`` label.
    """
    out: list[Template] = []
    for ti, spec in enumerate(campaign.templates):
        where = f"templates[{ti}]"
        if spec.source == "perovskite":
            lr = spec.length_range or (2.0, 10.0)
            base = [synthetic_perovskite(rng, lr, index=len(out) + i) for i in range(spec.count)]
        elif spec.source == "mp":
            from smoacs_flows.smoacs.mp_templates import fetch_mp_templates

            got = fetch_mp_templates(
                spec.max_sites,
                spec.n,
                spec.criteria,
                campaign.seed,
                campaign.resolve(spec.cache) if spec.cache else None,
                where=where,
                allow_download=remote,
            )
            if got is None:
                continue
            base, prov = got
            if provenance is not None:
                provenance[where] = prov
            if spec.length_range:
                for t in base:
                    t.length_range = spec.length_range
        else:
            base = load_templates(campaign.resolve(spec.source))
            if spec.length_range:
                for t in base:
                    t.length_range = spec.length_range
        for t in base:
            if spec.patterns is not None:
                pats = []
                for p in spec.patterns:
                    if t.roles is not None and len(p) == 3 and t.n_sites != 3:
                        role_ox = dict(zip(("A", "B", "X"), p))
                        p = [role_ox[r] for r in t.roles]
                    if len(p) != t.n_sites:
                        raise SpecError(
                            f"{where}.patterns: {p} has {len(p)} numbers but template {t.id} "
                            f"has {t.n_sites} sites"
                        )
                    pats.append(tuple(p))
                t.patterns = pats
            t.formula_units = spec.formula_units
            if spec.family is not None:
                t.meta["family"] = spec.family
            out.append(make_supercell(t, spec.supercell))
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SpecError(f"templates: duplicate template ids {dup}")
    return out


class PreparedTemplates(Sequence[PreparedTemplate]):
    """The campaign's templates with their neutral patterns and masks, resolved on first use."""

    def __init__(
        self,
        templates: list[Template],
        table: OxidationTable,
        allowed: np.ndarray,
        max_patterns: int,
        seed: int = 0,
    ) -> None:
        self._templates = templates
        self._args = (table, allowed, max_patterns, seed)
        self._done: dict[int, PreparedTemplate] = {}

    def __len__(self) -> int:
        return len(self._templates)

    def __getitem__(self, i: int) -> PreparedTemplate:  # type: ignore[override]
        i = int(i)
        if i not in self._done:
            self._done[i] = prepare_template(self._templates[i], *self._args)
        return self._done[i]

    @property
    def resolved(self) -> list[int]:
        """Indices of the templates prepared so far."""
        return sorted(self._done)

    def resolve_all(self) -> None:
        """Prepare every template now (errors name the template and site)."""
        for i in range(len(self)):
            self[i]
