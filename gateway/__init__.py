"""ECM Gateway: convert, validate, route and acknowledge Medi-Cal ECM data exchanges."""

__version__ = "0.1.0"
