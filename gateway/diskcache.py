"""One home for the start-up disk caches: a value that is costly to build from a data file
(a compiled X12 map, a parsed YAML file) is pickled under ``<folder>/<name>`` where the name
carries the hash of the inputs, so a new process pays an unpickle instead of the build, and a
changed input is a new name (never a stale hit). A file that does not unpickle (torn, from an
older Python) is rebuilt; writes go to a temporary file and ``os.replace`` it (a reader never
sees half a file); a folder that cannot be written only means building per process.

A cache file is a pickle, and unpickling runs code, so a file is read only when it and its
folder belong to this process's user and neither is writable by group or others (the folder
is created 0700); a cache someone else could have planted is ignored and the value built (a
planted file is never overwritten either: the folder is not ours to write).

Also here: :func:`file_key`, a cache name from its input files' ``stat`` (hashing them only
when in doubt), and :class:`Patterns`, compiled regular expressions kept across processes."""

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


def read(path: Path | None) -> bytes | None:
    """The bytes of the cache file ``path`` when it may be trusted (it and its folder belong
    to this user, neither group/world-writable), else None."""
    if path is None or not _private(path.parent) or not _private(path):
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


def _writable(path: Path | None) -> Path | None:
    """``path`` when its folder exists (made 0700 if not) and is ours alone, else None."""
    if path is None:
        return None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None  # read-only home: build per process
    return path if _private(path.parent) else None  # a folder others can write: not ours


def write(path: Path | None, data: bytes) -> None:
    """Store ``data`` at ``path`` (a temporary file replaced at once: a reader never sees half
    a file); nothing when the folder cannot be written or is not ours alone."""
    path = _writable(path)
    if path is None:
        return
    try:
        import tempfile  # (only to write the cache: 2-3 ms of imports otherwise)

        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as fh:
            fh.write(data)
        os.replace(fh.name, path)
    except OSError:
        pass  # read-only home: build per process


