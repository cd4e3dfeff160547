"""Envelope and control-structure checks (ISA/IEA, GS/GE, ST/SE) that pyx12 misses or drops.

:class:`EnvelopeChecker` is fed segments one at a time (streaming) and builds the structure of
the file (interchanges → groups → transaction sets) that the acknowledgments are written from.
The element rules for ISA and GS are data in ``profiles/x12/envelope.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from gateway import yamlio

from gateway.findings import Finding
from gateway.paths import PROFILES
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.x12.reader import Delimiters, ReaderNotes, Segment

CONTROL_SEGMENTS = frozenset({"ISA", "IEA", "GS", "GE", "ST", "SE"})
# format -> (strptime pattern, lengths allowed); strptime alone accepts single digits
_DATE_FORMATS = {"yymmdd": ("%y%m%d", (6,)), "ccyymmdd": ("%Y%m%d", (8,)),
                 "hhmm": ("%H%M", (4,)), "hhmmss": ("%H%M%S", (4, 6, 7, 8))}
_FORMAT_NAMES = {"yymmdd": "a date YYMMDD", "ccyymmdd": "a date CCYYMMDD", "hhmm": "a time HHMM",
                 "hhmmss": "a time HHMM or HHMMSS[DD]"}


@dataclass(frozen=True)
class EnvelopeProfile:
    isa: list[dict]
    gs: list[dict]
    known_versions: frozenset[str]
    functional_groups: dict[str, str]
    guides: dict[str, dict]


@lru_cache(maxsize=1)
def envelope_profile() -> EnvelopeProfile:
    data = yamlio.load_file(PROFILES / "x12" / "envelope.yaml")
    return EnvelopeProfile(
        isa=data["isa"],
        gs=data["gs"],
        known_versions=frozenset(data["known_versions"]),
        functional_groups={str(k): v for k, v in data["functional_groups"].items()},
        guides={str(k): _guide(v) for k, v in data["guides"].items()},
    )


def _guide(entry: dict) -> dict:
    """A guide entry with ``transactions``: its ST01 values as a tuple."""
    found = entry.get("transaction", ())
    return {**entry, "transactions": (found,) if isinstance(found, str) else tuple(found)}


@lru_cache(maxsize=1)
def known_segment_ids() -> frozenset[str]:
    """Every segment id used by a map pyx12 ships (X12 5010 and 4010)."""
    import importlib.resources

    ids: set[str] = set()
    for entry in importlib.resources.files("pyx12").joinpath("map").iterdir():
        if entry.name.endswith(".xml"):
            ids.update(re.findall(r'<segment xid="([A-Z0-9]{2,3})"', entry.read_text("utf-8")))
    return frozenset(ids)


def shown_segment_id(seg_id: str) -> str:
    """The segment id fit for a message: a garbled "id" may be a piece of member data."""
    return seg_id if seg_id in known_segment_ids() else "(unrecognised id)"


@dataclass
class TransactionSet:
    index: int  # 1-based within the group
    st01: str
    st02: str
    st03: str
    start: int  # ordinal of ST
    end: int | None = None  # ordinal of SE
    segment_count: int = 1  # ST through the last segment seen
    rejected_codes: list[str] = field(default_factory=list)  # IK502 codes from envelope rules

    @property
    def path(self) -> str:
        return f"ST#{self.index}"


@dataclass
class Group:
    index: int
    gs: list[str]  # GS fields, fields[0] == "GS"
    start: int
    end: int | None = None
    transactions: list[TransactionSet] = field(default_factory=list)
    error_codes: list[str] = field(default_factory=list)  # AK905 codes

    @property
    def functional_id(self) -> str:
        return self.gs[1] if len(self.gs) > 1 else ""

    @property
    def control_number(self) -> str:
        return self.gs[6] if len(self.gs) > 6 else ""

    @property
    def version(self) -> str:
        return self.gs[8] if len(self.gs) > 8 else ""


@dataclass
class Interchange:
    index: int
    isa: list[str]
    start: int
    end: int | None = None
    groups: list[Group] = field(default_factory=list)
    ta1_codes: list[str] = field(default_factory=list)  # TA105 codes from envelope rules

    def field(self, position: int) -> str:
        return self.isa[position] if position < len(self.isa) else ""


class EnvelopeChecker:
    """Streaming envelope validation; call :meth:`feed` per segment, then :meth:`finish`."""

    def __init__(
        self,
        delimiters: Delimiters,
        notes: ReaderNotes | None = None,
        catalogue: RuleCatalogue | None = None,
    ) -> None:
        self.delimiters = delimiters
        self.catalogue = catalogue or default_catalogue()
        self.profile = envelope_profile()
        self.findings: list[Finding] = []
        self.interchanges: list[Interchange] = []
        self._isa_numbers: set[str] = set()
        self._group: Group | None = None
        self._ts: TransactionSet | None = None
        self._gs_numbers: set[str] = set()
        self._st_numbers: set[str] = set()
        self._notes = notes
        for problem in delimiters.problems():
            self._report("X12-ENV-021", "ISA", 1, None, found=problem)

    # -- reporting ---------------------------------------------------------------------------
    @property
    def interchange(self) -> Interchange | None:
        if self.interchanges and self.interchanges[-1].end is None:
            return self.interchanges[-1]
        return None

    def path(self, *, group: bool = True, ts: bool = True) -> str:
        parts = []
        if self.interchanges:
            parts.append(f"ISA#{self.interchanges[-1].index}")
        if group and self._group is not None:
            parts.append(f"GS#{self._group.index}")
        if ts and self._ts is not None:
            parts.append(self._ts.path)
        return "/".join(parts)

    def _report(self, rule_id: str, where: str, segment: int | None,
                scope: object | None, **values: object) -> None:
        finding = self.catalogue.finding(rule_id, where, segment, **values)
        if finding is None:
            return
        self.findings.append(finding)
        if not finding.is_error:
            return
        ack = self.catalogue.rule(rule_id).ack
        if isinstance(scope, Interchange) and "ta1" in ack:
            code = values.get("ta1") or ack["ta1"]
            scope.ta1_codes.append(str(code))
        elif isinstance(scope, Group) and "ak9" in ack:
            scope.error_codes.append(ack["ak9"])
        elif isinstance(scope, TransactionSet) and "ik5" in ack:
            scope.rejected_codes.append(ack["ik5"])

    # -- element rules -----------------------------------------------------------------------
    def _check_elements(self, seg: Segment, specs: list[dict], rule_id: str, scope) -> None:
        version = self.interchange.field(12) if self.interchange is not None else ""
        for spec in specs:
            if version in spec.get("by_version", {}):
                spec = {**spec, **spec["by_version"][version]}
                spec.pop("pattern", None) if "codes" in spec["by_version"][version] else None
            pos = spec["pos"]
            value = seg.get(pos)
            expected = self._violation(spec, value)
            if expected is None:
                continue
            if seg.id == "ISA" and pos == 12 and value in self.profile.known_versions:
                self._report("X12-ENV-017", f"{self.path(group=False)}/ISA12", seg.ordinal,
                             scope, found=value)
                continue
            element = f"{seg.id}{pos:02d}"
            # codes, dates and control numbers are shown; credentials and free ids are not
            if not value:
                found = "nothing"
            elif spec.get("show", True) and _showable(value, spec):
                found = repr(value)
            else:
                found = f"a value of {len(value)} characters"
            self._report(rule_id, f"{self.path(ts=False)}/{element}", seg.ordinal, scope,
                         element=element, name=spec["name"], expected=expected,
                         found=found, ta1=spec.get("ta1", ""))

    @staticmethod
    def _violation(spec: dict, value: str) -> str | None:
        if "codes" in spec and value not in spec["codes"]:
            return "one of " + ", ".join(spec["codes"])
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            return spec.get("expect") or f"must match {spec['pattern']}"
        if "format" in spec:
            pattern, lengths = _DATE_FORMATS[spec["format"]]
            text = value
            if spec["format"] == "hhmmss":  # HHMM[SS[D[D]]]: check the clock part
                text = (value + "00")[:6]
            if not value.isdigit() or len(value) not in lengths or not _parses(text, pattern):
                return _FORMAT_NAMES[spec["format"]]
        return None

    # -- the state machine -------------------------------------------------------------------
    def feed(self, seg: Segment) -> None:
        handler = _HANDLERS.get(seg.fields[0])
        if handler is not None:
            handler(self, seg)
            return
        if self._ts is None:
            self._out_of_place(seg, "data segments belong inside a transaction set (ST...SE)")
            return
        self._ts.segment_count += 1

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction set is open (its data segments are counted, not checked)."""
        return self._ts is not None

    def count_data(self, count: int) -> None:
        """What :meth:`feed` does with ``count`` data segments (not ISA/GS/ST/SE/GE/IEA) while
        :attr:`in_transaction`, without the segments (``validate --jobs``: segments the
        envelope need not see one by one)."""
        self._ts.segment_count += count

    def _out_of_place(self, seg: Segment, why: str) -> None:
        scope = self.interchange
        shown = shown_segment_id(seg.id)
        self._report("X12-ENV-019", f"{self.path()}/{shown}".lstrip("/"), seg.ordinal, scope,
                     found=shown, expected=why)

    def _on_isa(self, seg: Segment) -> None:
        if self.interchange is not None:
            self._close_interchange(seg.ordinal - 1, missing_trailer=True)
        ic = Interchange(index=len(self.interchanges) + 1, isa=seg.fields, start=seg.ordinal)
        self.interchanges.append(ic)
        self._gs_numbers = set()
        where = f"ISA#{ic.index}"
        if ic.index == 1 and self._notes is not None:
            if self._notes.preamble_chars:
                self._report("X12-ENV-001", where, seg.ordinal, ic,
                             count=self._notes.preamble_chars)
            if self._notes.isa_length != 106:
                self._report("X12-ENV-002", where, seg.ordinal, ic, found=self._notes.isa_length)
        if len(seg) != 16:
            self._report("X12-ENV-002", where, seg.ordinal, ic, found=f"{len(seg)} elements,")
        self._check_elements(seg, self.profile.isa, "X12-ENV-003", ic)
        if seg.get(11) and seg.get(11) != self.delimiters.repetition:
            pass  # the reader already took ISA11 as the repetition separator
        number = seg.get(13)
        if number in self._isa_numbers:
            self._report("X12-ENV-024", f"{where}/ISA13", seg.ordinal, ic, found=number)
        self._isa_numbers.add(number)

    def _on_gs(self, seg: Segment) -> None:
        ic = self.interchange
        if ic is None:
            self._out_of_place(seg, "GS must follow an ISA")
            return
        if self._group is not None:
            self._close_group(seg.ordinal - 1, missing_trailer=True)
        group = Group(index=len(ic.groups) + 1, gs=seg.fields, start=seg.ordinal)
        ic.groups.append(group)
        self._group = group
        self._st_numbers = set()
        before = len(ic.ta1_codes)
        self._check_elements(seg, self.profile.gs, "X12-ENV-014", ic)
        if len(ic.ta1_codes) > before and not re.fullmatch(r"[0-9]{1,9}", group.control_number):
            group.error_codes.append("6")
        number = group.control_number
        if number in self._gs_numbers:
            self._report("X12-ENV-022", f"{self.path(ts=False)}/GS06", seg.ordinal, group,
                         found=number)
        self._gs_numbers.add(number)
        version = group.version
        if version and version not in self.profile.guides:
            self._report("X12-ENV-018", f"{self.path(ts=False)}/GS08", seg.ordinal, group,
                         what="implementation guide GS08", found=version,
                         expected=", ".join(sorted(self.profile.guides)))

    def _on_st(self, seg: Segment) -> None:
        group = self._group
        if group is None:
            self._out_of_place(seg, "ST must follow a GS")
            return
        if self._ts is not None:
            self._close_ts(seg.ordinal - 1, missing_trailer=True)
        ts = TransactionSet(index=len(group.transactions) + 1, st01=seg.get(1),
                            st02=seg.get(2), st03=seg.get(3), start=seg.ordinal)
        group.transactions.append(ts)
        self._ts = ts
        where = self.path()
        expected_group = self.profile.functional_groups.get(ts.st01)
        guide_for_group = self.profile.guides.get(group.version)
        if expected_group is not None and expected_group != group.functional_id:
            self._report("X12-ENV-009", f"{where}/ST01", seg.ordinal, ts, found=ts.st01,
                         group=group.functional_id or "(blank)", expected=expected_group)
        elif expected_group is None or (
                guide_for_group and ts.st01 not in guide_for_group["transactions"]):
            self._report("X12-ENV-018", f"{where}/ST01", seg.ordinal, ts,
                         what="transaction set ST01", found=ts.st01 or "(blank)",
                         expected=", ".join(sorted({t for g in self.profile.guides.values()
                                                    for t in g["transactions"]})))
        guide = self.profile.guides.get(group.version, {})
        if ts.st03 != group.version and (ts.st03 or guide.get("st03", True)):
            self._report("X12-ENV-010", f"{where}/ST03", seg.ordinal, ts,
                         found=ts.st03 or "(blank)", expected=group.version or "(blank)")
        if not re.fullmatch(r"[0-9]{4,9}", ts.st02):
            self._report("X12-ENV-020", f"{where}/ST02", seg.ordinal, ts, element="ST02",
                         found=repr(ts.st02))
        elif ts.st02 in self._st_numbers:
            self._report("X12-ENV-013", f"{where}/ST02", seg.ordinal, ts, found=ts.st02)
        self._st_numbers.add(ts.st02)

    def _on_se(self, seg: Segment) -> None:
        ts = self._ts
        if ts is None:
            self._out_of_place(seg, "SE must close a transaction set opened by ST")
            return
        ts.segment_count += 1
        where = self.path()
        if seg.get(1) != str(ts.segment_count):
            self._report("X12-ENV-012", f"{where}/SE01", seg.ordinal, ts,
                         found=seg.get(1) or "nothing", expected=ts.segment_count)
        if seg.get(2) != ts.st02:
            self._report("X12-ENV-011", f"{where}/SE02", seg.ordinal, ts,
                         found=seg.get(2) or "nothing", expected=ts.st02)
        if ts.segment_count == 2:
            self._report("X12-ENV-025", where, seg.ordinal, ts)
        ts.end = seg.ordinal
        self._ts = None

    def _on_ge(self, seg: Segment) -> None:
        group = self._group
        if group is None:
            self._out_of_place(seg, "GE must close a functional group opened by GS")
            return
        if self._ts is not None:
            self._close_ts(seg.ordinal - 1, missing_trailer=True)
        where = self.path(ts=False)
        if seg.get(1) != str(len(group.transactions)):
            self._report("X12-ENV-008", f"{where}/GE01", seg.ordinal, group,
                         found=seg.get(1) or "nothing", expected=len(group.transactions))
        if seg.get(2) != group.control_number:
            self._report("X12-ENV-007", f"{where}/GE02", seg.ordinal, group,
                         found=seg.get(2) or "nothing", expected=group.control_number)
        group.end = seg.ordinal
        self._group = None

    def _on_iea(self, seg: Segment) -> None:
        ic = self.interchange
        if ic is None:
            self._out_of_place(seg, "IEA must close an interchange opened by ISA")
            return
        if self._group is not None:
            self._close_group(seg.ordinal - 1, missing_trailer=True)
        where = f"ISA#{ic.index}"
        if seg.get(1) != str(len(ic.groups)):
            self._report("X12-ENV-005", f"{where}/IEA01", seg.ordinal, ic,
                         found=seg.get(1) or "nothing", expected=len(ic.groups))
        if seg.get(2) != ic.field(13):
            self._report("X12-ENV-004", f"{where}/IEA02", seg.ordinal, ic,
                         found=seg.get(2) or "nothing", expected=ic.field(13))
        if not ic.groups:
            self._report("X12-ENV-023", where, seg.ordinal, ic)
        ic.end = seg.ordinal

    # -- unterminated structures ---------------------------------------------------------------
    def _close_ts(self, last: int, missing_trailer: bool) -> None:
        ts = self._ts
        if ts is None:
            return
        if missing_trailer:
            self._report("X12-ENV-016", self.path(), last, ts, control=ts.st02)
        ts.end = last
        self._ts = None

    def _close_group(self, last: int, missing_trailer: bool) -> None:
        if self._group is None:
            return
        self._close_ts(last, missing_trailer)
        if missing_trailer:
            self._report("X12-ENV-015", self.path(ts=False), last, self._group,
                         control=self._group.control_number)
        self._group.end = last
        self._group = None

    def _close_interchange(self, last: int, missing_trailer: bool) -> None:
        ic = self.interchange
        if ic is None:
            return
        self._close_group(last, missing_trailer)
        if missing_trailer:
            self._report("X12-ENV-006", f"ISA#{ic.index}", last, ic)
            if not ic.groups:
                self._report("X12-ENV-023", f"ISA#{ic.index}", last, ic)
        ic.end = last

    def finish(self, last_ordinal: int) -> list[Finding]:
        self._close_interchange(last_ordinal, missing_trailer=True)
        return self.findings


