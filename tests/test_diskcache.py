"""The start-up disk caches (gateway/diskcache.py): parsed YAML files (gateway/yamlio.py
``load_file``) and compiled X12 maps (gateway/x12/engine/maps.py). A cached value must be the
value a fresh parse gives, a changed input must never be served stale, a torn cache file is
rebuilt, and ``off`` writes nothing."""

from __future__ import annotations

import pickle

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

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


# -- stat-named inputs (diskcache.file_key) ------------------------------------------------------
def test_file_key_names_a_changed_input_anew_even_with_its_old_size_and_times(tmp_path, monkeypatch):
    """By stat when the input is not recent: a rewrite with the same size and its modification
    time set back still moves the status-change time (which no user can set), so the name
    changes; a recent input is hashed (same bytes, same name, wherever it is)."""
    import os
    import time

    monkeypatch.setattr(diskcache, "RECENT_SECONDS", 0.0)  # every input read by stat
    path = tmp_path / "map.xml"
    path.write_text("<a>03</a>")
    old = time.time_ns() - 10**10
    os.utime(path, ns=(old, old))
    first = diskcache.file_key(b"v1", [path])
    assert diskcache.file_key(b"v1", [path]) == first  # nothing changed: same name, unread
    assert diskcache.file_key(b"v2", [path]) != first  # another reader version
    time.sleep(0.02)  # (beyond the file system's clock tick)
    path.write_text("<a>07</a>")  # same size
    os.utime(path, ns=(old, old))  # and the old times
    assert diskcache.file_key(b"v1", [path]) != first
    missing = diskcache.file_key(b"v1", [path, tmp_path / "none.xml"])
    assert missing != diskcache.file_key(b"v1", [path]) and \
        missing != diskcache.file_key(b"v1", [path, tmp_path / "other.xml", tmp_path / "x"])

    monkeypatch.setattr(diskcache, "RECENT_SECONDS", 3600.0)  # every input hashed
    copy = tmp_path / "copy.xml"
    copy.write_bytes(path.read_bytes())
    assert diskcache.file_key(b"v1", [path]) == diskcache.file_key(b"v1", [copy])
    copy.write_text("<a>08</a>")
    assert diskcache.file_key(b"v1", [path]) != diskcache.file_key(b"v1", [copy])


def test_a_changed_map_read_by_stat_is_compiled_again(tmp_path, monkeypatch):
    """The compiled-map cache named by stat (inputs older than RECENT_SECONDS): a map edited
    in place, same size, modification time set back, is compiled again, never served stale."""
    import os
    import time

    from gateway.x12.engine import maps
    from gateway.x12.engine.nodes import pyx12_map_dir

    monkeypatch.setattr(diskcache, "RECENT_SECONDS", 0.0)
    monkeypatch.setenv("ECM_GATEWAY_X12_MAP_CACHE", str(tmp_path / "maps"))
    settings.reset()
    try:
        path = tmp_path / "997.4010.xml"
        original = (pyx12_map_dir() / "997.4010.xml").read_text()
        path.write_text(original)
        old = time.time_ns() - 10**10
        os.utime(path, ns=(old, old))
        assert "03" in _map_codes(maps.load(str(path)), "ISA01")
        time.sleep(0.02)
        path.write_text(original.replace("<code>03</code>", "<code>07</code>", 1))
        os.utime(path, ns=(old, old))
        # the same file by another name (a new process; maps loaded stay loaded: memos key
        # on their nodes' ids)
        changed = maps.load(f"{tmp_path}/./997.4010.xml")
        assert "07" in _map_codes(changed, "ISA01") and "03" not in _map_codes(changed, "ISA01")
        assert len(list((tmp_path / "maps").glob("997.4010-*.pickle"))) == 2
    finally:
        settings.reset()


# -- lazily unpickled segment elements (nodes.pack_elements) ------------------------------------
def _element_rows(elements) -> list:
    from gateway.x12.engine.nodes import Composite

    rows = []
    for e in elements:
        if isinstance(e, Composite):
            rows.append(("C", e.refdes, e.name, e.usage, e.seq, e.data_ele))
            assert all(c.parent is e for c in e.children)
            rows.append(_element_rows(e.children))
        else:
            rows.append((e.refdes, e.name, e.usage, e.seq, e.data_ele, e.data_type, e.min_len,
                         e.max_len, e.codes, e.valid_codes, e.external,
                         e.regex.pattern if e.regex else None))
    return rows


