"""Screening: prefilter, MLIP relaxation, reference phases and S.U.N. (stable, unique, novel)."""
