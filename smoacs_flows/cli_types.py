"""argparse ``type=`` callables for numeric options: a value that can only be a mistake (nan,
a negative count, a zero batch) is one ``error:`` line naming the option, before anything
runs or is written."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(
    *,
    integer: bool = False,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Callable[[str], float | int]:
    """A parser of one finite number (an integer with ``integer``) within the given bounds."""
    what = "an integer" if integer else "a finite number"
    bounds = [
        f"{op} {v:g}" for op, v in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if v is not None
    ]
    need = what + (f" {' and '.join(bounds)}" if bounds else "")

    def parse(text: str) -> float | int:
        try:
            value: float | int = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {need}") from None
        ok = math.isfinite(value)
        ok = ok and (ge is None or value >= ge) and (gt is None or value > gt)
        ok = ok and (le is None or value <= le) and (lt is None or value < lt)
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {need}")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse's "invalid X value"
    return parse


#: the common cases
positive = number(gt=0)
non_negative = number(ge=0)
finite = number()
count = number(integer=True, ge=1)
count0 = number(integer=True, ge=0)
fraction = number(ge=0, lt=1)
