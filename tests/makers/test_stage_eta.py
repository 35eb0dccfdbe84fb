"""``run``'s progress line says how long the DFT stage has left, from the rate its fireworks
completed at so far (issue 23: "run shows an ETA while DFT runs")."""

from __future__ import annotations

from smoacs_flows.makers.run import StageEta


def _counts(done: int, total: int = 10, running: int = 2) -> dict:
    return {"dft": {"COMPLETED": done, "RUNNING": running, "WAITING": total - done - running}}


def test_eta_follows_the_completion_rate() -> None:
    eta = StageEta("dft")
    assert eta.update(_counts(0), 0.0) == ""  # nothing completed: no rate yet
    assert eta.update(_counts(1), 10.0) == ""  # the first completion (the fan-out) is not a rate
    # two more completed in 120 s after the first: 60 s each, 7 left → 7 min
    assert eta.update(_counts(3), 130.0) == " · dft ~7 min left"
    assert eta.update(_counts(4), 190.0) == " · dft ~6 min left"  # still 60 s each, 6 left
    # time passes without a completion: the estimate counts down
    assert eta.update(_counts(4), 250.0) == " · dft ~5 min left"
    assert eta.update({"dft": {"COMPLETED": 10}}, 600.0) == ""  # done


def test_no_stage_no_eta() -> None:
    eta = StageEta("dft")
    for t in range(5):
        assert eta.update({"propose": {"COMPLETED": t}}, float(t)) == ""
