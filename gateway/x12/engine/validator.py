"""The native implementation-guide validator: same interface and findings as the pyx12 adapter
(:class:`gateway.x12.ig.GuideValidator`), driven by compiled maps.

Per segment: one cached *plan* look-up and replay for the structure (:mod:`.walker`), one
compiled pattern for the elements (:mod:`.elements`); the detailed checks run only for a
segment whose text the pattern rejects. Nothing is kept per segment or per claim: memory is
the compiled maps plus the findings.

Differences from pyx12, on purpose (each one a pyx12 defect, see README "X12 engine"):

- look-alike segments sharing a position (837P 2400 ``PWK``: DME CMN indicator vs line
  supplemental information) are resolved by trying every candidate: the first one whose
  elements are clean wins;
- repeat counts are per map node, not per path string (pyx12 counts the 999's Segment Context
  ``CTX`` and Business Unit ``CTX`` together and reports "exceeded max count");
- a composite with too many components is reported (pyx12 raises ``IndexError``);
- a segment marked "Not Used" is reported at itself, not at the segment before it;
- ISA12 ``00401`` and ``00405`` interchanges are read (pyx12 refuses ``00405``).
"""

from __future__ import annotations

import re
from array import array

from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.x12.engine.elements import check as check_elements
from gateway.x12.engine.elements import MAX_NOTE_POSITION, fast_pattern, head_source, \
    post_function, syntax_notes
from gateway.x12.engine.maps import Root, load, patterns
from gateway.x12.engine.walker import Counters, qualifier, trace
from gateway.x12.envelope import CONTROL_SEGMENTS, EnvelopeChecker, shown_segment_id
from gateway.x12.reader import Delimiters, Segment
from gateway.x12.snip import TRACK_IDS

SUPPORTED_VERSIONS = frozenset({"00401", "00405", "00501"})
MAX_QUOTED_CODE = 2
PLAN_CACHE_SIZE = 50_000
MEMO_SIZE = 25_000  # (node, segment text) steps known clean (then the memo starts afresh)
REST_MEMO_SIZE = 4096  # per HL/CLM node: texts after the first element its pattern accepted
_STATEFUL = frozenset({"HL", "LX", "CLM"})  # reader checks that depend on counts
_SEG_ID = re.compile(r"[A-Z][A-Z0-9]{1,2}")  # pyx12's rec_seg_id
# valid segment ids that carry no HL/LX numbering: the reader checks reduce to "not empty"
_PLAIN_IDS = frozenset(i for i in ("NM1", "N3", "N4", "REF", "PER", "DTP", "SV1", "SV2", "HI",
                                    "DMG", "SBR", "PRV", "PAT", "AMT", "NTE", "PWK", "CAS",
                                    "BHT", "K3", "CN1", "CR1", "CRC", "QTY", "MEA", "PS1",
                                    "SVD", "LIN", "CTP", "OI", "MOA", "MIA", "HCP", "TRN",
                                    "STC", "N1", "N2", "BPR", "CLP", "SVC", "PLB", "TS3",
                                    "TS2", "LQ", "IK3", "IK4", "IK5", "AK1", "AK2", "AK9",
                                    "CTX", "IK3"))
_GOOD_IDS: set[str] = set()
_UNIQUE = frozenset({"HL", "CLM"})  # segment texts not worth keeping in the memo
_TABLE_LEVELS = frozenset({"HEADER", "DETAIL", "FOOTER", "ST_LOOP", "GS_LOOP", "ISA_LOOP"})
# segment id -> its number for the SNIP claim tracking (snip.ClaimTracker.track; 0: none)
_TRACK_KINDS = {seg_id: number for number, seg_id in enumerate(TRACK_IDS, 1)}


def guide_map(guide: dict, st01: str) -> str | None:
    """The map file of a guide for one transaction set (``map`` may be a dict by ST01)."""
    found = guide.get("map")
    if isinstance(found, dict):
        return found.get(st01)
    return found


def guide_transactions(guide: dict) -> tuple[str, ...]:
    found = guide.get("transaction", ())
    return (found,) if isinstance(found, str) else tuple(found)


