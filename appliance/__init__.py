"""The edge appliance: supervisor, workers, Compute API read side, admin, command line."""

__version__ = "0.1.0"
