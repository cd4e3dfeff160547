"""Compiled map nodes, the data element dictionary and the external code sets (shared by the
map compiler and the element checks)."""

from __future__ import annotations

import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path
from threading import Lock

from gateway.paths import PROFILES

OUR_MAPS = PROFILES / "x12"
MAXINT = 2**31 - 1
_UNPACKING = Lock()


def pyx12_map_dir() -> Path:
    """pyx12's bundled maps (found without importing pyx12, nor importlib.resources: its
    imports cost ≈ 3 ms of a validation's start)."""
    spec = importlib.util.find_spec("pyx12")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "map"
    from importlib import resources

    return Path(str(resources.files("pyx12").joinpath("map")))


# -- nodes ------------------------------------------------------------------------------------
class Node:
    __slots__ = ("id", "name", "usage", "pos", "parent", "index", "end", "max_repeat")

    is_loop = False
    is_segment = False
    is_root = False

    def get_parent(self):
        return self.parent

    def is_composite(self) -> bool:
        return False


class Loop(Node):
    __slots__ = ("groups", "children", "first", "wrapper")
    is_loop = True

    def __repr__(self) -> str:
        return f"<Loop {self.id}>"


class Root(Loop):
    __slots__ = ("icvn", "transaction", "nodes", "seg_keys", "file", "digest")
    is_root = True
    is_loop = False


class Element:
    """A simple data element (or a component of a composite)."""

    __slots__ = ("refdes", "name", "usage", "seq", "data_ele", "data_type", "min_len",
                 "max_len", "codes", "valid_codes", "external", "regex", "parent")

    def is_composite(self) -> bool:
        return False

    @property
    def external_codes(self):  # the attribute name the finding code reads (pyx12's)
        return self.external


class Composite:
    __slots__ = ("refdes", "name", "usage", "seq", "data_ele", "children", "parent")
    is_segment = False

    def is_composite(self) -> bool:
        return True


class Segment(Node):
    __slots__ = ("_elements", "syntax", "key", "fast", "_post", "has_1250", "twins", "packed",
                 "packed_post")
    is_segment = True

    @property
    def elements(self) -> list:
        """The segment's elements and composites. A compiled map keeps them pickled in
        ``packed`` (:func:`pack_elements`) and unpickles them on first use: a validation reads
        the elements of only the few segments it checks in detail, and the elements are four
        fifths of a map's objects (≈ 5 ms of a process's start)."""
        try:
            return self._elements
        except AttributeError:
            pass
        with _UNPACKING:
            try:
                return self._elements  # (another thread did it)
            except AttributeError:
                pass
            elements = pickle.loads(self.packed)
            for element in elements:
                element.parent = self
            self._elements = elements
            return elements

    @elements.setter
    def elements(self, elements: list) -> None:
        self._elements = elements

    @property
    def post(self) -> tuple:
        """The checks a fast pattern cannot carry (:func:`.elements.compile_fast`), kept
        pickled like the elements when there are any (their code sets are most of what is
        left of a map's unpickling: ≈ 0.6 ms of 1.6 for the 837P) and unpickled on first use."""
        try:
            return self._post
        except AttributeError:
            pass
        with _UNPACKING:
            try:
                return self._post
            except AttributeError:
                pass
            self._post = post = pickle.loads(self.packed_post)
            return post

    @post.setter
    def post(self, post: tuple) -> None:
        self._post = post

    def __repr__(self) -> str:
        return f"<Segment {self.id} pos {self.pos}>"


# -- data element dictionary and code sets ----------------------------------------------------
@lru_cache(maxsize=1)
def data_elements() -> dict[str, tuple[str, int, int, str]]:
    from lxml import etree

    found: dict[str, tuple[str, int, int, str]] = {}
    for path in (pyx12_map_dir() / "dataele.xml", OUR_MAPS / "dataele.xml"):
        if not path.exists():
            continue
        for e in etree.parse(str(path)).getroot().iter("data_ele"):
            found[e.get("ele_num")] = (e.get("data_type"), int(e.get("min_len")),
                                       int(e.get("max_len")), e.get("name") or "")
    return found


@lru_cache(maxsize=1)
def code_sets() -> dict[str, frozenset[str]]:
    from lxml import etree

    found: dict[str, frozenset[str]] = {}
    for path in (pyx12_map_dir() / "codes.xml", OUR_MAPS / "codes.xml"):
        if not path.exists():
            continue
        for cs in etree.parse(str(path)).getroot().iter("codeset"):
            codes = frozenset(c.text or "" for c in cs.iterfind("version/code"))
            found[cs.findtext("id")] = found.get(cs.findtext("id"), frozenset()) | codes
    return found


def pack_elements(segment: Segment) -> None:
    """Keep ``segment``'s elements (``packed``) and its post-checks when it has any
    (``packed_post``) pickled, each to be unpickled on first use."""
    elements = segment.elements
    for element in elements:  # (the segment itself stays out of the pickle)
        element.parent = None
    segment.packed = pickle.dumps(elements, protocol=pickle.HIGHEST_PROTOCOL)
    del segment._elements  # (a pickled map holds them once, packed)
    if segment.post:
        segment.packed_post = pickle.dumps(segment.post, protocol=pickle.HIGHEST_PROTOCOL)
        del segment._post