def test_a_cached_map_gives_each_segment_its_elements_as_compiled(tmp_path, monkeypatch):
    """A map from the cache unpickles a segment's elements on first use: the same elements as
    the map compiled afresh, their parent the segment; pickling the map again keeps them
    packed (not unpickled by the pickling, not stored twice)."""
    from gateway.x12.engine import maps

    monkeypatch.setenv("ECM_GATEWAY_X12_MAP_CACHE", str(tmp_path / "maps"))
    settings.reset()
    try:
        path = tmp_path / "837.5010.X222.A1.xml"  # (a name no other test loads)
        path.write_bytes(maps.find_map("837.5010.X222.A1.xml").read_bytes())
        fresh = maps._compile_file(path)
        maps.load(str(path))  # (stored)
        (stored,) = (tmp_path / "maps").glob("837.5010.X222.A1-*.pickle")
        cached = pickle.loads(stored.read_bytes())
        segments = [n for n in cached.nodes if n.is_segment]
        assert len(segments) > 300
        unpacked = [s for s in segments if "_elements" in s.__getstate__()[1]]
        assert unpacked == []  # none unpickled yet
        for a, b in zip(fresh.nodes, cached.nodes):
            assert (a.id, a.index, a.end, type(a)) == (b.id, b.index, b.end, type(b))
            if a.is_segment:
                assert (a.fast, a.post, a.key, a.syntax) == (b.fast, b.post, b.key, b.syntax)
                assert _element_rows(a.elements) == _element_rows(b.elements)
                assert all(e.parent is b for e in b.elements)
        again = pickle.loads(pickle.dumps(pickle.loads(stored.read_bytes())))
        assert all("_elements" not in n.__getstate__()[1] for n in again.nodes if n.is_segment)
        assert _element_rows(again.nodes[-1].elements) == _element_rows(fresh.nodes[-1].elements)
    finally:
        settings.reset()


# -- compiled regular expressions kept across processes (diskcache.Patterns) --------------------
def _fast_sources() -> list[str]:
    """The fast pattern text of every segment of the 837P map, for the usual delimiters."""
    from gateway.x12.engine import maps
    from gateway.x12.engine.elements import fast_source

    root = maps.load("837.5010.X222.A1.xml")
    found = [fast_source(n, "00501", "*", ":", "~") for n in root.nodes if n.is_segment]
    return [s for s in found if s]


def test_patterns_read_back_are_the_patterns_re_compile_gives(tmp_path, clean_837):
    """Every fast pattern of the 837P, compiled once, stored and read back by a new store
    (a new process): equal to ``re.compile`` of the same text (same text, flags, groups and
    engine code) and matching the same segments."""
    import re

    path = tmp_path / "patterns.marshal"
    sources = _fast_sources() + [r"(?P<id>[A-Z]{2,3})\*(.*)~?", r"(?i)x{2,}?(?=y)|\Z"]
    assert len(sources) > 300
    first = diskcache.Patterns(path)
    for text in sources:
        assert first.compile(text, re.ASCII | re.S) == re.compile(text, re.ASCII | re.S)
    first.save()
    assert path.stat().st_mode & 0o077 == 0
    second = diskcache.Patterns(path)
    restored = [second.compile(text, re.ASCII | re.S) for text in sources]
    assert not second._new  # every one from the file, none compiled again
    texts = [s.decode() for s in clean_837.split(b"~") if s.strip()]
    for text, pattern in zip(sources, restored):
        expected = re.compile(text, re.ASCII | re.S)
        assert pattern == expected
        assert (pattern.pattern, pattern.flags, pattern.groups, pattern.groupindex) == \
            (expected.pattern, expected.flags, expected.groups, expected.groupindex)
        for segment in texts:
            assert bool(pattern.fullmatch(segment)) == bool(expected.fullmatch(segment))
    named = restored[-2].fullmatch("CLM*1*2")
    assert named is not None and named.group("id") == "CLM" and named.group(2) == "1*2"



_SEGMENTS = None


def _segment_texts() -> list[str]:
    global _SEGMENTS
    if _SEGMENTS is None:
        from conftest import FIXTURES

        data = (FIXTURES / "837p" / "ecm-clean.x12").read_bytes().decode()
        _SEGMENTS = [s.strip() for s in data.split("~") if s.strip()]
    return _SEGMENTS


