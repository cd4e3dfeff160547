"""Map compiler: implementation-guide maps in pyx12's XML format → compact node tables.

A map (``map.xsd``) is read with lxml, validated against the schema, joined with the data
element dictionary (``dataele.xml``: type, min/max length) and the external code sets
(``codes.xml``), and turned into a tree of small slotted nodes numbered in pre-order, so that
"every node below loop L" is the index range ``L.index + 1 .. L.end``. Each segment node gets:

- ``key``: where its qualifier is read (element/component) and which codes select it, the
  same rule pyx12 uses to tell look-alike segments apart (HL03, NM101, ENT02, CTX01-1…);
- ``fast``: one compiled regular expression that accepts a clean segment text in one call
  (sound, not complete: a text it rejects goes to the detailed checks in :mod:`.elements`);
- ``post``: the few checks a regex cannot carry cheaply (syntax notes P/R/C/E/L, large
  external code sets, the map's own element regexes).

Where maps are found: ``profiles/x12/<file>`` first (our own maps, e.g. the DHCS 274), then
pyx12's bundled ``pyx12/map/<file>``. ``dataele.xml`` and ``codes.xml`` come from pyx12, extended
by ``profiles/x12/dataele.xml`` / ``profiles/x12/codes.xml`` when those exist. A compiled map is
kept per process and pickled to a disk cache named by its inputs (by stat, hashed when in doubt:
:func:`gateway.diskcache.file_key`), so a new process pays only an unpickle — of the loops and
segments: each segment's elements stay pickled until first used (:func:`nodes.pack_elements`).
The fast patterns compiled for a file's delimiters are kept across processes too
(:func:`patterns`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from threading import Lock

from gateway import diskcache
from gateway.x12.engine.elements import compile_fast
from gateway.x12.engine.nodes import (
    MAXINT, OUR_MAPS, Composite, Element, Loop, Root, Segment, code_sets, data_elements,
    pack_elements, pyx12_map_dir,
)

ENGINE_VERSION = "7"  # bump when the compiled form changes (invalidates the disk cache)


class MapError(ValueError):
    """A map cannot be found, does not validate against map.xsd, or cannot be compiled."""


def find_map(name: str) -> Path:
    """The map file called ``name``: ours (profiles/x12/) first, then pyx12's."""
    candidate = Path(name)
    if candidate.is_absolute() and candidate.exists():
        return candidate
    for folder in (OUR_MAPS, pyx12_map_dir()):
        path = folder / name
        if path.exists():
            return path
    raise MapError(f"implementation-guide map {name!r} not found in profiles/x12/ or pyx12")


@lru_cache(maxsize=1)
def _schema():
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(pyx12_map_dir() / "map.xsd")))


# -- compiling ----------------------------------------------------------------------------------
def _get(elem, name: str) -> str | None:
    value = elem.get(name)
    if value:
        return value
    return elem.findtext(name)


def _repeat(text: str | None) -> int:
    if text is None or not text.strip().isdigit():  # ">1", "&gt;1", or left empty
        return MAXINT
    return int(text)


_NO_CODES: frozenset[str] = frozenset()


