"""Registries (member assignments, providers, encounter history) in the store.

The snapshot's row loops (``_rows``) are compiled with Cython like the X12 engine's hot modules
(``gateway/x12/_accelerate.py`` lists them): importing this package installs the finder that
never lets a stale compiled build shadow an edited source.
"""

from gateway.x12 import _accelerate

_accelerate.install()
