"""ECM business rules: member assignment, providers, programs, code sets, POF evidence, outreach.

The rule engine's hot modules (``rules``, ``pof``) are compiled with Cython like the X12
engine's (``gateway/x12/_accelerate.py`` lists them): importing this package installs the finder
that never lets a stale compiled build shadow an edited source.
"""

from gateway.x12 import _accelerate

_accelerate.install()