def cached(path: Path | None, build: Callable[[], T]) -> T:
    """The value pickled at ``path`` (None: no cache), else ``build()``, stored there."""
    path = _writable(path)
    data = read(path)
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
        write(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return value


# -- naming a cache file by its inputs ------------------------------------------------------------
RECENT_SECONDS = 2.0  # an input changed this recently is hashed (see file_key)


def file_key(salt: bytes, paths) -> str:
    """A name for what ``paths`` hold (with ``salt``: what reads them, its version), without
    reading them when it can: each file's identity and last change as ``stat`` gives them
    (device, inode, size, modification and status-change times in ns). A file cannot change
    without its status-change time (ctime, which no user can set back) moving, so a changed
    input gets a new name; a file that changed within the last RECENT_SECONDS (a change in
    the same clock tick as the last could leave the times as they were) or whose times cannot
    be read is hashed by its bytes instead. A missing file counts as missing. The cost of a
    name that differs when nothing changed (a copied checkout, a new inode) is one rebuild;
    a stale name is never given."""
    import hashlib
    import time

    h = hashlib.sha256(salt)
    now = time.time_ns()
    for path in paths:
        h.update(b"\0")  # (not the path: the same bytes elsewhere are the same input)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            h.update(b"-")
            continue
        except OSError:
            st = None
        if st is None or not st.st_ino or not st.st_ctime_ns or \
                now - max(st.st_mtime_ns, st.st_ctime_ns) < RECENT_SECONDS * 1e9:
            try:
                h.update(b"#" + hashlib.sha256(Path(path).read_bytes()).digest())
            except FileNotFoundError:
                h.update(b"-")
            continue
        h.update(f"@{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:"
                 f"{st.st_ctime_ns}".encode())
    return h.hexdigest()[:24]


# -- compiled regular expressions -------------------------------------------------------------
# patterns one file keeps (beyond: only this process's own): a map's fast patterns for one
# delimiter set are ≈ 25 (≈ 56 KB), so this is ≈ 20 delimiter sets, ≈ 1 MB read at a start
PATTERNS_CAP = 500


def _sre_guard():
    """What the compiled form of a pattern depends on, or None when this Python's ``re``
    internals are not the ones :class:`Patterns` was written against (it then only calls
    ``re.compile``): the Python version, the regular expression engine's magic number and code
    unit size."""
    import sys

    if sys.version_info[:2] != (3, 11):  # the only one it is tested on
        return None
    try:
        import _sre
        from re import _compiler, _parser  # noqa: F401

        return (tuple(sys.version_info[:2]), _sre.MAGIC, _sre.CODESIZE, _sre.MAXREPEAT,
                _sre.MAXGROUPS)
    except (ImportError, AttributeError):
        return None


class Patterns:
    """Regular expressions compiled once per machine rather than once per process: the
    engine's code of each pattern (what ``re`` compiles a pattern's text to) kept in the cache
    file ``path`` (marshalled, with the Python version and ``_sre.MAGIC`` it was made by),
    given back to ``_sre.compile`` — what ``re.compile`` ends with — so a pattern read from the
    file is the pattern ``re.compile`` gives (equal to it: same text, flags and code). Parsing
    the text, which this skips, is most of the cost of compiling a long pattern.

    Any mismatch (another Python, a file from another version, a torn or foreign file, code
    the engine refuses) falls back to ``re.compile``. ``save()`` adds the patterns compiled
    since the file was read (merged with what other processes stored meanwhile)."""

    def __init__(self, path: Path | None) -> None:
        from threading import Lock

        self.path = path
        self._lock = Lock()  # (validators in several threads share one store)
        self._guard = _sre_guard()
        self._codes: dict | None = None  # (text, flags) -> the rest of _sre.compile's arguments
        self._new: dict = {}

    def _read(self) -> dict:
        if self._guard is None or self.path is None:
            return {}
        data = read(self.path)
        if data is None:
            return {}
        import marshal

        try:
            guard, codes = marshal.loads(data)
        except Exception:  # noqa: BLE001 - torn or foreign: compiled again
            return {}
        return codes if guard == self._guard and isinstance(codes, dict) else {}

    def compile(self, text: str, flags: int = 0):
        """``re.compile(text, flags)``, from the cache file when it has it."""
        import re

        flags = int(flags)
        if self._codes is None:
            with self._lock:
                if self._codes is None:
                    self._codes = self._read()
        key = (text, flags)
        args = self._codes.get(key)
        if args is not None:
            import _sre

            try:
                return _sre.compile(text, *args)
            except Exception:  # noqa: BLE001 - code this engine refuses: compiled afresh
                with self._lock:
                    self._codes.pop(key, None)
        if self._guard is not None:
            try:
                args = _code_of(text, flags)
                import _sre

                pattern = _sre.compile(text, *args)
            except Exception:  # noqa: BLE001 - re.compile says what is wrong, if anything
                pass
            else:
                with self._lock:
                    self._new[key] = args
                return pattern
        return re.compile(text, flags)

    def save(self) -> None:
        """Store the patterns compiled since the file was read (with those already there).
        A cache: nothing that goes wrong here reaches the validation."""
        if not self._new or self.path is None or self._guard is None:
            return
        import marshal

        with self._lock:
            new, self._new = self._new, {}
            try:
                codes = self._codes or {}
                merged = {**self._read(), **codes, **new}
                if len(merged) > PATTERNS_CAP:  # a file that only grows would slow every start
                    merged = {**codes, **new}
                    if len(merged) > PATTERNS_CAP:
                        merged = new
                if self._codes is not None:
                    self._codes.update(new)
                write(self.path, marshal.dumps((self._guard, merged)))
            except Exception:  # noqa: BLE001 - not stored now: kept for the next save
                self._new = {**new, **self._new}


def _code_of(text: str, flags: int) -> tuple:
    """The arguments ``re._compiler.compile`` gives ``_sre.compile`` after the pattern text:
    (flags, code, groups, groupindex, indexgroup) — the same steps, in the same order."""
    from re import _compiler, _parser

    p = _parser.parse(text, flags)
    code = [int(c) for c in _compiler._code(p, flags)]  # (opcodes are int subclasses)
    groupindex = dict(p.state.groupdict)
    indexgroup = [None] * p.state.groups
    for k, i in groupindex.items():
        indexgroup[i] = k
    return (int(flags | p.state.flags), code, p.state.groups - 1, groupindex, tuple(indexgroup))
