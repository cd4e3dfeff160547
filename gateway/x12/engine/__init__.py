"""The gateway's own X12 implementation-guide engine (see README "X12 engine").

- :mod:`.maps` compiles pyx12-format XML maps (``map.xsd``; pyx12's bundled maps and ours in
  ``profiles/x12/``) into node tables, cached per process and on disk;
- :mod:`.walker` is the loop/segment state machine (cached plans replayed on counters);
- :mod:`.elements` checks elements: one compiled pattern per segment node, detailed checks
  only when it fails;
- :mod:`.validator` is :class:`NativeGuideValidator`, a drop-in for the pyx12 adapter
  (``feed(segment)`` … ``finish()`` → findings with the same rule ids and locations).

Adding a map: put the XML file (same format as pyx12's maps, validated against ``map.xsd``)
in ``profiles/x12/`` and register its guide in ``profiles/x12/envelope.yaml`` under
``guides`` (GS08 → ``transaction``, ``kind``, ``map``). Data elements missing from pyx12's
dictionary go in ``profiles/x12/dataele.xml``, extra code sets in ``profiles/x12/codes.xml``
(same formats as pyx12's). ``load("<file>.xml")`` compiles it; a map that does not validate
raises :class:`MapError` naming the first schema error.
"""

from gateway.x12.engine.maps import MapError, load
from gateway.x12.engine.validator import NativeGuideValidator

__all__ = ["MapError", "NativeGuideValidator", "load"]