class _Compiler:
    def __init__(self, icvn: str) -> None:
        self.dataele = data_elements()
        self.codes = code_sets()
        self.icvn = icvn
        self.nodes: list[Node] = []

    def element(self, e, parent) -> Element:
        el = Element()
        el.refdes = e.get("xid")
        el.name = _get(e, "name") or ""
        el.usage = _get(e, "usage")
        el.seq = int(_get(e, "seq"))
        el.data_ele = _get(e, "data_ele")
        spec = self.dataele.get(el.data_ele or "")
        if spec is None:
            el.data_type, el.min_len, el.max_len = None, 0, MAXINT
        else:
            el.data_type, el.min_len, el.max_len = spec[0], spec[1], spec[2]
        regex = e.findtext("regex")
        el.regex = re.compile(regex, re.S) if regex else None
        v = e.find("valid_codes")
        el.external = None
        valid: list[str] = []
        if v is not None:
            el.external = v.get("external")
            valid = [c.text for c in v.findall("code")]
            if el.external and el.external not in self.codes:
                raise MapError(f"external code set {el.external!r} is not defined")
        el.valid_codes = valid
        # one shared empty set for the 2,170 code-less elements of the 837P: fewer objects to
        # unpickle per process (≈ 1 ms); a frozenset, so sharing it is safe
        el.codes = frozenset(valid) if valid else _NO_CODES
        el.parent = parent
        return el

    def composite(self, e, parent) -> Composite:
        c = Composite()
        c.refdes = e.findtext("refdes") or e.get("xid")
        c.name = _get(e, "name") or ""
        c.usage = _get(e, "usage")
        c.seq = int(_get(e, "seq"))
        c.data_ele = _get(e, "data_ele")
        c.parent = parent
        c.children = [self.element(x, c) for x in e.findall("element")]
        return c

    def segment(self, e, parent) -> Segment:
        s = Segment()
        s.id = e.get("xid")
        s.name = _get(e, "name") or ""
        s.usage = _get(e, "usage")
        s.pos = int(_get(e, "pos"))
        s.max_repeat = _repeat(_get(e, "max_use"))
        s.parent = parent
        s.syntax = []
        for syn in e.findall("syntax"):
            text = syn.text or ""
            if text and text[0] in "PRCLE":
                s.syntax.append((text[0], tuple(int(text[i:i + 2])
                                                for i in range(1, len(text) - 1, 2))))
        children = {}
        for x in e.findall("element"):
            children[int(_get(x, "seq"))] = x
        for x in e.findall("composite"):
            children[int(_get(x, "seq"))] = x
        s.elements = [self.element(children[k], s) if children[k].tag == "element"
                      else self.composite(children[k], s) for k in sorted(children)]
        s.key = _match_key(s)
        s.has_1250 = any(isinstance(c, Element) and c.data_ele == "1250" for c in s.elements)
        s.twins = ()
        s.index = len(self.nodes)
        self.nodes.append(s)
        s.end = s.index
        return s

    def loop(self, e, parent, node: Loop) -> Loop:
        node.id = e.get("xid")
        node.name = _get(e, "name") or ""
        node.usage = _get(e, "usage")
        node.pos = int(_get(e, "pos")) if _get(e, "pos") else 0
        node.max_repeat = _repeat(_get(e, "repeat"))
        node.parent = parent
        node.index = len(self.nodes)
        self.nodes.append(node)
        pos_map: dict[int, list] = {}
        # pyx12's order within one position: loops first, then segments
        for x in e.findall("loop"):
            child = self.loop(x, node, Loop())
            pos_map.setdefault(child.pos, []).append(child)
        for x in e.findall("segment"):
            child = self.segment(x, node)
            pos_map.setdefault(child.pos, []).append(child)
        node.groups = tuple((p, tuple(pos_map[p])) for p in sorted(pos_map))
        node.children = tuple(c for _, group in node.groups for c in group)
        node.first = node.children[0] if node.children else None
        node.wrapper = node.first is not None and node.first.is_loop
        node.end = len(self.nodes) - 1
        for _, group in node.groups:  # look-alike segments sharing one position
            segs = [c for c in group if c.is_segment]
            for s in segs:
                s.twins = tuple(t for t in segs if t is not s and t.id == s.id)
        return node


def _match_key(s: Segment):
    """(element index, component index or 0, codes) read to tell this segment node from its
    look-alikes; None when the segment id alone decides (pyx12's rule, is_match)."""
    els = s.elements
    c0 = els[0] if els else None
    c1 = els[1] if len(els) > 1 else None
    c2 = els[2] if len(els) > 2 else None
    if isinstance(c0, Element) and c0.data_type == "ID" and c0.usage == "R" and c0.valid_codes:
        return (1, 0, c0.codes)
    if s.id == "ENT" and isinstance(c1, Element) and c1.data_type == "ID" and c1.valid_codes:
        return (2, 0, c1.codes)
    if s.id == "CTX" and isinstance(c0, Composite) and c0.children[0].data_type == "AN" and \
            c0.children[0].valid_codes:
        return (1, 1, c0.children[0].codes)
    if isinstance(c0, Composite) and c0.children[0].data_type == "ID" and \
            c0.children[0].valid_codes:
        return (1, 1, c0.children[0].codes)
    if s.id == "HL" and isinstance(c2, Element) and c2.valid_codes:
        return (3, 0, c2.codes)
    return None