@hsettings(max_examples=150, deadline=None)
@given(st.data())
def test_restored_patterns_match_as_compiled_ones_on_mutated_segments(tmp_path_factory, data):
    """hypothesis: real segments with random edits (characters inserted, dropped, replaced,
    delimiters among them): a restored fast pattern and ``re.compile``'s agree on every one."""
    import re

    global _STORED
    if _STORED is None:
        path = tmp_path_factory.mktemp("re") / "p.marshal"
        store = diskcache.Patterns(path)
        for text in _fast_sources():
            store.compile(text, re.ASCII | re.S)
        store.save()
        again = diskcache.Patterns(path)
        _STORED = [(again.compile(t, re.ASCII | re.S), re.compile(t, re.ASCII | re.S))
                   for t in _fast_sources()]
        assert not again._new
    segment = data.draw(st.sampled_from(_segment_texts()))
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(segment)))
        edit = data.draw(st.sampled_from("insert drop replace".split()))
        char = data.draw(st.sampled_from("*:~^ A9.-\x00\xe9" + segment[:4]))
        if edit == "insert":
            segment = segment[:at] + char + segment[at:]
        elif edit == "drop":
            segment = segment[:at] + segment[at + 1:]
        else:
            segment = segment[:at] + char + segment[at + 1:]
    for restored, compiled in _STORED:
        a, b = restored.fullmatch(segment), compiled.fullmatch(segment)
        assert (a is None) == (b is None) and (a is None or a.span() == b.span())


_STORED = None


def _planted(path, text: str, code_of: str, guard=None) -> None:
    """A pattern file that gives ``text`` the engine code of ``code_of`` (a wrong pattern)."""
    import marshal
    import re

    args = diskcache._code_of(code_of, int(re.S))
    path.write_bytes(marshal.dumps((guard or diskcache._sre_guard(),
                                    {(text, int(re.S)): args})))
    path.chmod(0o600)


def test_a_pattern_file_others_could_write_is_ignored(tmp_path):
    """The pattern file is trusted only as the pickles are (ours, not group/world-writable);
    the plant below proves a trusted file is used, so ignoring it is what keeps it out."""
    import re

    folder = tmp_path / "c"
    folder.mkdir(mode=0o700)
    path = folder / "p.marshal"
    _planted(path, "abc", "xyz")
    assert diskcache.Patterns(path).compile("abc", re.S).fullmatch("xyz")  # trusted: used
    path.chmod(0o666)
    assert diskcache.Patterns(path).compile("abc", re.S) == re.compile("abc", re.S)
    path.chmod(0o600)
    folder.chmod(0o777)
    assert diskcache.Patterns(path).compile("abc", re.S) == re.compile("abc", re.S)
    store = diskcache.Patterns(path)
    store.compile("def", re.S)
    store.save()  # not ours to write either
    assert b"def" not in path.read_bytes()


def test_a_pattern_file_from_another_python_torn_or_refused_falls_back(tmp_path, monkeypatch):
    import marshal
    import re

    path = tmp_path / "p.marshal"
    guard = diskcache._sre_guard()
    assert guard is not None  # (the Python the project pins: the fast path is on)
    other = ((3, 10),) + guard[1:]
    _planted(path, "abc", "xyz", guard=other)  # another version wrote it
    assert diskcache.Patterns(path).compile("abc", re.S) == re.compile("abc", re.S)
    _planted(path, "abc", "xyz", guard=(guard[0], guard[1] - 1) + guard[2:])  # another engine
    assert diskcache.Patterns(path).compile("abc", re.S) == re.compile("abc", re.S)
    _planted(path, "abc", "xyz")
    path.write_bytes(path.read_bytes()[:-5])  # torn
    store = diskcache.Patterns(path)
    assert store.compile("abc", re.S) == re.compile("abc", re.S)
    store.save()  # written again, whole
    assert diskcache.Patterns(path).compile("abc", re.S) == re.compile("abc", re.S)
    assert marshal.loads(path.read_bytes())[0] == guard
    path.write_bytes(marshal.dumps((guard, {("abc", int(re.S)): (int(re.S), [1, 2, 99999], 0,
                                                                   {}, (None,))})))
    assert diskcache.Patterns(path).compile("abc", re.S) == re.compile("abc", re.S)  # refused
    with pytest.raises(re.error):  # a bad pattern raises as re.compile does
        diskcache.Patterns(path).compile("a(b", re.S)
    monkeypatch.setattr(diskcache, "_sre_guard", lambda: None)  # internals not as expected
    path.unlink()
    store = diskcache.Patterns(path)
    assert store.compile("abc", re.S) == re.compile("abc", re.S)
    store.save()
    assert not path.exists()


def test_the_validator_stores_the_fast_patterns_it_compiled(tmp_path, monkeypatch, clean_837):
    """A validation stores the fast patterns it compiled beside the compiled maps; a new
    process reads them back; the findings are the same either way."""
    from gateway.x12.engine import elements, maps
    from gateway.x12.validate import validate_x12

    folder = tmp_path / "maps"
    monkeypatch.setenv("ECM_GATEWAY_X12_MAP_CACHE", str(folder))
    settings.reset()
    try:
        monkeypatch.setattr(elements, "_COMPILED", {})
        first = validate_x12(clean_837)
        (stored,) = folder.glob("837.5010.X222.A1-re-00501.marshal")
        monkeypatch.setattr(elements, "_COMPILED", {})  # (a new process)
        monkeypatch.setattr(maps, "_PATTERNS", {})
        again = validate_x12(clean_837)
        store = next(iter(maps._PATTERNS.values()))
        assert store._codes and not store._new  # all read back
        assert [f.as_dict() for f in again.findings] == [f.as_dict() for f in first.findings]
    finally:
        settings.reset()


