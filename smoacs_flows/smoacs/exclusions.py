"""Element-exclusion masks: presets (data/exclusions.yaml) and explicit element lists."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

import numpy as np
import yaml

from smoacs_flows.errors import SpecError
from smoacs_flows.smoacs.elements import N_ELEMENTS, z_of


@lru_cache(maxsize=1)
def presets() -> dict[str, dict]:
    """The preset definitions, with ``supply_risk`` resolved to its element list."""
    text = resources.files("smoacs_flows.data").joinpath("exclusions.yaml").read_text()
    data = yaml.safe_load(text)
    rare = set(data["rare_earth"]["elements"])
    for preset in data.values():
        lists = preset.get("intersection_of")
        if lists:
            common = set.intersection(*(set(v["elements"]) for v in lists.values()))
            preset["elements"] = sorted(common - rare, key=lambda s: z_of(s))
    return data


def preset_elements(name: str) -> list[str]:
    """Element symbols of preset ``name``."""
    return list(presets()[name]["elements"])


def exclusion_mask(items: Iterable[str], where: str = "exclude") -> np.ndarray:
    """Boolean (98,) mask, True = excluded; ``items`` mixes preset names and element symbols."""
    mask = np.zeros(N_ELEMENTS, dtype=bool)
    for item in items:
        if item in presets():
            for sym in preset_elements(item):
                mask[z_of(sym) - 1] = True
            continue
        try:
            mask[z_of(item) - 1] = True
        except SpecError:
            raise SpecError(
                f"{where}: {item!r} is neither a preset ({', '.join(presets())}) nor an element"
            ) from None
    return mask
