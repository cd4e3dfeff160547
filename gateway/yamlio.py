"""Reading the YAML data files (rule packs, profiles, layouts, mappings): libyaml's C parser
when PyYAML was built with it (about ten times faster than the pure-Python one; the rule
catalogue alone takes 70 ms to parse in Python, a quarter of the command line's start-up),
else the pure-Python safe loader. Same results either way: the safe schema, no Python tags.

:func:`load_file` also keeps each file's parsed data in a disk cache (:mod:`gateway.diskcache`,
setting ``yaml_cache``) named by the hash of the file's bytes: unpickling is several times
faster than parsing, and the validation path reads about fifteen files (≈ 9 ms per process).
A changed file has a new hash, so it is parsed again; every call returns a fresh object."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from gateway import diskcache

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

YAMLError = yaml.YAMLError

# in the key with the bytes: a new PyYAML (or loader) may resolve a scalar differently
_KEY = f"yamlio-1 {yaml.__version__} {_Loader.__name__}".encode()


def safe_load(text: str | bytes):
    """``yaml.safe_load(text)``, with the C parser when there is one."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader


def load_file(path: Path):
    """``safe_load(path.read_text(encoding="utf-8"))``, from the disk cache when the file's
    bytes were parsed before."""
    return load_files([path])[0]


def load_files(paths) -> list:
    """:func:`load_file` for each of ``paths`` (the cache folder looked up once: reading the
    setting scans the environment, ≈ 30 µs)."""
    folder = diskcache.folder("yaml_cache", "yaml")
    found = []
    for path in paths:
        data = Path(path).read_bytes()
        cached = None
        if folder is not None:
            digest = hashlib.sha256(_KEY + b"\0" + data).hexdigest()[:32]
            cached = folder / f"{Path(path).stem}-{digest}.pickle"
        found.append(diskcache.cached(cached, lambda data=data: safe_load(_text(data))))
    return found


def _text(data: bytes) -> str:
    """``data`` as ``Path.read_text(encoding="utf-8")`` gives it (universal newlines)."""
    text = data.decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