# -- the rule catalogue (gateway/rules.py RuleCatalogue.load) -----------------------------------
def test_the_rule_catalogue_from_the_cache_is_the_one_built(tmp_path, monkeypatch):
    """The catalogue is pickled whole (its packs named by stat): a new process reads the same
    rules; a pack edited in place (same size, times set back) is read again; ``off`` builds."""
    import os
    import shutil
    import time

    from gateway.rules import RuleCatalogue

    monkeypatch.setenv("ECM_GATEWAY_YAML_CACHE", str(tmp_path / "cache"))
    settings.reset()
    try:
        packs = tmp_path / "rules"
        shutil.copytree(ROOT / "profiles" / "rules", packs)
        built = RuleCatalogue._build(sorted(packs.glob("*.yaml")))
        assert RuleCatalogue.load(packs).rules() == built.rules()  # built, stored
        (stored,) = (tmp_path / "cache").glob("catalogue-rules-*.pickle")
        assert pickle.loads(stored.read_bytes()).rules() == built.rules()
        assert RuleCatalogue.load(packs).rules() == built.rules()  # from the cache

        monkeypatch.setattr(diskcache, "RECENT_SECONDS", 0.0)  # named by stat from here on
        pack = packs / "x12-snip.yaml"
        old = time.time_ns() - 10**10
        for path in packs.glob("*.yaml"):
            os.utime(path, ns=(old, old))
        RuleCatalogue.load(packs)
        text = pack.read_text()
        assert "severity: error" in text
        time.sleep(0.02)
        first = text[text.index("id: "):].split("\n")[0][4:].strip()
        assert built.rule(first).severity.value == "error"
        pack.write_text(text.replace("severity: error", "severity: info ", 1))  # same size
        os.utime(pack, ns=(old, old))  # and the old times: only the status change moved
        assert RuleCatalogue.load(packs).rule(first).severity.value == "info"
    finally:
        settings.reset()


def test_one_pattern_store_shared_by_threads(tmp_path):
    """Validators in several threads share one store per process: compiling and saving at
    once raises nothing and gives re.compile's patterns; what was stored reads back."""
    import re
    import threading

    path = tmp_path / "p.marshal"
    store = diskcache.Patterns(path)
    texts = [f"A{i}\\*[0-9]{{1,{i % 7 + 1}}}(?:\\*B)?" for i in range(300)]
    errors = []

    def work(offset: int) -> None:
        try:
            for n, text in enumerate(texts[offset:] + texts[:offset]):
                assert store.compile(text, re.S) == re.compile(text, re.S)
                if n % 25 == 0:
                    store.save()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 37,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.save()
    assert errors == []
    again = diskcache.Patterns(path)
    for text in texts:
        assert again.compile(text, re.S) == re.compile(text, re.S)
    assert len(again._codes) == len(texts) and not again._new


def test_invented_delimiters_add_no_cache_file(tmp_path, monkeypatch, clean_837):
    """One pattern file per map and charset: a sender sending the same claims under delimiter
    set after delimiter set grows neither the folder nor the file beyond PATTERNS_CAP."""
    import marshal

    from gateway.x12.engine import elements, maps
    from gateway.x12.validate import validate_x12

    folder = tmp_path / "maps"
    monkeypatch.setenv("ECM_GATEWAY_X12_MAP_CACHE", str(folder))
    monkeypatch.setattr(diskcache, "PATTERNS_CAP", 40)
    settings.reset()
    try:
        text = clean_837.decode()
        element = text[3]
        reference = [f.as_dict() for f in validate_x12(clean_837).findings]
        sizes = []
        for new_element in "|!&":
            assert new_element not in text
            monkeypatch.setattr(elements, "_COMPILED", {})
            monkeypatch.setattr(maps, "_PATTERNS", {})  # (a new process each time)
            result = validate_x12(text.replace(element, new_element).encode())
            assert [(f["rule"], f["location"]) for f in map(lambda f: f.as_dict(),
                                                           result.findings)] == \
                [(f["rule"], f["location"]) for f in reference]
            files = sorted(p.name for p in folder.glob("*.marshal"))
            assert files == ["837.5010.X222.A1-re-00501.marshal"]
            _, codes = marshal.loads((folder / files[0]).read_bytes())
            sizes.append(len(codes))
        assert sizes[0] > 0 and all(n <= 40 for n in sizes), sizes
    finally:
        settings.reset()