def _showable(value: str, spec: dict) -> bool:
    """Whether a bad value may be quoted back: a code-sized value, or digits (dates, times,
    control numbers) up to 15. In a garbled ISA any position can hold a member's name or CIN,
    which must never be echoed."""
    if len(value) <= 2:  # code-sized (as the implementation-guide findings quote codes)
        return True
    return len(value) <= 15 and value.replace(" ", "").isdigit()


def _parses(text: str, fmt: str) -> bool:
    """``datetime.strptime(text, fmt)`` succeeds: checked by hand for ASCII digit strings of
    the one length each pattern of :data:`_DATE_FORMATS` takes here (the first use of strptime
    costs ≈ 8 ms: importing _strptime, calendar, locale and building its regexes), by strptime
    otherwise. tests/test_x12_envelope_dates.py proves the two agree (exhaustively for HHMM and
    the dates' month/day ranges, by hypothesis over digit strings)."""
    if text.isascii() and text.isdigit():
        n = len(text)
        if fmt == "%y%m%d" and n == 6:
            yy = int(text[:2])  # strptime's %y: 69-99 -> 19xx, 00-68 -> 20xx
            return _is_date(yy + (1900 if yy >= 69 else 2000), int(text[2:4]), int(text[4:]))
        if fmt == "%Y%m%d" and n == 8:
            return _is_date(int(text[:4]), int(text[4:6]), int(text[6:]))
        if fmt == "%H%M" and n == 4:
            return int(text[:2]) < 24 and int(text[2:]) < 60
        if fmt == "%H%M%S" and n == 6:
            return int(text[:2]) < 24 and int(text[2:4]) < 60 and int(text[4:]) < 60
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_date(year: int, month: int, day: int) -> bool:
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= _MONTH_DAYS[month]:
        return False
    return month != 2 or day < 29 or (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0))


