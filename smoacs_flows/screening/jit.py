"""``numba.njit`` with numba's on-disk cache where one can be written, and without it where
not: numba raises at import time when it finds no writable cache directory (a read-only
install and a read-only home, as on some clusters); then the kernels compile in memory on
first use in each process instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import njit


def cached_njit(func: Callable[..., Any]) -> Callable[..., Any]:
    """``njit(cache=True)(func)``, or ``njit(func)`` when numba has nowhere to cache it."""
    try:
        return njit(cache=True)(func)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return njit(func)
