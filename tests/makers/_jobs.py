"""Trivial jobs for the worker tests (importable by worker processes: tests.makers._jobs)."""

from __future__ import annotations

from jobflow import job


@job
def add(a: int, b: int) -> int:
    """a + b."""
    return a + b
