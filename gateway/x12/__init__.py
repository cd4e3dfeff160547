"""X12 format code: read, validate, write, acknowledge (no I/O beyond the streams given)."""

from gateway.x12 import _accelerate

_accelerate.install()  # compiled hot path when built and current (see _accelerate.py)
