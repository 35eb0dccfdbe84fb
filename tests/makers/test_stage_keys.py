"""The ``stages`` section: unknown stages and keys are errors, numbers are not coerced, bounds
hold, and the defaults the module documents are the models' own."""

from __future__ import annotations

import re

import pytest
import yaml

from smoacs_flows.campaign import campaign_from_dict
from smoacs_flows.errors import SpecError
from smoacs_flows.makers import settings as settings_module
from smoacs_flows.makers.settings import stage_settings

BASE = {
    "name": "t",
    "templates": [{"source": "perovskite"}],
    "losses": [{"term": "element_reduction"}],
}


def _stages(stages: dict) -> None:
    stage_settings(campaign_from_dict({**BASE, "stages": stages}))


@pytest.mark.parametrize(
    ("stages", "needle"),
    [
        ({"screenning": {}}, "stages.screenning: unknown stage.*did you mean 'screening'"),
        ({"dtf": {"engine": "gpaw"}}, "stages.dtf: unknown stage.*did you mean 'dft'"),
        ({"screening": {"fmaxx": 0.1}}, "stages.screening.fmaxx"),
        ({"screening": {"steps": 10**12}}, "stages.screening.steps"),
        ({"screening": {"steps": "2"}}, "stages.screening.steps: expected an integer"),
        ({"screening": {"fmax": True}}, "stages.screening.fmax: expected a number"),
        ({"screening": {"e_hull_max": -1}}, "stages.screening.e_hull_max"),
        ({"dft": {"category": "../../x"}}, "stages.dft.category"),
        ({"orchestration": {"categories": {"gpu": "a/b"}}}, "stages.orchestration.categories"),
        ({"dft": {"gpaw": {"xc": "LOL"}}}, "stages.dft.gpaw.xc: .*not a functional GPAW knows"),
        ({"dft": {"gpaw": {"maxiter": "abc"}}}, "stages.dft.gpaw.maxiter"),
        ({"dft": {"gpaw": {"ecut": 1e9}}}, "stages.dft.gpaw.ecut"),
    ],
)
def test_bad_stage_settings_are_named(stages: dict, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        _stages(stages)


def test_good_stage_settings_pass() -> None:
    _stages({"screening": {"steps": 10, "fmax": 1}, "dft": {"gpaw": {"xc": "PBEsol"}}})


def test_documented_defaults_are_the_real_ones() -> None:
    doc = settings_module.__doc__ or ""
    block = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert block is not None
    documented = yaml.safe_load(block.group(1))["stages"]
    real = stage_settings(campaign_from_dict(BASE))
    for section, values in documented.items():
        model = getattr(real, section)
        for key, value in values.items():
            if isinstance(value, dict) and key == "gpaw":
                from smoacs_flows.dft.gpaw_engine import GPAWSettings

                for k, v in value.items():
                    assert GPAWSettings.model_fields[k].default == v, (section, key, k)
                continue
            if isinstance(value, dict):  # nested models (categories, sweep)
                sub = getattr(model, key)
                for k, v in value.items():
                    if not isinstance(v, dict):
                        assert getattr(sub, k) == v, (section, key, k)
                continue
            assert getattr(model, key) == value, (section, key)
