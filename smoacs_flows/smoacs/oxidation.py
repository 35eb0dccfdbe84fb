"""Oxidation-number policies, exact charge-neutrality checks and neutral site patterns.

Policies: ``ionic`` (the SMOACS papers' table, frozen in data/elements.json),
``ionic+metallic`` (additionally oxidation number 0 for metals and metalloids, so intermetallic
and Heusler compounds such as NiMnSb or Co2MnSi are reachable), or a path to a user table
(YAML/JSON mapping element symbol -> list of oxidation numbers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from smoacs_flows.errors import SpecError
from smoacs_flows.smoacs.elements import N_ELEMENTS, element_table, symbols, z_of

BUILTIN_POLICIES = ("ionic", "ionic+metallic")


@dataclass(frozen=True)
class OxidationTable:
    """Allowed oxidation numbers per element (index Z - 1)."""

    name: str
    states: tuple[tuple[int, ...], ...]
    _masks: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def allowed(self, z: int) -> tuple[int, ...]:
        """Oxidation numbers allowed for element ``z``."""
        return self.states[z - 1]

    def values(self) -> list[int]:
        """Every oxidation number some element allows, sorted."""
        return sorted({o for s in self.states for o in s})

    def mask(self, ox: int) -> np.ndarray:
        """Boolean (98,) mask of elements whose allowed states contain ``ox``."""
        if ox not in self._masks:
            self._masks[ox] = np.array([ox in s for s in self.states], dtype=bool)
        return self._masks[ox]


@lru_cache(maxsize=8)
def _builtin(name: str) -> OxidationTable:
    states = []
    for e in element_table():
        ox = set(e["ionic"])
        if name == "ionic+metallic" and e["metallic_zero"]:
            ox.add(0)
        states.append(tuple(sorted(ox)))
    return OxidationTable(name, tuple(states))


def load_policy(policy: str | Path | OxidationTable) -> OxidationTable:
    """Resolve a policy name or a user table file into an :class:`OxidationTable`."""
    if isinstance(policy, OxidationTable):
        return policy
    if str(policy) in BUILTIN_POLICIES:
        return _builtin(str(policy))
    path = Path(policy)
    if not path.is_file():
        raise SpecError(
            f"policy: {policy!r} is neither one of {list(BUILTIN_POLICIES)} nor a readable file"
        )
    from smoacs_flows.io import check_input_file, safe_yaml_load

    check_input_file(path, "policy file", error=SpecError)
    try:
        text = path.read_text()
        data = (
            json.loads(text)
            if path.suffix == ".json"
            else safe_yaml_load(text, str(path), SpecError)
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"policy file {path}: cannot be parsed ({exc})") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"policy file {path}: expected a mapping of element -> oxidation numbers")
    states: list[tuple[int, ...]] = [() for _ in range(N_ELEMENTS)]
    for sym, ox in data.items():
        z = z_of(sym, where=f"policy file {path}")
        if not isinstance(ox, Sequence) or not all(isinstance(o, int) for o in ox):
            raise SpecError(f"policy file {path}: {sym}: expected a list of integers")
        states[z - 1] = tuple(sorted(set(ox)))
    return OxidationTable(str(path), tuple(states))


def _counts(composition: Any) -> dict[int, int]:
    items = composition.items() if hasattr(composition, "items") else composition
    counts: dict[int, int] = {}
    for el, n in items:
        z = el if isinstance(el, int) else z_of(str(getattr(el, "symbol", el)), "composition")
        if abs(n - round(n)) > 1e-8 or n < 0:
            raise SpecError(f"composition: {symbols()[z - 1]} has non-integer count {n}")
        if round(n):
            counts[z] = counts.get(z, 0) + int(round(n))
    return counts


def is_charge_neutral(composition: Any, policy: str | Path | OxidationTable = "ionic") -> bool:
    """Exact test: can the sites of ``composition`` take allowed numbers summing to zero?

    Dynamic programming over reachable charge sums (a bitset per element count), so it is
    polynomial in the number of sites: a 135-site cell takes milliseconds, unlike 2^N
    enumeration. ``composition`` is a pymatgen Composition or a ``{symbol: count}`` mapping.
    """
    table = load_policy(policy)
    counts = _counts(composition)
    if not counts:
        return False
    reach = {0}
    for z, n in counts.items():
        states = table.allowed(z)
        if not states:
            return False
        for _ in range(n):
            reach = {r + o for r in reach for o in states}
    return 0 in reach


def enumerate_patterns(
    site_masks: Sequence[np.ndarray],
    table: OxidationTable,
    max_patterns: int = 100,
) -> list[tuple[int, ...]]:
    """Charge-neutral oxidation patterns for sites whose candidate elements are ``site_masks``.

    A pattern assigns one oxidation number per site such that the numbers sum to zero and every
    site keeps at least one allowed candidate element. Depth-first in a deterministic order
    (numbers allowed by the most candidates first), pruned by the reachable-sum bounds, and
    capped at ``max_patterns``.
    """
    options: list[list[int]] = []
    for m in site_masks:
        vals = [(int((table.mask(o) & m).sum()), o) for o in table.values()]
        vals = [(cnt, o) for cnt, o in vals if cnt > 0]
        vals.sort(key=lambda t: (-t[0], abs(t[1]), -t[1]))
        options.append([o for _, o in vals])
    if any(not o for o in options):
        return []
    n = len(options)
    lo_suffix = [0] * (n + 1)
    hi_suffix = [0] * (n + 1)
    for i in range(n - 1, -1, -1):
        lo_suffix[i] = lo_suffix[i + 1] + min(options[i])
        hi_suffix[i] = hi_suffix[i + 1] + max(options[i])
    out: list[tuple[int, ...]] = []
    current: list[int] = []

    def dfs(i: int, total: int) -> None:
        if len(out) >= max_patterns:
            return
        if i == n:
            if total == 0:
                out.append(tuple(current))
            return
        for o in options[i]:
            t = total + o
            if t + lo_suffix[i + 1] <= 0 <= t + hi_suffix[i + 1]:
                current.append(o)
                dfs(i + 1, t)
                current.pop()
                if len(out) >= max_patterns:
                    return

    dfs(0, 0)
    return out


def _site_options(site_masks: Sequence[np.ndarray], table: OxidationTable) -> list[list[int]]:
    """Per site, the oxidation numbers that leave at least one candidate element."""
    return [[o for o in table.values() if (table.mask(o) & m).any()] for m in site_masks]


def _completions(options: list[list[int]]) -> list[dict[int, int]]:
    """``ways[i][t]``: how many assignments of sites i.. sum to ``t`` (exact integers)."""
    ways: list[dict[int, int]] = [{} for _ in range(len(options) + 1)]
    ways[-1] = {0: 1}
    for i in range(len(options) - 1, -1, -1):
        acc: dict[int, int] = {}
        for t, w in ways[i + 1].items():
            for o in options[i]:
                acc[t + o] = acc.get(t + o, 0) + w
        ways[i] = acc
    return ways


def count_patterns(site_masks: Sequence[np.ndarray], table: OxidationTable) -> int:
    """The number of charge-neutral oxidation patterns of these sites (exact)."""
    options = _site_options(site_masks, table)
    if any(not o for o in options):
        return 0
    return _completions(options)[0].get(0, 0)


def sample_patterns(
    site_masks: Sequence[np.ndarray],
    table: OxidationTable,
    max_patterns: int = 100,
    seed: int = 0,
) -> list[tuple[int, ...]]:
    """Up to ``max_patterns`` distinct charge-neutral patterns, uniform over all of them.

    Seed 000 (SI B.4) enumerates the neutral combinations of allowed numbers and keeps up to
    100; it states no order. The first 100 of a depth-first enumeration are far from uniform
    (for 24 sites they keep 11 sites fixed), so when there are more than ``max_patterns`` this
    draws a seeded sample, uniform over the neutral patterns (exact completion counts guide
    each site's draw), without replacement. When there are at most ``max_patterns``, every one
    is returned. Sorted, so the result depends on the seed only.
    """
    options = _site_options(site_masks, table)
    if any(not o for o in options):
        return []
    ways = _completions(options)
    total = ways[0].get(0, 0)
    if total <= max_patterns:
        return sorted(enumerate_patterns(site_masks, table, max(total, 1)) if total else [])
    rng = np.random.default_rng(seed)
    if total <= 20 * max_patterns:  # small: enumerate all, then choose without replacement
        every = enumerate_patterns(site_masks, table, total)
        pick = rng.choice(len(every), size=max_patterns, replace=False)
        return sorted(every[int(i)] for i in pick)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < max_patterns:
        s, pat = 0, []
        for i, opts in enumerate(options):
            # ways to finish with sum 0 after choosing o here: ways[i + 1][-(s + o)]
            w = np.array([float(ways[i + 1].get(-(s + o), 0)) for o in opts])
            o = opts[int(rng.choice(len(opts), p=w / w.sum()))]
            pat.append(o)
            s += o
        chosen.add(tuple(pat))
    return sorted(chosen)