def feed_all(segments, envelope: EnvelopeChecker, feeds: tuple,
             data_feeds: tuple | None = None) -> tuple[int, int]:
    """Feed every segment to ``envelope`` and then to each function of ``feeds``, in order:
    what ``envelope.feed(seg)`` then ``feed(seg)`` for each does, with the data segments of an
    open transaction set counted in bulk rather than one call each. ``data_feeds`` (one per
    feed, or None): what to call instead for a data segment (not a control segment) of an
    open transaction set, doing what its feed does with such a segment without testing
    again whether it is one. Returns the ordinal of the last segment and the number of
    ``LX`` segments."""
    handlers = _HANDLERS
    ts = envelope._ts
    pending = 0  # data segments of ``ts`` not yet added to its count
    last = 0
    lines = 0
    if data_feeds is None:
        data_feeds = feeds
    for seg in segments:
        seg_id = seg.fields[0]
        if ts is not None and seg_id not in handlers:
            pending += 1
            for feed in data_feeds:
                feed(seg)
        else:
            if pending:
                ts.segment_count += pending
                pending = 0
            envelope.feed(seg)
            ts = envelope._ts
            for feed in feeds:
                feed(seg)
        if len(seg_id) == 2 and seg_id == "LX":  # (the length first: inline when compiled)
            lines += 1
        last = seg.ordinal
    if pending:
        ts.segment_count += pending
    return last, lines


_HANDLERS = {
    "ISA": EnvelopeChecker._on_isa,
    "GS": EnvelopeChecker._on_gs,
    "ST": EnvelopeChecker._on_st,
    "SE": EnvelopeChecker._on_se,
    "GE": EnvelopeChecker._on_ge,
    "IEA": EnvelopeChecker._on_iea,
}
