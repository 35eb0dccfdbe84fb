"""smoacs-flows: SMOACS crystal design with an MLIP/DFT validation pipeline."""

from smoacs_flows.montydb_setup import install as _install_montydb_setup

__version__ = "0.1.0"

# before maggma imports montydb's set_storage: concurrent connects must not tear its files
_install_montydb_setup()
