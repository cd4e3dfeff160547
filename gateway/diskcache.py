"""One home for the start-up disk caches: a value that is costly to build from a data file
(a compiled X12 map, a parsed YAML file) is pickled under ``<folder>/<name>`` where the name
carries the hash of the inputs, so a new process pays an unpickle instead of the build, and a
changed input is a new name (never a stale hit). A file that does not unpickle (torn, from an
older Python) is rebuilt; writes go to a temporary file and ``os.replace`` it (a reader never
sees half a file); a folder that cannot be written only means building per process."""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def folder(setting: str, default: str) -> Path | None:
    """The cache folder the setting ``setting`` names (``off`` disables the cache), by default
    ``<var>/cache/<default>``."""
    from gateway.settings import early  # (not current(): no pydantic on the fast path)

    configured = early(setting)
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    return Path(early("var")) / "cache" / default


def cached(path: Path | None, build: Callable[[], T]) -> T:
    """The value pickled at ``path`` (None: no cache), else ``build()``, stored there."""
    if path is not None:
        try:
            data = path.read_bytes()
        except OSError:
            data = None
        if data is not None:
            collecting = gc.isenabled()
            gc.disable()  # thousands of new objects, no garbage: ≈ 2 ms of collections saved
            try:
                return pickle.loads(data)
            except Exception:  # noqa: BLE001 - a stale or torn cache file is rebuilt
                pass
            finally:
                if collecting:
                    gc.enable()
    value = build()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            import tempfile  # (only to write the cache: 2-3 ms of imports otherwise)

            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as fh:
                fh.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(fh.name, path)
        except OSError:
            pass  # read-only home: build per process
    return value