def _compile_file(path: Path) -> Root:
    from lxml import etree

    try:
        doc = etree.parse(str(path))
    except etree.XMLSyntaxError as exc:
        raise MapError(f"{path.name}: not well-formed XML ({exc})") from None
    schema = _schema()
    if not schema.validate(doc):
        first = schema.error_log.filter_from_errors()[:1]
        raise MapError(f"{path.name}: does not validate against map.xsd ({first})")
    top = doc.getroot()
    icvn = ""
    for isa in top.iter("segment"):
        if isa.get("xid") == "ISA":
            for el in isa.iter("element"):
                if el.get("xid") == "ISA12":
                    icvn = el.findtext("valid_codes/code") or ""
            break
    comp = _Compiler(icvn)
    root = Root()
    root.transaction = top.get("xid")
    comp.loop(top, None, root)
    root.id = None
    root.icvn = icvn
    root.nodes = comp.nodes
    root.file = path.name
    keys: dict[str, set] = {}
    for node in comp.nodes:
        if node.is_segment:
            keys.setdefault(node.id, set()).add(node.key[:2] if node.key else None)
    root.seg_keys = {k: tuple(sorted(p for p in v if p)) for k, v in keys.items()}
    for node in comp.nodes:
        if node.is_segment:
            compile_fast(node, icvn)
            pack_elements(node)  # unpickled on first use (nodes.Segment.elements)
    return root


def _digest(path: Path) -> str:
    """The name of a map's compiled form: its inputs (the map, the data element dictionaries
    and code sets, the compiler's own source) as :func:`gateway.diskcache.file_key` names them
    (by stat, not by reading ≈ 2 MB of XML each process; hashed when in doubt)."""
    here = Path(__file__)
    return diskcache.file_key(
        f"x12-map {ENGINE_VERSION}".encode(),
        (path, pyx12_map_dir() / "dataele.xml", pyx12_map_dir() / "codes.xml",
         OUR_MAPS / "dataele.xml", OUR_MAPS / "codes.xml", here.with_name("elements.py"),
         here.with_name("maps.py"), here.with_name("nodes.py")))


def cache_dir() -> Path | None:
    """Where compiled maps are cached: the ``x12_map_cache`` setting (``off`` disables the
    cache), by default ``<var>/cache/x12-maps``."""
    return diskcache.folder("x12_map_cache", "x12-maps")


_LOCK = Lock()
_LOADED: dict[str, Root] = {}


def load(name: str) -> Root:
    """The compiled map called ``name`` (a file name in profiles/x12/ or pyx12's maps), once
    per process; from the disk cache when its inputs have not changed."""
    found = _LOADED.get(name)
    if found is not None:
        return found
    with _LOCK:
        found = _LOADED.get(name)
        if found is not None:
            return found
        path = find_map(name)
        digest = _digest(path)
        folder = cache_dir()
        cached = folder / f"{path.stem}-{digest}.pickle" if folder else None

        def build() -> Root:
            compiled = _compile_file(path)
            compiled.digest = digest
            return compiled

        root = diskcache.cached(cached, build)
        _LOADED[name] = root
        return root


_PATTERNS: dict[tuple, diskcache.Patterns] = {}


def patterns(root: Root, icvn: str) -> diskcache.Patterns:
    """Where the fast patterns of ``root``'s segments are compiled for one charset: kept across
    processes in the map cache folder (:class:`gateway.diskcache.Patterns`; a pattern is looked
    up by its text, which holds the file's delimiters, so a file another map version wrote can
    only miss). One file per map and charset, whatever the delimiters: a sender cannot add a
    cache file per delimiter set it invents (the file keeps at most
    :data:`~gateway.diskcache.PATTERNS_CAP` patterns). One store per process and key."""
    folder = cache_dir()
    key = (folder, root.file, icvn)
    found = _PATTERNS.get(key)
    if found is None:
        name = f"{Path(root.file).stem}-re-{icvn}.marshal"
        found = _PATTERNS.setdefault(key, diskcache.Patterns(folder / name if folder else None))
    return found
