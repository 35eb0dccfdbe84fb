"""jobflow Makers for SMOACS campaigns, FireWorks submission and the embedded run.

See docs/orchestration.md. The Makers wrap the stage packages (smoacs, screening, dft) as jobs;
routing to GPU/CPU FireWorks queues uses the ``_category`` key of each job's manager config.
"""

from smoacs_flows.makers.core import (
    HalfMetalCampaignMaker,
    HalfMetalDftMaker,
    MlipRelaxMaker,
    PrefilterMaker,
    SmoacsProposalMaker,
    SunFilterMaker,
)

__all__ = [
    "HalfMetalCampaignMaker",
    "HalfMetalDftMaker",
    "MlipRelaxMaker",
    "PrefilterMaker",
    "SmoacsProposalMaker",
    "SunFilterMaker",
]
