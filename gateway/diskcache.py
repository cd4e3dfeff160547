"""One home for the start-up disk caches: a value that is costly to build from a data file
(a compiled X12 map, a parsed YAML file) is pickled under ``<folder>/<name>`` where the name
carries the hash of the inputs, so a new process pays an unpickle instead of the build, and a
changed input is a new name (never a stale hit). A file that does not unpickle (torn, from an
older Python) is rebuilt; writes go to a temporary file and ``os.replace`` it (a reader never
sees half a file); a folder that cannot be written only means building per process.

A cache file is a pickle, and unpickling runs code, so a file is read only when it and its
folder belong to this process's user and neither is writable by group or others (the folder
is created 0700); a cache someone else could have planted is ignored and the value built (a
planted file is never overwritten either: the folder is not ours to write)."""

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


def _private(path: Path) -> bool:
    """Whether ``path`` exists, belongs to this user and is not writable by group or others."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def cached(path: Path | None, build: Callable[[], T]) -> T:
    """The value pickled at ``path`` (None: no cache), else ``build()``, stored there."""
    if path is not None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            pass  # read-only home: build per process
        if not _private(path.parent):
            path = None  # a folder others can write (or not ours): no cache, build per process
    if path is not None:
        data = None
        if _private(path):
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
            import tempfile  # (only to write the cache: 2-3 ms of imports otherwise)

            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as fh:
                fh.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(fh.name, path)
        except OSError:
            pass  # read-only home: build per process
    return value
