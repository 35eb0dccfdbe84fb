"""Stores: the jobflow JobStore factory (embedded montydb by default, MongoDB + GridFS on
clusters) and, later, the results collection and queries."""

from smoacs_flows.stores.jobstore import embedded_job_store, load_job_store

__all__ = ["embedded_job_store", "load_job_store"]