class _Step:
    """A walker plan with what the per-segment path needs of it as plain fields."""

    __slots__ = ("plan", "node", "index", "checks", "limit", "entry", "entry_index",
                 "entry_lo", "entry_hi", "entry_max", "push_ids", "candidates", "track")

    def __init__(self, plan, track: int = 0) -> None:
        self.plan = plan
        self.track = track  # the segment id's number for the SNIP claim tracking (0: none)
        node = plan.node
        self.node = node
        self.index = node.index if node is not None else -1
        self.candidates = plan.candidates
        self.push_ids = tuple(loop.id for loop in plan.pushes)
        # the inline replay (see walker.Plan): when every skipped required node was seen,
        # ``limit`` > 0 a matched segment's repeat limit, or ``entry`` the loop entered
        self.checks = plan.checks if plan.final is not None else ()
        self.limit = plan.limit if plan.final is not None else 0
        entry = plan.entry if plan.final is not None else None
        self.entry = entry
        self.entry_index = entry.index if entry is not None else 0
        self.entry_lo = entry.index + 1 if entry is not None else 0
        self.entry_hi = entry.end + 1 if entry is not None else 0
        self.entry_max = entry.max_repeat if entry is not None else 0


class NativeGuideValidator:
    """Validates the segments of the transaction sets whose GS08 names a supported guide."""

    engine = "native"

    def __init__(self, delimiters: Delimiters, envelope: EnvelopeChecker,
                 catalogue: RuleCatalogue | None = None, snip: bool = True) -> None:
        self.snip = snip  # SNIP 3-7 (profiles/rules/x12-snip.yaml) on top of SNIP 1-2
        self._snip = None
        self._snip_handlers: dict | None = None  # segment id -> SNIP 3-7 handler
        self._tracker = None  # the SNIP checker's claim tracking (None: no claim rules)
        self._snip_key: tuple | None = None  # (guide, receiver) of self._snip
        self.delimiters = delimiters
        self.envelope = envelope
        self.catalogue = catalogue or default_catalogue()
        self.findings: list[Finding] = []
        self._guide: dict | None = None
        self._guide_id = ""
        self._root: Root | None = None
        self._icvn = "00501"
        self._node = None
        self._node_index = -1  # the index of self._node (-1: none yet)
        self._counters: Counters | None = None
        self._counts = array("l")  # self._counters.counts
        self._zeros = array("l")
        self._seg_keys: dict = {}
        self._active = False
        self._in_ts = False
        self._plans: list = []  # per start node index: {segment id: {qualifier: _Step}}
        self._plan_count = 0
        self._memo: list[dict] = []  # per start node index: segment text -> _Step
        self._memo_size = 0
        self._loop_counts: dict[str, int] = {}
        self._hl_count = 0
        self._hl_stack: list[int] = []
        self._lx_count = 0
        self._check_lx = False
        self._position = 0
        self._segment: Segment | None = None
        self._path = ""
        self._patterns: list = []  # per node index: _compile_node's answer (None: not yet)
        self._pattern_key: tuple = ()
        self._store = None  # where the fast patterns are compiled (maps.patterns)
        self._sep = delimiters.element
        self._comp = delimiters.component

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, seg: Segment) -> None:
        fields = seg.fields
        seg_id = fields[0]
        if self._in_ts and seg_id not in CONTROL_SEGMENTS:  # the common case: a data segment
            self.feed_data(seg)
            return
        if seg_id == "GS":
            self._on_gs(seg)
            return
        if not self._active:
            return
        if seg_id == "ST":
            self._on_st(seg)
            return
        if not self._in_ts:
            if seg_id == "GE":
                self._active = False
            return
        self._segment = seg
        # SE, GE (and a stray ISA/IEA): structure only; required segments and loops never
        # seen are reported when SE closes the set (the pyx12 adapter drops these: it ignores
        # every walk error at SE)
        self._walk(seg, seg.fields, report=seg_id == "SE" and "missing")
        if seg_id == "SE":
            self._in_ts = False
            if self._snip is not None:
                self._snip.end_transaction()
        elif seg_id == "GE":
            self._active = False

    def feed_data(self, seg: Segment) -> None:
        """:meth:`feed` for a segment known to be a data segment (not a control segment) of an
        open transaction set (``envelope.feed_all``'s ``data_feeds``)."""
        if self._in_ts:
            fields = seg.fields
            self._segment = seg
            try:
                self._data(seg, fields, fields[0])
            except Exception as exc:  # noqa: BLE001 - a defect must not lose the file
                shown = shown_segment_id(fields[0])
                context = {"segment_id": shown, "position": self._position, "loop": ""}
                self._add("X12-IG-ENGINE", f"{self._path}/{shown}", context,
                          segment=shown, detail=exc.__class__.__name__)

    def _data(self, seg: Segment, fields: list, seg_id: str) -> None:
        """One data segment of a transaction set."""
        text = seg.raw
        start = self._node_index
        step = None
        if start >= 0:
            memo = self._memo[start]
            step = memo.get(text)
        if step is None:
            self._data_segment(seg, fields, seg_id, text)
            return
        # seen before from this node with no reader or element error: only the structure
        # counters (and the HL/LX numbering) can differ from last time
        self._position += 1
        reader_errors = None
        if seg_id in _STATEFUL:  # the numbering (the text itself passed before)
            if seg_id == "LX":
                if self._check_lx:
                    self._lx_count += 1
                    if fields[1] != _number(self._lx_count):
                        reader_errors = ["LX"]
            elif seg_id == "CLM":
                if self._check_lx:
                    self._lx_count = 0
            else:
                reader_errors = self._reader_checks(seg, fields)
        self._step(step, None, seg)
        if reader_errors:
            for code in reader_errors:
                self._reader_error(code, seg)
        # the memo holds only segments SNIP 3-7's element rules passed too (at this node,
        # which decides them with the text): only the claim tracking is left to do
        if step.track and self._tracker is not None:
            self._tracker.track(step.track, fields, step.node, seg.ordinal, self._position,
                                self._loop_counts)

    def _step(self, step: "_Step", chosen, seg: Segment) -> None:
        """Replay a step's structure operations on the counters; report what they find;
        move to the step's node (``chosen``: a look-alike that fitted better)."""
        # (self._counts indexed in place: a local copy of the memoryview costs two atomic
        # reference counts a segment in the compiled build)
        done = False
        if chosen is None:
            for index in step.checks:
                if self._counts[index] < 1:
                    break
            else:
                if step.limit:  # a segment of the current loop, not "Not Used"
                    index = step.index
                    self._counts[index] += 1
                    if self._counts[index] > step.limit:
                        self._walk_finding("5", step.node, step.node, seg)
                    done = True
                elif step.entry is not None:  # a loop entered by its first segment
                    lo = step.entry_lo
                    hi = step.entry_hi
                    if hi > lo:
                        self._counts[lo:hi] = self._zeros[lo:hi]
                    index = step.entry_index
                    self._counts[index] += 1
                    self._counts[step.index] += 1
                    loop_counts = self._loop_counts
                    for loop_id in step.push_ids:
                        loop_counts[loop_id] = loop_counts.get(loop_id, 0) + 1
                    if self._counts[index] > step.entry_max:
                        self._walk_finding("4", step.entry, step.entry, seg)
                    done = True
        if not done:
            errors: list = []
            self._counters.replay(step.plan, chosen, errors)
            loop_counts = self._loop_counts
            for loop_id in step.push_ids:
                loop_counts[loop_id] = loop_counts.get(loop_id, 0) + 1
            for code, where_node, subject in errors:
                self._walk_finding(code, where_node, subject, seg)
        if chosen is not None:
            self._node = chosen
            self._node_index = chosen.index
        elif step.node is not None:
            self._node = step.node
            self._node_index = step.index

    def _on_gs(self, seg: Segment) -> None:
        guide = self.envelope.profile.guides.get(seg.get(8))
        ic = self.envelope.interchange
        self._active = guide is not None and ic is not None and \
            ic.field(12) in SUPPORTED_VERSIONS
        self._in_ts = False
        if self._active:
            self._guide = guide
            self._guide_id = seg.get(8)
            self._icvn = ic.field(12)

    def _on_st(self, seg: Segment) -> None:
        self._in_ts = False
        if self.envelope.interchange is None:  # a set after its IEA (or before any ISA): the
            return  # envelope checks report it; no guide applies outside an interchange
        st01 = seg.get(1)
        if st01 not in guide_transactions(self._guide):
            return
        name = guide_map(self._guide, st01)
        if not name:
            return
        root = load(name)
        if root is not self._root:
            self._root = root
            self._counters = Counters(root)
            self._new_plans()
            self._new_memo()
        self._in_ts = True
        if self.snip:
            # one checker per guide and receiver, kept from set to set (its cache of clean
            # segments too); it starts each set afresh
            key = (self._guide_id, self.envelope.interchange.field(8).strip())
            if key != self._snip_key:
                from gateway.x12.snip import SnipChecker

                if self._snip is not None:
                    self._snip.close()
                checker = SnipChecker(self._snip_report, key[0], key[1], self._comp)
                self._snip_key = key
                self._snip = checker if checker.enabled else None
                # (the element rules alone: the claim tracking goes through _tracker)
                self._snip_handlers = checker.rule_handlers if checker.enabled else None
                self._tracker = checker.tracker if checker.enabled and checker.tracks \
                    else None
                self._new_memo()  # its entries passed the previous checker's rules
            if self._snip is not None:
                self._snip.start_transaction()
        self._path = self.envelope.path()  # ISA#i/GS#g/ST#t (the envelope saw ST first)
        self._check_lx = st01 == "837"
        self._icvn = root.icvn or self._icvn
        # patterns depend on the map and the charset (the key holds the root itself: an id
        # alone could be a dropped map's, recycled)
        if not self._pattern_key or self._pattern_key[0] is not root or \
                self._pattern_key[1] != self._icvn:
            self._pattern_key = (root, self._icvn)
            self._patterns = [None] * len(root.nodes)
            if self._store is not None:
                self._store.save()
            self._store = patterns(root, self._icvn)
            self._new_memo()
        self._loop_counts = {}
        self._hl_count = 0
        self._hl_stack = []
        self._lx_count = 0
        self._position = 1
        self._segment = seg
        # every transaction set starts afresh below GS_LOOP (pyx12: forced to the loop start)
        gs_loop = root.nodes[0]
        for node in root.nodes:
            if node.is_loop and node.id == "GS_LOOP":
                gs_loop = node
                break
        self._counts = self._counters.counts = array("l", [0]) * len(root.nodes)
        self._zeros = self._counters.zeros
        self._seg_keys = root.seg_keys
        self._node = gs_loop.first if gs_loop.first is not None else gs_loop
        self._node_index = self._node.index
        self._walk(seg, seg.fields, report=False)

    def _data_segment(self, seg: Segment, fields: list, seg_id: str, text: str) -> None:
        """A data segment not in the memo of clean steps from the current node."""
        memo = True  # nothing in the text itself is wrong (so far)
        if text.endswith(self._sep):
            self._reader_error("SEG1", seg)
            memo = False
        self._position += 1
        if seg_id in _PLAIN_IDS and len(fields) > 1 and fields[1]:
            reader_errors = None  # the common case: a known id, not empty, no numbering
        elif seg_id == "CLM" and len(fields) > 1 and fields[1]:
            reader_errors = None  # (what _reader_checks decides for it: the lines renumber)
            if self._check_lx:
                self._lx_count = 0
        else:
            reader_errors = self._reader_checks(seg, fields)
            if "8" in reader_errors or "1" in reader_errors:
                memo = False
        # the structure: a cached plan replayed on the counters
        start = self._node_index
        node = None
        step = None
        if start >= 0:
            step = self._plan(self._node, seg_id, fields)
            chosen = None
            if step.candidates:
                chosen = self._best_candidate(step.candidates, fields, text)
                memo = False
            self._step(step, chosen, seg)
            if step.node is not None:
                node = self._node
        if reader_errors:
            for code in reader_errors:
                self._reader_error(code, seg)
        if node is not None:
            found = self._patterns[self._node_index]  # node.index
            if found is None:
                found = self._compile_node(node)
            fullmatch = found[0]
            post = found[1]
            notes = found[2]
            if fullmatch is None:
                matched = False
            elif found[3] is not None and len(fields) > 1:
                # HL, CLM (never memoised: their first element counts or names them): the
                # rest of the text after the first element repeats; when this rest passed
                # before, the first element's own pattern decides (elements.head_source)
                rests = found[4]
                rest = text[len(seg_id) + 1 + len(fields[1]):]
                if rest in rests:
                    matched = found[3](fields[1]) is not None
                else:
                    matched = fullmatch(text) is not None
                    if matched:
                        if len(rests) >= REST_MEMO_SIZE:
                            rests.clear()
                        rests.add(rest)
            else:
                matched = fullmatch(text) is not None
            if matched and (post is None or post(fields)) and (
                    notes is None or _notes_ok(notes, fields)):
                clean = True
            else:
                clean = self._check_elements(node, fields)
            if step.track and self._tracker is not None:  # (then its element rules)
                self._tracker.track(step.track, fields, node, seg.ordinal, self._position,
                                    self._loop_counts)
            if self._snip_handlers is not None:
                handler = self._snip_handlers.get(seg_id)
                if handler is not None and handler(fields, node, seg.ordinal, self._position,
                                                   self._loop_counts, text):
                    memo = False  # a SNIP 3-7 element finding: checked again next time
            # (HL01 counts, CLM01 is the claim's own id: their texts never come back)
            if clean and memo and MEMO_SIZE and seg_id not in _UNIQUE:
                self._memo_size += 1
                if self._memo_size > MEMO_SIZE:
                    self._new_memo()
                self._memo[start][text] = step

    def _new_memo(self) -> None:
        self._memo = [{} for _ in self._root.nodes]
        self._memo_size = 0

    def _plan(self, start, seg_id: str, fields: list) -> "_Step":
        """The cached step (a plan and what the hot path needs of it) for a segment from
        ``start`` (traced on first use)."""
        positions = self._seg_keys.get(seg_id, ())
        if not positions:
            key = None
        elif len(positions) == 1 and not positions[0][1]:
            element = positions[0][0]
            key = fields[element] if element < len(fields) else None
        else:
            key = tuple([qualifier(fields, p, self._comp) for p in positions])
        # (by start node, then segment id, then qualifiers: no key tuple made and hashed)
        by_node: dict = self._plans[self._node_index]  # start.index (start is self._node)
        by_id: dict = by_node.get(seg_id)
        if by_id is None:
            by_id = by_node[seg_id] = {}
        step = by_id.get(key)
        if step is None:
            values = {p: qualifier(fields, p, self._comp) for p in positions}
            step = _Step(trace(start, seg_id, values), _TRACK_KINDS.get(seg_id, 0))
            self._plan_count += 1
            if self._plan_count > PLAN_CACHE_SIZE:
                self._new_plans()
                self._plan_count = 1
                by_id = self._plans[self._node_index][seg_id] = {}
            by_id[key] = step
        return step

    def _new_plans(self) -> None:
        self._plans = [{} for _ in self._root.nodes]
        self._plan_count = 0

    def _reader_checks(self, seg: Segment, fields: list) -> list:
        """pyx12's reader-level checks: empty segment, segment id, HL and LX numbering."""
        found = []
        seg_id = fields[0]
        if len(fields) == 1 or (not fields[1] and not any(fields[2:])):
            found.append("8")
        if seg_id not in _GOOD_IDS:
            if _SEG_ID.fullmatch(seg_id):
                if len(_GOOD_IDS) < 1000:
                    _GOOD_IDS.add(seg_id)
            else:
                found.append("1")
        if seg_id == "HL":
            self._hl_count += 1
            if self._hl_count != _int(fields[1] if len(fields) > 1 else ""):
                found.append("HL1")
            if len(fields) > 2 and fields[2] != "":
                parent = _int(fields[2])
                if parent not in self._hl_stack:
                    found.append("HL2")
                while self._hl_stack and parent != self._hl_stack[-1]:
                    del self._hl_stack[-1]
            self._hl_stack.append(self._hl_count)
        elif self._check_lx and seg_id == "CLM":
            self._lx_count = 0
        elif self._check_lx and seg_id == "LX":
            self._lx_count += 1
            if (fields[1] if len(fields) > 1 else "") != _number(self._lx_count):
                found.append("LX")
        return found

    # -- structure -------------------------------------------------------------------------
    def _walk(self, seg: Segment, fields: list[str], report):
        start = self._node
        if start is None:
            return None
        step = self._plan(start, fields[0], fields)
        plan = step.plan
        node = plan.node
        chosen = None
        if plan.candidates and report is True:
            chosen = self._best_candidate(plan.candidates, fields, seg.raw)
        errors: list = []
        self._counters.replay(plan, chosen, errors)
        loop_counts = self._loop_counts
        for loop_id in step.push_ids:
            loop_counts[loop_id] = loop_counts.get(loop_id, 0) + 1
        if errors and report:
            for code, where_node, subject in errors:
                if report == "missing" and code != "3":
                    continue
                self._walk_finding(code, where_node, subject, seg)
        if node is None:
            return None
        node = chosen or node
        self._node = node
        self._node_index = node.index
        return node

    def _best_candidate(self, candidates, fields: list[str], text: str):
        """Look-alike segments at one position: the first candidate whose elements are clean
        (pyx12 takes the first that matches the qualifier and reports its errors)."""
        for candidate in candidates:
            if self._is_clean(candidate, fields, text) or \
                    not check_elements(candidate, fields, self._icvn, self._comp):
                return None if candidate is candidates[0] else candidate
        return None

    # -- elements --------------------------------------------------------------------------
    def _compile_node(self, node) -> tuple:
        """(the fast pattern's ``fullmatch`` or None, post-check function or None, syntax
        notes or None) for a node, for this file: post-checks that are all syntax notes (the
        usual) are evaluated as bit masks (:func:`_notes_ok`), others by the compiled
        post-check function. (The bound ``fullmatch``: no method look-up per segment.)"""
        notes = syntax_notes(node) if node.post else None
        pattern = fast_pattern(node, self._icvn, self._sep, self._comp, self.delimiters.segment,
                               self._store)
        head = None  # (HL, CLM: their first element's pattern, and the rests that passed)
        if pattern is not None and node.id in _UNIQUE:
            source = head_source(node, self._icvn, self._sep, self._comp, self.delimiters.segment)
            if source is not None:
                try:
                    head = (re.compile(source, re.ASCII | re.S) if self._store is None else
                            self._store.compile(source, re.ASCII | re.S)).fullmatch
                except re.error:
                    head = None
        found = self._patterns[node.index] = (
            pattern.fullmatch if pattern is not None else None,
            post_function(node, self._comp) if notes is None else None, notes or None,
            head, set() if head is not None else None)
        return found

    def _is_clean(self, node, fields: list[str], text: str) -> bool:
        found = self._patterns[node.index]
        if found is None:
            found = self._compile_node(node)
        fullmatch, post, notes = found[0], found[1], found[2]
        return fullmatch is not None and fullmatch(text) is not None and (
            post is None or post(fields)) and (notes is None or _notes_ok(notes, fields))

    def _check_elements(self, node, fields: list[str]) -> bool:
        """The detailed element checks (the fast pattern rejected the segment): report what
        they find; True when they find nothing."""
        errors = check_elements(node, fields, self._icvn, self._comp)
        for code, element, value in errors:
            if element is None:
                self._segment_finding("8", node, shown_segment_id(fields[0]))
            else:
                self._element_finding(code, node, element, value, fields)
        return not errors

    # -- findings --------------------------------------------------------------------------
    @staticmethod
    def _loop_id(map_node) -> str:
        loop = map_node.parent if map_node is not None else None
        loop_id = getattr(loop, "id", None) or ""
        return "" if loop_id in _TABLE_LEVELS else loop_id

    def _where(self, map_node, tail: str) -> str:
        parts = [self._path]
        loop_id = self._loop_id(map_node)
        if loop_id:
            parts.append(f"{loop_id}[{self._loop_counts.get(loop_id, 1)}]")
        parts.append(tail)
        return "/".join(p for p in parts if p)

    def _add(self, rule_id: str, where: str, context: dict, **values) -> None:
        if rule_id not in self.catalogue:
            rule_id = "X12-IG-OTHER"
        finding = self.catalogue.finding(rule_id, where, self._segment.ordinal, **values)
        if finding is not None:
            self.findings.append(finding.model_copy(update={"context": context}))

    def _snip_report(self, rule_id: str, where, label: str, ordinal: int, context: dict,
                     **values) -> None:
        """A SNIP 3-7 finding (from :mod:`gateway.x12.snip`) with the IG findings' context."""
        if isinstance(where, tuple):  # (loop id, occurrence): a claim-level rule
            loop_id, count = where
        else:
            loop_id = self._loop_id(where)
            count = self._loop_counts.get(loop_id, 1)
        location = "/".join(p for p in (self._path, f"{loop_id}[{count}]" if loop_id else "",
                                         label) if p)
        finding = self.catalogue.finding(rule_id, location, ordinal, **values)
        if finding is not None:
            self.findings.append(finding.model_copy(update={"context": {**context,
                                                                       "loop": loop_id}}))

    def _walk_finding(self, code: str, node, subject, seg: Segment) -> None:
        shown = shown_segment_id(seg.fields[0])
        if code == "3":  # a missing segment (or the first segment of a missing loop)
            self._segment_finding(code, node, node.id)
        elif code == "2":  # "Not Used" segment or loop, reported at the segment itself
            self._segment_finding(code, subject, shown)
        else:
            self._segment_finding(code, node, shown)

    def _segment_finding(self, code: str, node, seg_id: str) -> None:
        name = getattr(node, "name", "") or ""
        detail = f' ("{name}")' if name else ""
        context = {"segment_id": seg_id, "position": self._position,
                   "loop": self._loop_id(node)}
        self._add(f"X12-IG-SEG-{code}", self._where(node, seg_id), context, segment=seg_id,
                  detail=detail)

    def _element_finding(self, code: str, seg_node, element, bad_value, fields) -> None:
        seg_id = shown_segment_id(fields[0])
        parent = element.parent
        if parent.is_composite():
            position, component = parent.seq, element.seq
            label = f"{seg_id}{position:02d}-{component}"
        else:
            position, component = element.seq, None
            label = f"{seg_id}{position:02d}"
        value = bad_value or ""
        is_code = bool(element.valid_codes or element.external)
        # a bad code is quoted only when it is code-sized (never a name or a member id)
        shown = is_code and 0 < len(value) <= MAX_QUOTED_CODE and code in ("7", "I6")
        detail = f" (found {value!r})" if shown else ""
        context = {"segment_id": fields[0][:3], "position": self._position,
                   "loop": self._loop_id(seg_node), "element": position,
                   "component": component, "data_element": element.data_ele or ""}
        self._add(f"X12-IG-ELE-{code}", self._where(seg_node, label), context, element=label,
                  name=element.name, detail=detail)

    def _reader_error(self, code: str, seg: Segment) -> None:
        path = self._path
        if code in ("HL1", "HL2"):
            first = code == "HL1"
            context = {"segment_id": "HL", "position": self._position, "loop": "",
                       "element": 1 if first else 2, "component": None,
                       "data_element": "628" if first else "734"}
            self._add("X12-IG-HL-1" if first else "X12-IG-HL-2",
                      f"{path}/HL{1 if first else 2:02d}", context,
                      found=seg.get(1 if first else 2),
                      expected=str(self._hl_count) if first else "")
        elif code == "LX":
            context = {"segment_id": "LX", "position": self._position, "loop": "2400",
                       "element": 1, "component": None, "data_element": "554"}
            self._add("X12-IG-LX-1", f"{path}/2400/LX01", context, found=seg.get(1),
                      expected=self._lx_count)
        else:
            seg_id = shown_segment_id(seg.fields[0])
            context = {"segment_id": seg.fields[0][:3], "position": self._position,
                       "loop": ""}
            detail = " (the segment ends with an element separator)" if code == "SEG1" else ""
            code = "8" if code == "SEG1" else code
            self._add(f"X12-IG-SEG-{code}", f"{path}/{seg_id}", context, segment=seg_id,
                      detail=detail)

    def finish(self) -> list[Finding]:
        if self._store is not None:  # the patterns compiled here, for the next process
            self._store.save()
        if self._snip is not None:  # its handlers refer back to it and to us: free them now
            self._snip.close()
            self._snip = self._snip_handlers = self._snip_key = self._tracker = None
        return self.findings


