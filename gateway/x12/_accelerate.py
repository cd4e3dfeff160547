"""The X12 engine's compiled hot path: which modules are compiled, and when to use them.

``setup.py`` compiles :data:`MODULES` with Cython when it can (``make install-dev`` does it)
and records the SHA-256 of each source it compiled in ``_compiled.json`` beside this file.
:func:`install` (called by ``gateway/x12/__init__.py``) puts a finder first on ``sys.meta_path``
that imports a listed module from its ``.py`` source instead of the compiled extension when

- the setting ``x12_pure`` is on (``ECM_GATEWAY_X12_PURE=1``; the tests run both paths and
  compare findings), or
- the source changed since it was compiled (a stale extension never shadows an edit), or
- nothing was compiled (no C compiler): then the ordinary import finds only the ``.py``.

The compiled modules are the same source, so findings are identical either way; only speed
differs. ``setup.py`` reads :data:`MODULES` from this file (run there outside the package:
nothing at module level may import from ``gateway``).
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

MODULES = (
    "gateway.x12.reader",
    "gateway.x12.envelope",
    "gateway.x12.claims837",
    "gateway.x12.snip",
    "gateway.x12.engine.walker",
    "gateway.x12.engine.validator",
    "gateway.x12.jobs",  # validate --jobs: its skimming loop reads every segment
    # loaded by every validation (compiled: no source to compile when bytecode is not cached)
    "gateway.x12.engine.nodes",
    "gateway.x12.engine.elements",
    "gateway.x12.engine.maps",
    # the ECM rules' per-claim checks (rules.pxd: the engine's extension types) and POF
    # evidence (issue 14; gateway/ecm/__init__.py installs the finder before either is imported)
    "gateway.ecm.rules",
    "gateway.ecm.pof",
    # the registry snapshot's row loops (gateway/registry/__init__.py installs the finder)
    "gateway.registry._rows",
)
# compiled modules that use another one's compiled types (a ``cimport`` in their ``.pxd``): each
# runs compiled only while the modules it cimports from do (a pure-Python dependency would not
# give it the extension type it was built against)
CIMPORTS = {
    "gateway.x12.envelope": ("gateway.x12.reader",),
    "gateway.x12.engine.validator": ("gateway.x12.reader", "gateway.x12.snip"),
    "gateway.x12.claims837": ("gateway.x12.reader",),  # claims837.pxd: the handlers' Segment
    "gateway.x12.jobs": ("gateway.x12.reader",),  # jobs.pxd: range_segments' Segment
}
PURE_ENV = "ECM_GATEWAY_X12_PURE"  # the x12_pure setting (gateway/settings.py)
MANIFEST = Path(__file__).with_name("_compiled.json")
_EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)
_TOP = Path(__file__).resolve().parents[2]  # the folder that holds the gateway package


def source_digest(path: Path) -> str:
    """SHA-256 of a module's source: the ``.py`` and, when there is one, the ``.pxd`` beside it
    (Cython's type declarations for the compiled build; packaged with the sources)."""
    import hashlib

    digest = hashlib.sha256(path.read_bytes())
    declarations = path.with_suffix(".pxd")
    if declarations.exists():
        digest.update(declarations.read_bytes())
    return digest.hexdigest()


_manifest: dict[str, str] | None = None


def _compiled_digests() -> dict[str, str]:
    global _manifest
    if _manifest is None:
        import json

        try:
            _manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _manifest = {}
    return _manifest


class _PureWhenStale:
    """A ``sys.meta_path`` finder (importlib.abc is not imported: it costs start-up time)."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not (spec.origin or "").endswith(_EXTENSIONS):
            return None  # only the source exists: the ordinary import takes it
        source = Path(spec.origin).with_name(fullname.rpartition(".")[2] + ".py")
        if not source.exists():
            return None
        if _pure() or not _current(fullname, source):
            from importlib.util import spec_from_file_location

            return spec_from_file_location(fullname, source)
        return None  # the compiled extension, built from this very source


def _current(fullname: str, source: Path) -> bool:
    """Whether the extension of ``fullname`` was built from ``source`` as it is now, and so
    were those of the modules it cimports from."""
    if _compiled_digests().get(fullname) != source_digest(source):
        return False
    for other in CIMPORTS.get(fullname, ()):
        path = _TOP.joinpath(*other.split(".")).with_suffix(".py")
        if not any(path.with_suffix(suffix).exists() for suffix in _EXTENSIONS) or \
                not path.exists() or not _current(other, path):
            return False
    return True


def _pure() -> bool:
    from gateway.settings import early

    return bool(early("x12_pure"))


def install() -> None:
    if not any(isinstance(f, _PureWhenStale) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureWhenStale())


def compiled(module_name: str) -> bool:
    """Whether ``module_name`` (one of :data:`MODULES`) runs compiled in this process."""
    module = sys.modules.get(module_name)
    if module is None:
        from importlib import import_module

        module = import_module(module_name)
    return (getattr(module, "__file__", "") or "").endswith(_EXTENSIONS)
