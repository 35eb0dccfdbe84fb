"""Regenerate docs/report.png: a campaign report of synthetic candidates, shot by headless
chromium at 1280 px width.

    .venv/bin/python scripts/report_screenshot.py [--n 400] [--html report.html]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the synthetic data lives in the tests

from smoacs_flows.stores.report import write_report  # noqa: E402
from tests.stores.test_report import SUPPLY_RISK, synthetic_campaign  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="candidates per campaign")
    ap.add_argument("--html", type=Path, help="also keep the HTML here")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    ap.add_argument("--height", type=int, default=3200)
    args = ap.parse_args()
    docs, dos = synthetic_campaign(
        args.n, seed=7, excluded=SUPPLY_RISK, campaign="hm-demo", n_half_metals=4, evil=False
    )
    base, _ = synthetic_campaign(args.n, seed=8, campaign="hm-demo-nomask", evil=False)
    with tempfile.TemporaryDirectory() as tmp:
        html = args.html or Path(tmp) / "report.html"
        write_report(
            docs,
            html,
            "Half-metal campaign hm-demo (synthetic data)",
            dos=dos,
            excluded=SUPPLY_RISK,
            compare_docs=base,
            compare_label="same campaign, no exclusion mask",
        )
        subprocess.run(
            [
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={tmp}/profile",
                "--virtual-time-budget=5000",
                f"--screenshot={args.out.resolve()}",
                f"--window-size=1280,{args.height}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    print(args.out)


if __name__ == "__main__":
    main()