def _notes_ok(notes: tuple, fields: list) -> bool:
    """Whether ``fields`` meet every syntax note of :func:`~.elements.syntax_notes` (the
    decisions of :func:`~.elements.syntax_ok`: P all or none, R at least one, E at most one,
    C the first needs all the others, L the first needs one of them), on the bit mask of the
    elements present (non-empty)."""
    present = 0
    one = 1  # (a machine integer in the compiled build, as wide as the masks)
    top = len(fields)
    if top > MAX_NOTE_POSITION + 1:
        top = MAX_NOTE_POSITION + 1
    for i in range(1, top):
        if fields[i]:
            present |= one << i
    for note in notes:
        kind, mask, first, rest = note
        found = present & mask
        if kind == 0:  # P
            if found != 0 and found != mask:
                return False
        elif kind == 1:  # R
            if found == 0:
                return False
        elif kind == 2:  # E
            if found & (found - 1):
                return False
        elif present & first:
            if kind == 3:  # C
                if (present & rest) != rest:
                    return False
            elif (present & rest) == 0:  # L
                return False
    return True


_NUMBERS = tuple(str(n) for n in range(100))  # the usual line numbers' texts, made once


def _number(n) -> str:
    """``str(n)``."""
    return _NUMBERS[n] if 0 <= n < 100 else str(n)


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None
