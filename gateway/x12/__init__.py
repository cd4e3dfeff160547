"""X12 format code: read, validate, write, acknowledge (no I/O beyond the streams given)."""
