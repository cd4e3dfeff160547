"""The start-up disk caches (gateway/diskcache.py): parsed YAML files (gateway/yamlio.py
``load_file``) and compiled X12 maps (gateway/x12/engine/maps.py). A cached value must be the
value a fresh parse gives, a changed input must never be served stale, a torn cache file is
rebuilt, and ``off`` writes nothing."""

from __future__ import annotations

import pickle

import pytest
from conftest import ROOT

from gateway import diskcache, settings, yamlio

YAML_FILES = sorted(p for folder in ("profiles", "mappings") for p in (ROOT / folder).rglob("*.yaml"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "yaml-cache"
    monkeypatch.setenv("ECM_GATEWAY_YAML_CACHE", str(folder))
    settings.reset()
    yield folder
    settings.reset()


def test_every_data_file_reads_the_same_from_the_cache_as_parsed(cache):
    assert len(YAML_FILES) > 20
    for path in YAML_FILES:
        parsed = yamlio.safe_load(path.read_text(encoding="utf-8"))
        assert yamlio.load_file(path) == parsed, path  # cold: parsed, then stored
        assert yamlio.load_file(path) == parsed, path  # warm: from the cache file
    assert len(list(cache.glob("*.pickle"))) == len({p.read_bytes() for p in YAML_FILES})


def test_a_changed_file_is_read_again_not_served_from_the_cache(cache, tmp_path):
    path = tmp_path / "pack.yaml"
    path.write_text("rules:\n  - id: A\n    severity: error\n")
    assert yamlio.load_file(path)["rules"][0]["severity"] == "error"
    path.write_text("rules:\n  - id: A\n    severity: warning\n")
    assert yamlio.load_file(path)["rules"][0]["severity"] == "warning"
    path.write_text("rules:\n  - id: A\n    severity: error\n")  # back: the first entry again
    assert yamlio.load_file(path)["rules"][0]["severity"] == "error"
    assert len(list(cache.glob("pack-*.pickle"))) == 2


def test_each_call_returns_its_own_object(cache, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: [1, 2]\n")
    yamlio.load_file(path)["a"].append(3)
    assert yamlio.load_file(path) == {"a": [1, 2]}


def test_a_torn_or_foreign_cache_file_is_rebuilt(cache, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("when: 2024-02-29\nx: 'a'\n")
    first = yamlio.load_file(path)
    (stored,) = cache.glob("p-*.pickle")
    stored.write_bytes(stored.read_bytes()[:7])  # torn
    assert yamlio.load_file(path) == first
    assert pickle.loads(stored.read_bytes()) == first  # written again, whole
    stored.write_bytes(b"not a pickle")
    assert yamlio.load_file(path) == first


def test_line_endings_and_errors_as_read_text_gives_them(cache, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b'a: "x\r\n  y"\r\nb: |\r\n  one\r\n  two\r\nc: "p\rq"\n')
    assert yamlio.load_file(path) == yamlio.safe_load(path.read_text(encoding="utf-8"))
    path.write_text("a: [1,\n")
    with pytest.raises(yamlio.YAMLError):
        yamlio.load_file(path)
    path.write_bytes(b"a: \xff\n")
    with pytest.raises(UnicodeDecodeError):
        yamlio.load_file(path)


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ECM_GATEWAY_YAML_CACHE", "off")
    settings.reset()
    try:
        path = tmp_path / "p.yaml"
        path.write_text("a: 1\n")
        assert yamlio.load_file(path) == {"a": 1}
        assert diskcache.folder("yaml_cache", "yaml") is None
        assert not (tmp_path / "var" / "cache").exists()
    finally:
        settings.reset()


def test_default_folder_is_under_var(tmp_path):
    settings.reset()
    assert diskcache.folder("yaml_cache", "yaml") == tmp_path / "var" / "cache" / "yaml"
    assert diskcache.folder("x12_map_cache", "x12-maps") == tmp_path / "var" / "cache" / "x12-maps"


def test_an_unwritable_cache_folder_only_means_parsing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ECM_GATEWAY_YAML_CACHE", str(blocker / "sub"))  # under a file
    settings.reset()
    try:
        path = tmp_path / "p.yaml"
        path.write_text("a: 1\n")
        assert yamlio.load_file(path) == {"a": 1}
    finally:
        settings.reset()


def _map_codes(root, refdes: str) -> frozenset:
    from gateway.x12.engine.nodes import Element

    for node in root.nodes:
        for element in getattr(node, "elements", None) or ():
            if isinstance(element, Element) and element.refdes == refdes:
                return element.codes
    raise AssertionError(refdes)


def test_a_changed_map_is_compiled_again_and_a_torn_one_rebuilt(tmp_path, monkeypatch):
    """The compiled-map cache (gateway/x12/engine/maps.py) through the same helper: a map whose
    bytes changed gets a new cache entry, never the old compiled form."""
    from gateway.x12.engine import maps
    from gateway.x12.engine.nodes import pyx12_map_dir

    folder = tmp_path / "maps"
    monkeypatch.setenv("ECM_GATEWAY_X12_MAP_CACHE", str(folder))
    settings.reset()
    try:
        original = (pyx12_map_dir() / "997.4010.xml").read_text()
        assert "<code>03</code>" in original
        first, second, third = (tmp_path / n / "997.4010.xml" for n in "abc")
        for path, text in ((first, original), (second, original.replace("<code>03</code>",
                                                                           "<code>07</code>", 1)),
                           (third, original)):
            path.parent.mkdir()
            path.write_text(text)
        a = maps.load(str(first))
        assert "03" in _map_codes(a, "ISA01")
        (stored,) = folder.glob("997.4010-*.pickle")
        b = maps.load(str(second))  # changed bytes: compiled again
        assert "07" in _map_codes(b, "ISA01") and "03" not in _map_codes(b, "ISA01")
        assert len(list(folder.glob("997.4010-*.pickle"))) == 2
        stored.write_bytes(stored.read_bytes()[:100])  # torn: rebuilt, same result
        c = maps.load(str(third))
        assert _map_codes(c, "ISA01") == _map_codes(a, "ISA01")
        assert len(c.nodes) == len(a.nodes)
        assert pickle.loads(stored.read_bytes()).digest == a.digest
    finally:
        settings.reset()


def test_the_yaml_cache_setting_read_early_agrees_with_the_settings_object(tmp_path, monkeypatch):
    monkeypatch.setenv("ECM_GATEWAY_YAML_CACHE", str(tmp_path / "y"))
    settings.reset()
    try:
        assert settings.early("yaml_cache") == str(tmp_path / "y") == settings.current().yaml_cache
        assert diskcache.folder("yaml_cache", "yaml") == tmp_path / "y"
    finally:
        settings.reset()


def test_a_cache_others_can_write_is_never_unpickled(tmp_path):
    """A cache file is a pickle (unpickling runs code): one in a folder that group or others
    can write, or one such file itself, could have been planted, so it is ignored and the value
    built; the gateway makes its cache folder 0700."""
    folder = tmp_path / "shared-cache"
    folder.mkdir()
    path = folder / "value.pickle"
    calls = []

    def build():
        calls.append(1)
        return {"built": len(calls)}

    assert diskcache.cached(path, build) == {"built": 1}  # stored in our own folder
    assert diskcache.cached(path, build) == {"built": 1} and len(calls) == 1  # from the cache
    path.write_bytes(pickle.dumps({"planted": True}))
    path.chmod(0o666)  # a file anyone could have written
    assert diskcache.cached(path, build) == {"built": 2}
    folder.chmod(0o777)  # a folder anyone can write into
    path.write_bytes(pickle.dumps({"planted": True}))
    path.chmod(0o600)
    assert diskcache.cached(path, build) == {"built": 3}
    assert pickle.loads(path.read_bytes()) == {"planted": True}  # not ours to overwrite either


def test_the_cache_folder_is_made_private(tmp_path):
    path = tmp_path / "new" / "cache" / "value.pickle"
    assert diskcache.cached(path, lambda: 7) == 7
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o077 == 0
    assert diskcache.cached(path, lambda: 8) == 7
