"""Implementation-guide (TR3) validation through pyx12, behind an adapter.

What the adapter adds to bare ``pyx12.x12n_document``:

- maps are parsed once per process and reused (pyx12 re-parses ~0.3 s per call);
- it is fed the segments our streaming reader already produced (one pass over the file, BOM,
  prose and odd delimiters handled before pyx12 sees anything);
- every pyx12 error becomes a :class:`~gateway.findings.Finding` with an exact location
  (``ISA#1/GS#1/ST#1/2300[3]/CLM05-1``), the 999 codes and the data element number;
- the ``pyx12`` logger, which logs element values (member data), is silenced;
- envelope segments are left to :mod:`gateway.x12.envelope`, which pyx12 gets wrong;
- known false positives of pyx12's maps are removed by the corrections in
  ``profiles/x12/pyx12-corrections.yaml``.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from functools import lru_cache
from threading import Lock

import pyx12.map_if
import pyx12.params
import pyx12.segment
import pyx12.x12file
import yaml
from pyx12.map_if._segment import apply_segment_errors
from pyx12.map_walker import apply_walk_errors, walk_tree

from gateway.findings import Finding
from gateway.paths import PROFILES
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.x12.envelope import CONTROL_SEGMENTS, EnvelopeChecker, shown_segment_id
from gateway.x12.reader import Delimiters, Segment


def silence_pyx12_logging() -> None:
    """pyx12 logs every error with the offending value: keep it out of our logs entirely."""
    logger = logging.getLogger("pyx12")
    logger.handlers[:] = [logging.NullHandler()]
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pyx12."):
            child = logging.getLogger(name)
            child.setLevel(logging.NOTSET)
            child.propagate = True


silence_pyx12_logging()


def _speed_up_node_counter() -> None:
    """pyx12 4.0.0 resets its loop counters on every loop entry by formatting every counter
    path twice and comparing strings: the largest single cost of validation. Same semantics,
    with the paths formatted once and memoised. Applied only to the version it was written
    against."""
    import pyx12.nodeCounter
    import pyx12.version

    if getattr(pyx12.version, "__version__", "") != "4.0.0":
        return
    # keyed by identity (X12Path hashes by formatting itself); the entry holds the path, so
    # its id cannot be reused while the entry lives
    formatted: dict[int, tuple[object, list[str]]] = {}

    def parts(path) -> list[str]:
        entry = formatted.get(id(path))
        if entry is not None and entry[0] is path:
            return entry[1]
        found = path.format().split("/")
        if len(formatted) >= 50_000:
            formatted.clear()
        formatted[id(path)] = (path, found)
        return found

    def reset_to_node(self, xpath) -> None:
        root = parts(pyx12.nodeCounter.NodeCounter.makeX12Path(xpath))
        size = len(root)
        for key in [k for k in self._dict if len(p := parts(k)) > size and p[:size] == root]:
            del self._dict[key]

    pyx12.nodeCounter.NodeCounter.reset_to_node = reset_to_node


_speed_up_node_counter()

_PARAMS = pyx12.params.params()
_MAP_LOCK = Lock()
_MAPS: dict[str, object] = {}
CONTROL_MAP = "x12.control.00501.xml"
MAX_QUOTED_CODE = 2
CLEAN_CACHE_SIZE = 200_000  # (map node, segment text) pairs known to be clean, per file
_TABLE_LEVELS = frozenset({"HEADER", "DETAIL", "FOOTER", "ST_LOOP", "GS_LOOP", "ISA_LOOP"})


def load_map(map_file: str):
    """The parsed pyx12 map, loaded once per process (thread-safe)."""
    found = _MAPS.get(map_file)
    if found is None:
        with _MAP_LOCK:
            found = _MAPS.get(map_file)
            if found is None:
                found = pyx12.map_if.load_map_file(map_file, _PARAMS)
                _MAPS[map_file] = found
                # a map is hundreds of thousands of objects that live as long as the process:
                # move them out of the collector's way so full collections stay cheap
                gc.freeze()
    return found


@dataclass(frozen=True)
class Correction:
    rule: str
    guide: str
    loop: str
    element: str
    when: dict
    allowed: frozenset

    def applies(self, rule: str, guide: str, loop: str, element: str, fields: list[str],
                value: str) -> bool:
        if (rule, guide, loop, element) != (self.rule, self.guide, self.loop, self.element):
            return False
        for key, wanted in self.when.items():
            position = int(key[-2:])
            if (fields[position] if position < len(fields) else "") != wanted:
                return False
        return value in self.allowed


@dataclass(frozen=True)
class RepeatCorrection:
    """A segment that pyx12 counts against the wrong one of two look-alike map entries: each
    occurrence is classified by one component and counted against its own limit."""

    rule: str
    guide: str
    loop: str
    segment: str
    kind_element: tuple[int, int]  # (element, component)
    limits: dict  # kind value -> max use; "*" for any other value

    def kind(self, fields: list[str], component_separator: str) -> str:
        position, component = self.kind_element
        value = fields[position] if position < len(fields) else ""
        parts = value.split(component_separator)
        found = parts[component - 1] if component <= len(parts) else ""
        return found if found in self.limits else "*"


def _element_ref(text: str) -> tuple[int, int]:
    element, _, component = text.partition("-")
    return int(element[-2:]), int(component or 1)


@lru_cache(maxsize=1)
def _corrections() -> tuple[tuple[Correction, ...], tuple[RepeatCorrection, ...]]:
    data = yaml.safe_load((PROFILES / "x12" / "pyx12-corrections.yaml").read_text("utf-8"))
    values = tuple(
        Correction(rule=c["rule"], guide=c["guide"], loop=c["loop"], element=c["element"],
                   when=c.get("when", {}), allowed=frozenset(c["allowed"]))
        for c in data.get("corrections", [])
    )
    repeats = tuple(
        RepeatCorrection(rule=c["rule"], guide=c["guide"], loop=c["loop"],
                         segment=c["segment"], kind_element=_element_ref(c["kind_element"]),
                         limits={str(k): int(v) for k, v in c["limits"].items()})
        for c in data.get("repeat_corrections", [])
    )
    return values, repeats


def corrections() -> tuple[Correction, ...]:
    return _corrections()[0]


_REFDES: dict[tuple[str | None, str], tuple[int | None, int | None]] = {}


class _Segment(pyx12.segment.Segment):
    """pyx12's segment with its reference-designator parsing memoised: it builds an X12Path
    for every element look-up (over a million calls on a 10k-claim file) from a few dozen
    distinct strings. Same results and errors as the original."""

    def _parse_refdes(self, ref_des: str) -> tuple[int | None, int | None]:
        key = (self.seg_id, ref_des)
        found = _REFDES.get(key)
        if found is None:
            found = super()._parse_refdes(ref_des)  # raises for a foreign segment id
            if len(_REFDES) < 10_000:
                _REFDES[key] = found
        return found


class _Feed(pyx12.x12file.X12Base):
    """pyx12's own segment bookkeeping (segment count in ST, HL and LX numbering), fed with
    segments instead of reading a file."""

    def __init__(self, delimiters: Delimiters) -> None:
        super().__init__()
        self.seg_term = delimiters.segment
        self.ele_term = delimiters.element
        self.subele_term = delimiters.component
        self.repetition_term = delimiters.repetition or None


@dataclass
class _Cursor:
    map_node: object | None = None
    seg_id: str = ""  # as shown in messages
    raw_id: str = ""  # as sent (for the 999's IK301, back to the submitter)
    position: int = 0  # segment position in the transaction set (ST = 1)
    element_node: object | None = None


class GuideValidator:
    """Validates the segments of the transaction sets whose GS08 names a supported guide."""

    def __init__(self, delimiters: Delimiters, envelope: EnvelopeChecker,
                 catalogue: RuleCatalogue | None = None) -> None:
        self.delimiters = delimiters
        self.envelope = envelope
        self.catalogue = catalogue or default_catalogue()
        self.findings: list[Finding] = []
        self._feed = _Feed(delimiters)
        self._walker = walk_tree()
        self._control = load_map(CONTROL_MAP)
        self._map = None
        self._guide = ""
        self._node = self._control.getnodebypath("/ISA_LOOP/ISA")
        self._cursor = _Cursor()
        self._segment: Segment | None = None
        self._loop_counts: dict[str, int] = {}
        self._loop_of_ordinal: dict[int, str] = {}
        self._active = False  # inside a group whose guide we validate
        self._repeat_counts: dict[str, int] = {}
        self._in_guide_ts = True  # False inside a set whose ST01 is not the guide's
        self._clean: set[tuple[int, str]] = set()

    # pyx12 error-handler interface (called by apply_walk_errors / apply_segment_errors) -----
    def add_seg(self, map_node, seg_data, seg_count, cur_line, ls_id) -> None:
        raw = seg_data.get_seg_id() or ""
        self._cursor = _Cursor(map_node, shown_segment_id(raw), raw[:3], seg_count)

    def add_ele(self, map_node) -> None:
        self._cursor.element_node = map_node

    def seg_error(self, err_cde, err_str, err_val=None, src_line=None) -> None:
        self._segment_finding(str(err_cde), err_str)

    def ele_error(self, err_cde, err_str, bad_value, refdes=None) -> None:
        self._element_finding(str(err_cde), bad_value)

    # feeding -------------------------------------------------------------------------------
    def feed(self, seg: Segment) -> None:
        seg_id = seg.id
        if seg_id == "GS":
            guide = self.envelope.profile.guides.get(seg.get(8))
            self._active = guide is not None and self.envelope.interchange is not None and \
                self.envelope.interchange.field(12) == "00501" and isinstance(guide["map"], str)
            if self._active:
                self._guide = seg.get(8)
                self._map = load_map(guide["map"])
                self._feed.check_837_lx = guide["transaction"] == "837"
        if seg_id == "ST" and self._active:
            guide = self.envelope.profile.guides[self._guide]
            self._in_guide_ts = seg.get(1) in guide["transactions"]
        if not self._active or not self._in_guide_ts:
            if seg_id == "SE":
                self._in_guide_ts = True
            return
        self._segment = seg
        text = seg.raw
        data = _Segment(text, self.delimiters.segment, self.delimiters.element,
                        self.delimiters.component, self.delimiters.repetition or "^")
        if text.endswith(self.delimiters.element):
            self._reader_error("SEG1", "")
        try:
            self._feed._parse_segment(data)
            node = self._walk(seg_id, data)
            for kind, code, err_str, _value, _line in self._feed.pop_errors():
                if kind == "seg" and seg_id not in CONTROL_SEGMENTS:
                    self._reader_error(code, err_str)
            if node is not None and seg_id not in CONTROL_SEGMENTS:
                self._check_segment(node, data, text)
        except Exception as exc:  # noqa: BLE001 - a pyx12 defect must not lose the file
            shown = shown_segment_id(seg_id)
            context = {"segment_id": shown, "position": self._feed.get_seg_count(), "loop": ""}
            self._add("X12-IG-ENGINE", f"{self.envelope.path()}/{shown}", context,
                      segment=shown, detail=exc.__class__.__name__)
        if seg_id == "GE":
            self._active = False

    def _check_segment(self, node, data, text: str) -> None:
        """Element-level checks. They depend only on the map node and the segment text, so a
        text already found clean at the same node is not checked again (most segments of an
        encounter file repeat: provider, payer, codes). Segments with errors always are."""
        key = (id(node), text)
        if key in self._clean:
            return
        self.add_seg(node, data, self._feed.get_seg_count(), 0, None)
        before = len(self.findings)
        apply_segment_errors(node, data, self)
        if len(self.findings) == before and len(self._clean) < CLEAN_CACHE_SIZE:
            self._clean.add(key)

    def _walk(self, seg_id: str, data):
        if seg_id == "ISA":
            self._node = self._control.getnodebypath("/ISA_LOOP/ISA")
            self._walker.forceWalkCounterToLoopStart("/ISA_LOOP", "/ISA_LOOP/ISA")
            return self._node
        if seg_id == "GS":
            self._walker.forceWalkCounterToLoopStart("/ISA_LOOP/GS_LOOP", "/ISA_LOOP/GS_LOOP/GS")
            self._node = self._map.getnodebypath("/ISA_LOOP/GS_LOOP/GS")
            return self._node
        if seg_id == "ST":
            self._loop_counts = {}
        if self._node is None:
            return None
        orig = self._node
        node, _pops, pushes, walk_errors = self._walker.walk_errors(
            self._node, data, self._feed.get_seg_count(), self._feed.get_cur_line(), None)
        for loop in pushes:
            self._loop_counts[loop.id] = self._loop_counts.get(loop.id, 0) + 1
            self._repeat_counts = {}
        if seg_id not in CONTROL_SEGMENTS:
            apply_walk_errors(self, walk_errors)
        if node is None:
            self._node = orig
            return None
        self._node = node
        return node

    # findings ------------------------------------------------------------------------------
    @staticmethod
    def _loop_id(map_node) -> str:
        """The TR3 loop (2300, 2010BA...) a map node sits in; "" for the table levels."""
        loop = map_node.get_parent() if map_node is not None else None
        loop_id = getattr(loop, "id", None) or ""
        return "" if loop_id in _TABLE_LEVELS else loop_id

    def _loop_path(self, map_node) -> str:
        loop_id = self._loop_id(map_node)
        return f"{loop_id}[{self._loop_counts.get(loop_id, 1)}]" if loop_id else ""

    def _where(self, map_node, tail: str) -> str:
        parts = [self.envelope.path()]
        loop = self._loop_path(map_node)
        if loop:
            parts.append(loop)
        parts.append(tail)
        return "/".join(p for p in parts if p)

    def _context(self, map_node, **extra) -> dict:
        return {"segment_id": self._cursor.raw_id, "position": self._cursor.position,
                "loop": self._loop_id(map_node), **extra}

    def _add(self, rule_id: str, where: str, context: dict, **values) -> None:
        if rule_id not in self.catalogue:
            rule_id = "X12-IG-OTHER"
        finding = self.catalogue.finding(rule_id, where, self._segment.ordinal, **values)
        if finding is not None:
            self.findings.append(finding.model_copy(update={"context": context}))

    def _segment_finding(self, code: str, err_str: str) -> None:
        node = self._cursor.map_node
        seg_id = self._cursor.seg_id
        name = getattr(node, "name", "") or ""
        if node is not None and getattr(node, "id", None) and node.id != seg_id and code in (
                "3", "I6", "I7", "I8"):
            seg_id = node.id  # a missing segment is reported under its own id
        detail = f' ("{name}")' if name else ""
        rule_id = f"X12-IG-SEG-{code}"
        if self._repeat_is_allowed(rule_id, self._loop_id(node), seg_id):
            return
        context = self._context(node)
        context["segment_id"] = seg_id
        self._add(rule_id, self._where(node, seg_id), context, segment=seg_id, detail=detail)

    def _repeat_is_allowed(self, rule_id: str, loop: str, seg_id: str) -> bool:
        for fix in _corrections()[1]:
            if (fix.rule, fix.guide, fix.loop, fix.segment) != (rule_id, self._guide, loop,
                                                                 seg_id):
                continue
            kind = fix.kind(self._segment.fields, self.delimiters.component)
            key = f"{seg_id}:{kind}"
            self._repeat_counts[key] = self._repeat_counts.get(key, 0) + 1
            return self._repeat_counts[key] <= fix.limits[kind]
        return False

    def _element_finding(self, code: str, bad_value: str | None) -> None:
        element = self._cursor.element_node
        seg_node = self._cursor.map_node
        parent = element.parent
        if parent.is_composite():
            position, component = parent.seq, element.seq
            label = f"{self._cursor.seg_id}{position:02d}-{component}"
        else:
            position, component = element.seq, None
            label = f"{self._cursor.seg_id}{position:02d}"
        rule_id = f"X12-IG-ELE-{code}"
        loop = self._context(seg_node)["loop"]
        value = bad_value or ""
        is_code = bool(element.valid_codes or element.external_codes)
        for fix in corrections():
            if fix.applies(rule_id, self._guide, loop, label, self._segment.fields, value):
                return
        # A bad code is quoted only when it is code-sized: in a garbled segment a code
        # position can hold a name or a member id, which must never be echoed.
        shown = is_code and 0 < len(value) <= MAX_QUOTED_CODE and code in ("7", "I6")
        detail = f" (found {value!r})" if shown else ""
        context = self._context(seg_node, element=position, component=component,
                                data_element=element.data_ele or "")
        self._add(rule_id, self._where(seg_node, label), context, element=label,
                  name=element.name, detail=detail)

    def _reader_error(self, code: str, err_str: str) -> None:
        seg = self._segment
        if code in ("HL1", "HL2"):
            rule_id = "X12-IG-HL-1" if code == "HL1" else "X12-IG-HL-2"
            expected = str(self._feed.hl_count) if code == "HL1" else ""
            context = {"segment_id": "HL", "position": self._feed.get_seg_count(), "loop": "",
                       "element": 1 if code == "HL1" else 2, "component": None,
                       "data_element": "628" if code == "HL1" else "734"}
            self._add(rule_id, f"{self.envelope.path()}/HL{1 if code == 'HL1' else 2:02d}",
                      context, found=seg.get(1 if code == "HL1" else 2), expected=expected)
        elif code == "LX":
            context = {"segment_id": "LX", "position": self._feed.get_seg_count(), "loop": "2400",
                       "element": 1, "component": None, "data_element": "554"}
            self._add("X12-IG-LX-1", f"{self.envelope.path()}/2400/LX01", context,
                      found=seg.get(1), expected=self._feed.lx_count)
        else:
            seg_id = shown_segment_id(seg.id)
            context = {"segment_id": seg.id[:3], "position": self._feed.get_seg_count(),
                       "loop": ""}
            # pyx12's own text may quote the segment (member data): use ours
            detail = " (the segment ends with an element separator)" if code == "SEG1" else ""
            code = "8" if code == "SEG1" else code
            self._add(f"X12-IG-SEG-{code}", f"{self.envelope.path()}/{seg_id}", context,
                      segment=seg_id, detail=detail)

    def finish(self) -> list[Finding]:
        return self.findings
