"""837P segments → canonical :class:`~gateway.model.encounter.Encounter`, one claim at a time.

:class:`ClaimCollector` is fed the same segment stream as the validators and records, for each
claim, the segment ordinals it covers (its own 2300/2400 loops plus the billing-provider and
subscriber HL levels above it). The acknowledgments use those ranges to tell which claim a
finding belongs to. The parser is lenient: a claim it cannot turn into the model (bad amount,
bad date) keeps its record with ``encounter = None`` and the reason; the validators say why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from typing import TYPE_CHECKING

from gateway.x12.reader import Delimiters, Segment

if TYPE_CHECKING:  # the model (pydantic) loads with the first claim: not for other X12 kinds
    from gateway.model.encounter import Encounter


@dataclass(slots=True, eq=False)  # identity, not field equality: claims are compared by id
class ClaimRecord:
    """A claim as the acknowledgments and the split see it."""

    transaction: tuple[int, int, int]  # (interchange, group, transaction set) 1-based
    index: int  # 1-based claim number within the transaction set
    start: int  # ordinal of CLM
    end: int  # ordinal of the claim's last segment
    scope: list[tuple[int, int]]  # ordinal ranges of the HL levels above the claim
    claim_id: str
    charge: str
    member_last: str = ""
    member_first: str = ""
    member_id: str = ""
    billing_name: str = ""
    billing_npi: str = ""
    service_from: str = ""
    service_to: str = ""
    subscriber_index: int = 0  # occurrence of the member's 2010BA loop in the set
    line_refs: list[tuple[int, int]] = field(default_factory=list)  # (SV1 ordinal, 2400 no.)
    encounter: Encounter | None = None
    problem: str | None = None

    # written out (same fields, order and defaults as declared above): the __init__ the
    # dataclass would generate is exec'd Python, which the compiled build cannot speed up
    def __init__(self, transaction, index, start, end, scope, claim_id, charge,
                 member_last="", member_first="", member_id="", billing_name="",
                 billing_npi="", service_from="", service_to="", subscriber_index=0,
                 line_refs=None, encounter=None, problem=None) -> None:
        self.transaction = transaction
        self.index = index
        self.start = start
        self.end = end
        self.scope = scope
        self.claim_id = claim_id
        self.charge = charge
        self.member_last = member_last
        self.member_first = member_first
        self.member_id = member_id
        self.billing_name = billing_name
        self.billing_npi = billing_npi
        self.service_from = service_from
        self.service_to = service_to
        self.subscriber_index = subscriber_index
        self.line_refs = [] if line_refs is None else line_refs
        self.encounter = encounter
        self.problem = problem

    def covers(self, ordinal: int) -> bool:
        if self.start <= ordinal <= self.end:
            return True
        return any(lo <= ordinal <= hi for lo, hi in self.scope)


def _date(text: str) -> date:
    if len(text) != 8 or not text.isdigit():
        raise ValueError("not a CCYYMMDD date")
    return date(int(text[:4]), int(text[4:6]), int(text[6:]))


_DAYS: dict[str, date] = {}


def _day(text: str) -> date:
    """:func:`_date`, memoised (a claim file has few distinct service dates)."""
    days: dict = _DAYS  # (typed: a C dict look-up in the compiled build)
    found = days.get(text)
    if found is None:
        if len(days) > 4096:
            days.clear()
        found = days[text] = _date(text)
    return found


def _is_day(text: str) -> bool:
    """Whether :func:`_day` reads ``text`` (a CCYYMMDD date: 8 digits, year 1-9999, a day of
    the month in the proleptic Gregorian calendar, as :class:`datetime.date` takes it),
    without building the date: by hand for ASCII digits (the usual; a member's birth date
    rarely repeats, so the memo would miss), by :func:`_day` otherwise."""
    if len(text) != 8:
        return False
    if not text.isascii():
        try:
            _day(text)
        except (ValueError, TypeError):
            return False
        return True
    for ch in text:
        if ch < "0" or ch > "9":
            return False
    year = (ord(text[0]) - 48) * 1000 + (ord(text[1]) - 48) * 100 + \
        (ord(text[2]) - 48) * 10 + ord(text[3]) - 48
    month = (ord(text[4]) - 48) * 10 + ord(text[5]) - 48
    day = (ord(text[6]) - 48) * 10 + ord(text[7]) - 48
    if year < 1 or month < 1 or month > 12 or day < 1:
        return False
    if month == 2:
        top = 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        top = 30
    else:
        top = 31
    return day <= top


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {text!r}") from exc


class _Level:
    """An open HL level: its ordinal range and what it carries. (A plain class with slots:
    a dataclass's generated ``__init__`` is exec'd Python, one made per HL.)"""

    __slots__ = ("code", "start", "end", "data")

    def __init__(self, code: str, start: int, end: int, data: dict | None = None) -> None:
        self.code = code
        self.start = start
        self.end = end
        self.data = {} if data is None else data


class ClaimCollector:
    """Streaming 837P reader. Feed segments, collect :class:`ClaimRecord` via ``on_claim``."""

    def __init__(self, delimiters: Delimiters, on_claim,
                 keep_encounters: bool | str = True, spans=None) -> None:
        """``keep_encounters``: True, each readable claim's ``encounter`` is the canonical
        model; ``"rules"``, a :class:`~gateway.model.view.ClaimView` (what the ECM rules read;
        the model only for a claim in doubt); False, none (readability is still checked).
        ``spans`` (with ``keep_encounters`` False; a :class:`~gateway.x12.acks.ClaimSpans`,
        where ``on_claim``'s records go too): a professional claim the light reading vouches
        for goes there as a span (:meth:`_light`), no record built; the others (the claims
        it cannot vouch for, read again in full) go to ``on_claim`` as records, in file order.
        """
        self.d = delimiters
        self.on_claim = on_claim
        self.keep = keep_encounters
        self._tx = (0, 0, 0)
        self._envelope: dict = {}
        self._header: dict = {}
        self._billing: _Level | None = None
        self._subscriber: _Level | None = None
        self._claim: dict | None = None
        self._line: dict | None = None
        self._claim_index = 0
        self._in_837 = False
        self._last = 0
        self._nm1_role = ""
        self._professional = False
        self._subscribers_in_st = 0
        self._lines_in_st = 0
        self.submitters: dict[tuple[int, int, int], tuple[str, str]] = {}
        self._sv1: dict = {}  # SV1 text -> what _read_sv1 takes from it
        self._levels_known = None  # (subscriber data, billing data, _levels_readable's answer)
        self._hi: dict = {}  # HI text -> (qualifier, diagnosis codes)
        # light reading (see _light): the open claim's segments while it is read light
        self._spans = spans if spans is not None and not keep_encounters else None
        self._buf: list | None = None
        self._replaying = False
        self._l_ok = False  # nothing seen so far keeps the light claim from being vouched for
        self._l_open = False  # a line (LX) is open
        self._l_plain = False  # the open line's last SV1 is plain (_read_sv1)
        self._l_date = False  # the open line's last DTP*472 holds readable dates
        self._l_diag = 0  # diagnosis codes
        self._l_lines = 0  # lines
        self._l_lines_at = 0  # self._lines_in_st at the claim's CLM
        self._dtp: dict = {}  # DTP text -> whether its dates read (_dates_read)
        self._spans_ready: list = []  # spans of claims vouched for, not yet handed over,
        self._spans_tx = None  # all of this transaction set

    # -- helpers -----------------------------------------------------------------------------
    def feed(self, seg: Segment) -> None:
        seg_id = seg.fields[0]
        if seg_id in _CONTROL:
            self._control(seg, seg_id)
            return
        self.feed_data(seg)

    def feed_data(self, seg: Segment) -> None:
        """:meth:`feed` for a segment known not to be a control segment
        (``envelope.feed_all``'s ``data_feeds``)."""
        if not self._in_837:
            return
        seg_id = seg.fields[0]
        # the open claim ends here so far (its record takes it when it is flushed); the open
        # HL level's end is set where it stops growing (_level_ends), not on every segment
        self._last = seg.ordinal
        kinds: dict
        handlers: dict
        if self._buf is not None:
            kinds = _LIGHT_KINDS  # (typed: a C dict look-up, not a method call)
            kind = kinds.get(seg_id, 0)
            if kind != _ENDS_CLAIM:
                if self._light(seg, seg_id, kind):
                    return
                self._to_full()  # a segment the light reading does not follow: read in full
        handlers = _HANDLERS
        handler = handlers.get(seg_id)
        if handler is not None:
            try:
                handler(self, seg)
            except (ValueError, IndexError) as exc:
                target = self._claim
                if target is not None and target.get("problem") is None:
                    target["problem"] = f"{seg_id}: {exc.__class__.__name__}"

    def _control(self, seg: Segment, seg_id: str) -> None:
        """ISA, GS, ST open a new scope; SE, GE, IEA close an 837 transaction set."""
        self._levels_known = None  # (no claim open after this: the levels may change)
        if seg_id == "ISA":
            self._flush_claim()
            self._tx = (self._tx[0] + 1, 0, 0)
            self._envelope = {"sender_id": seg.get(6).strip(), "receiver_id": seg.get(8).strip(),
                              "interchange_control_number": seg.get(13),
                              "usage": seg.get(15) or "P"}
            return
        if seg_id == "GS":
            self._flush_claim()
            self._tx = (self._tx[0], self._tx[1] + 1, 0)
            self._envelope.update(application_sender=seg.get(2),
                                  application_receiver=seg.get(3),
                                  group_control_number=seg.get(6))
            return
        if seg_id == "ST":
            self._flush_claim()
            self._tx = (self._tx[0], self._tx[1], self._tx[2] + 1)
            self._in_837 = seg.get(1) == "837"
            # only professional claims become canonical encounters; others are still counted
            self._professional = seg.get(3) == "005010X222A1"
            self._envelope["transaction_control_number"] = seg.get(2)
            self._header, self._billing, self._subscriber = {}, None, None
            self._claim_index = 0
            self._subscribers_in_st = 0
            self._lines_in_st = 0
            return
        if self._in_837:  # SE, GE, IEA
            self._flush_claim()
            self._in_837 = False

    # -- header and HL levels ----------------------------------------------------------------
    # (``f``: the fields, padded with _PAD when shorter than the handler reads: element n is
    # f[n], "" when absent, as Segment.get gives it)
    def _on_BHT(self, seg: Segment) -> None:
        f = seg.fields
        if len(f) < 5:
            f = f + _PAD
        self._envelope["reference"] = f[3]
        try:
            self._envelope["created"] = _date(f[4])
        except ValueError:
            self._envelope["created"] = None

    def _level_ends(self, ordinal) -> None:
        """The innermost open HL level (billing or subscriber) grows up to ``ordinal`` when no
        claim is open: called by the two segments that stop it growing (HL, CLM). A level is
        read only while a claim under it is open, so its end is always current then."""
        # (a claim read light and then again in full: its CLM set the end the first time)
        if self._claim is None and self._buf is None and not self._replaying:
            level = self._subscriber if self._subscriber is not None else self._billing
            if level is not None:
                level.end = ordinal

    def _on_HL(self, seg: Segment) -> None:
        self._level_ends(seg.ordinal)
        self._flush_claim()
        self._levels_known = None  # (an HL 23 keeps the subscriber level, which may change)
        f = seg.fields
        if len(f) < 4:
            f = f + _PAD
        level = _Level(f[3], seg.ordinal, seg.ordinal, {})
        code = level.code
        if code == "20":
            self._billing, self._subscriber = level, None
        elif code == "22":
            self._subscriber = level
            self._subscribers_in_st += 1
            level.data["index"] = self._subscribers_in_st
        elif code == "23" and self._subscriber is not None:
            # a patient level under the subscriber: its segments belong to the claim's scope
            self._subscriber.data["patient_level"] = True
        self._nm1_role = ""

    def _on_NM1(self, seg: Segment) -> None:
        f = seg.fields
        if len(f) < 10:
            f = f + _PAD
        role = f[1]
        self._nm1_role = role
        claim = self._claim
        if claim is not None and claim.get("other_payer") and self._line is None:
            return  # 2330x: other subscriber / other payer names, not carried by the model
        if role == "41":
            self._header["submitter"] = {"name": f[3], "id": f[9]}
            self.submitters[self._tx] = (f[3], f[9])
        elif role == "40":
            self._header["receiver"] = {"name": f[3], "id": f[9]}
        elif role == "85" and self._billing is not None and claim is None:
            self._billing.data["name"] = _name(f)
        elif role == "IL" and self._subscriber is not None and claim is None:
            self._subscriber.data["member"] = _name(f)
        elif role == "PR" and self._subscriber is not None and claim is None:
            self._subscriber.data["payer"] = {"name": f[3], "id": f[9]}
        elif role == "82" and claim is not None:
            target = self._line if self._line is not None else claim
            target["rendering"] = _name(f)

    def _on_PER(self, seg: Segment) -> None:
        if self._nm1_role == "41" and "submitter" in self._header:
            f = seg.fields
            if len(f) < 9:
                f = f + _PAD
            self._header["submitter"]["contact_name"] = f[2] or None
            phone = next((f[i + 1] for i in (3, 5, 7) if f[i] == "TE"), None)
            self._header["submitter"]["contact_phone"] = phone

    def _address_target(self) -> dict | None:
        if self._claim is not None:
            return None
        if self._nm1_role == "85" and self._billing is not None:
            return self._billing.data
        if self._nm1_role == "IL" and self._subscriber is not None:
            return self._subscriber.data
        return None

    def _on_N3(self, seg: Segment) -> None:
        target = self._address_target()
        if target is not None:
            f = seg.fields
            if len(f) < 3:
                f = f + _PAD
            target["address"] = {"line1": f[1], "line2": f[2] or None}

    def _on_N4(self, seg: Segment) -> None:
        target = self._address_target()
        if target is not None and "address" in target:
            f = seg.fields
            if len(f) < 4:
                f = f + _PAD
            address: dict = target["address"]
            address["city"] = f[1]
            address["state"] = f[2]
            address["postal_code"] = f[3]

    def _on_PRV(self, seg: Segment) -> None:
        f = seg.fields
        if len(f) < 4:
            f = f + _PAD
        if f[1] == "BI" and self._billing is not None and self._claim is None:
            self._billing.data["taxonomy"] = f[3]
        elif f[1] == "PE" and self._claim is not None:
            target = self._line if self._line is not None else self._claim
            if "rendering" in target:
                target["rendering"]["taxonomy"] = f[3]

    def _on_REF(self, seg: Segment) -> None:
        f = seg.fields
        if len(f) < 3:
            f = f + _PAD
        qualifier = f[1]
        if self._claim is None:
            if qualifier in ("EI", "SY") and self._billing is not None and \
                    self._subscriber is None:
                self._billing.data["tin"] = f[2]
            return
        if self._line is not None:
            if qualifier == "6R":
                self._line["line_control_number"] = f[2]
        elif qualifier == "G1":
            self._claim["prior_authorization"] = f[2]
        elif qualifier == "F8":
            self._claim["payer_claim_control_number"] = f[2]

    def _on_SBR(self, seg: Segment) -> None:
        if self._claim is not None:
            self._claim["other_payer"] = True  # 2320: other subscriber information
        elif self._subscriber is not None:
            f = seg.fields
            if len(f) < 10:
                f = f + _PAD
            self._subscriber.data["sbr"] = (f[1], f[9])

    def _on_DMG(self, seg: Segment) -> None:
        if self._subscriber is not None and self._nm1_role == "IL":
            f = seg.fields
            if len(f) < 4:
                f = f + _PAD
            self._subscriber.data["dmg"] = (f[2], f[3])

    # -- claim and lines ---------------------------------------------------------------------
    def _on_CLM(self, seg: Segment) -> None:
        self._level_ends(seg.ordinal)
        self._flush_claim()
        self._claim_index += 1
        f = seg.fields
        if self._spans is not None and self._professional and not self._replaying:
            self._buf = [seg]  # read light (see _light)
            self._l_ok = _plain_amount(f[2] if len(f) > 2 else "")
            self._l_open = False
            self._l_diag = self._l_lines = 0
            self._l_lines_at = self._lines_in_st
            self._line = None
            return
        if len(f) < 10:
            f = f + _PAD
        facility = f[5].split(self.d.component)
        self._claim = {
            "start": seg.ordinal, "index": self._claim_index,
            "id": f[1], "charge": f[2],
            "pos": facility[0] if facility else "",
            "freq": facility[2] if len(facility) > 2 else "",
            "flags": (f[6], f[7], f[8], f[9]),
            "diagnoses": [], "dx_qualifier": "ABK", "lines": [], "problem": None,
        }
        self._line = None

    def _on_HI(self, seg: Segment) -> None:
        claim: dict = self._claim
        if claim is None:
            return
        found: tuple = self._hi_of(seg)
        if found[0]:
            claim["dx_qualifier"] = found[0]
        claim["diagnoses"].extend(found[1])

    def _hi_of(self, seg: Segment) -> tuple:
        """(qualifier of the principal diagnosis or "", codes) of an HI, read once per HI text
        (a file repeats its diagnosis lists)."""
        found = self._hi.get(seg.raw)
        if found is None:
            found = self._read_hi(seg.fields)
            if len(self._hi) >= SEGMENT_CACHE_SIZE:
                self._hi.clear()
            self._hi[seg.raw] = found
        return found

    def _read_hi(self, fields: list) -> tuple:
        """(qualifier of the principal diagnosis or "", diagnosis codes) of an HI."""
        comp = self.d.component
        qualifier = ""
        codes = []
        for value in fields[1:]:
            parts = value.split(comp)
            if len(parts) >= 2 and parts[0] in ("ABK", "ABF", "BK", "BF"):
                if parts[0] in ("ABK", "BK"):
                    qualifier = parts[0]
                codes.append(parts[1])
        return (qualifier, codes)

    def _on_LX(self, seg: Segment) -> None:
        if self._claim is None:
            return
        self._lines_in_st += 1
        fields = seg.fields
        self._line = {"number": fields[1] if len(fields) > 1 else "",
                      "st_index": self._lines_in_st, "ordinal": seg.ordinal}
        self._claim["lines"].append(self._line)

    def _on_SV1(self, seg: Segment) -> None:
        line: dict = self._line
        if line is None:
            return
        line["ordinal"] = seg.ordinal
        line.update(self._sv1_of(seg))  # (its lists are shared, never changed: the model copies them)

    def _sv1_of(self, seg: Segment) -> dict:
        """What a line takes from an SV1 (:meth:`_read_sv1`), read once per SV1 text (a file
        repeats its service lines)."""
        parsed = self._sv1.get(seg.raw)
        if parsed is None:
            parsed = self._read_sv1(seg.fields)
            if len(self._sv1) >= SEGMENT_CACHE_SIZE:
                self._sv1.clear()
            self._sv1[seg.raw] = parsed
        return parsed

    def _read_sv1(self, f: list) -> dict:
        """What a line takes from its SV1, and ``plain``: whether the readability check
        (:meth:`_surely_readable`) can rely on it (amounts plain, few modifiers and pointers,
        every pointer a number)."""
        if len(f) < 8:
            f = f + _PAD
        comp = self.d.component
        procedure = f[1].split(comp)
        modifiers = [m for m in procedure[2:6] if m]
        pointers = [p for p in f[7].split(comp) if p]
        plain = _plain_amount(f[2]) and _plain_amount(f[4]) and \
            len(modifiers) <= MAX_MODIFIERS and len(pointers) <= MAX_POINTERS
        if plain:
            try:
                for pointer in pointers:
                    int(pointer)
            except ValueError:
                plain = False
        return {"code": procedure[1] if len(procedure) > 1 else "", "modifiers": modifiers,
                "charge": f[2], "unit_type": f[3] or "UN", "units": f[4],
                "pos": f[5] or None, "pointers": pointers, "plain": plain}

    def _on_DTP(self, seg: Segment) -> None:
        line: dict = self._line
        if line is not None:
            f = seg.fields
            if len(f) < 4:
                f = f + _PAD
            if f[1] == "472":
                value = f[3]
                if f[2] == "RD8" and "-" in value:
                    start, end = value.split("-", 1)
                    line["date"], line["date_end"] = start, end
                else:
                    line["date"], line["date_end"] = value, None

    def finish(self) -> None:
        """End of input: a claim still open (truncated file) is recorded too."""
        self._flush_claim()
        if self._spans_ready:
            self._hand_spans()

    # -- building the record -----------------------------------------------------------------
    # -- the light reading (claims that only go to a report's counts) ----------------------
    def _light(self, seg: Segment, seg_id: str, kind) -> bool:
        """A segment of a claim read light (``kind``: its id's number in
        :data:`_LIGHT_KINDS`, 0 for another id): what :meth:`_surely_readable` would need of
        it is noted, the segment kept to read the claim again in full if it cannot be vouched
        for. False for a segment the light reading does not follow (one that may change the
        header or the levels: NM1*41/40, PER, DMG, BHT; or a claim too long to vouch for)."""
        f = seg.fields
        buf: list = self._buf
        if len(buf) >= LIGHT_SEGMENTS:
            return False
        if kind == 1:  # SV1
            if self._l_open:
                self._l_plain = self._sv1_of(seg)["plain"]
        elif kind == 2:  # DTP
            if self._l_open and len(f) > 1 and f[1] == "472":
                known = self._dtp.get(seg.raw)
                if known is None:
                    known = _dates_read(f)
                    if len(self._dtp) >= SEGMENT_CACHE_SIZE:
                        self._dtp.clear()
                    self._dtp[seg.raw] = known
                self._l_date = known
        elif kind == 3:  # LX
            if self._l_open and not (self._l_plain and self._l_date):
                self._l_ok = False
            self._lines_in_st += 1
            self._l_lines += 1
            self._l_open = True
            self._l_plain = self._l_date = False
            try:
                int(f[1] if len(f) > 1 else "")
            except ValueError:
                self._l_ok = False
        elif kind == 4:  # HI
            self._l_diag += len(self._hi_of(seg)[1])
        elif kind == 5:  # NM1
            role = f[1] if len(f) > 1 else ""
            if role == "41" or role == "40":
                return False
            self._nm1_role = role
        elif kind == 6:  # N3, N4
            return True  # (no address is taken inside a claim)
        elif kind != 7:  # (7: REF, PRV, SBR: only kept)
            return seg_id not in _HANDLERS  # (a segment no handler reads: nothing to do)
        buf.append(seg)
        return True

    def _to_full(self) -> None:
        """Read the claim open light again in full (its segments so far): from here on it is
        ``self._claim``, exactly as if every segment had gone to the full handlers."""
        buf: list = self._buf
        self._buf = None
        self._claim_index -= 1
        self._lines_in_st = self._l_lines_at
        self._replaying = True
        try:
            for seg in buf:
                seg_id = seg.fields[0]
                try:
                    _HANDLERS[seg_id](self, seg)
                except (ValueError, IndexError) as exc:
                    target = self._claim
                    if target is not None and target.get("problem") is None:
                        target["problem"] = f"{seg_id}: {exc.__class__.__name__}"
        finally:
            self._replaying = False

    def _light_done(self) -> bool:
        """Close the claim open light: True when :meth:`_surely_readable` would accept it (its
        span recorded), else False (then it was read again in full: ``self._claim``)."""
        if self._l_open and not (self._l_plain and self._l_date):
            self._l_ok = False
        ok = self._l_ok and 1 <= self._l_diag <= MAX_DIAGNOSES and \
            1 <= self._l_lines <= MAX_LINES
        billing = self._billing
        subscriber = self._subscriber
        if ok:
            header = self._header
            sub: dict = subscriber.data if subscriber is not None else {}
            ok = "submitter" in header and "receiver" in header and \
                self._levels_readable(sub, billing.data if billing is not None else {})
            if ok:
                dob = sub.get("dmg", ("", ""))[0]
                if dob and not _is_day(dob):
                    ok = False
        if not ok:
            self._to_full()
            return False
        start = self._buf[0].ordinal
        self._buf = None
        if self._tx is not self._spans_tx or len(self._spans_ready) >= SPANS_BATCH:
            self._hand_spans()
            self._spans_tx = self._tx
        # (as ClaimSpans.add records it: start, end, then the first two ranges of the scope
        # as _flush_claim makes it, the billing level, then the subscriber level; (0, -1)
        # for one that is not there)
        first = billing if billing is not None else subscriber
        second = subscriber if billing is not None else None
        self._spans_ready.extend((
            start, self._last, first.start if first is not None else 0,
            first.end if first is not None else -1, second.start if second is not None else 0,
            second.end if second is not None else -1))
        return True

    def _hand_spans(self) -> None:
        """The spans noted so far to ``spans`` (before any other claim goes there)."""
        if self._spans_ready:
            self._spans.add_spans(self._spans_tx, self._spans_ready)
            self._spans_ready = []

    def _flush_claim(self) -> None:
        if self._buf is not None and self._light_done():
            return
        claim: dict = self._claim
        if claim is None:
            return
        self._claim, self._line = None, None
        scope = [(lvl.start, lvl.end) for lvl in (self._billing, self._subscriber) if lvl]
        sub: dict = self._subscriber.data if self._subscriber else {}
        member: dict = sub.get("member") or {}
        billing: dict = self._billing.data if self._billing else {}
        line: dict
        first = last = ""  # the claim's first and last service date (sorted as text)
        for line in claim["lines"]:
            for d in (line.get("date"), line.get("date_end")):
                if d:
                    if not first or d < first:
                        first = d
                    if d > last:
                        last = d
        name: dict = billing.get("name") or _NO_NAME
        # (positional: the order of ClaimRecord's fields)
        record = ClaimRecord(
            self._tx, claim["index"], claim["start"], self._last, scope, claim["id"],
            claim["charge"], member.get("last", ""), member.get("first") or "",
            member.get("id", ""), name.get("last", ""), name.get("id", ""), first, last,
            sub.get("index", 0),
            [(line["ordinal"], line["st_index"]) for line in claim["lines"]],
            None, claim["problem"],
        )
        if record.problem is None and self._professional:
            try:
                if self.keep == "rules":
                    # only the ECM rules read it: a light view, the model only when in doubt
                    if self._surely_readable(claim, sub, billing):
                        record.encounter = self._claim_view(claim, sub, billing)
                    else:
                        from gateway.model.encounter import Encounter

                        record.encounter = Encounter.model_validate(
                            self._encounter_data(claim, sub, billing))
                elif self.keep:
                    from gateway.model.encounter import Encounter

                    record.encounter = Encounter.model_validate(
                        self._encounter_data(claim, sub, billing))
                elif not self._surely_readable(claim, sub, billing):
                    # only whether it can be read is wanted: the model decides the doubtful
                    data = self._encounter_data(claim, sub, billing)
                    if not surely_valid(data):
                        from gateway.model.encounter import Encounter

                        Encounter.model_validate(data)
            except (ValueError, KeyError, TypeError) as exc:  # ValidationError: a ValueError
                record.problem = _describe(exc)
        if self._spans_ready:
            self._hand_spans()  # (the spans go in file order)
        self.on_claim(record)

    def _surely_readable(self, claim: dict, sub: dict, billing: dict) -> bool:
        """True when :meth:`_encounter_data` certainly succeeds and :class:`Encounter`
        certainly accepts its result (checked on the collected parts, nothing built); False
        when in doubt. Stricter than the model on purpose (plain amounts only, ...)."""
        line: dict
        try:
            header = self._header
            if "submitter" not in header or "receiver" not in header or \
                    not self._levels_readable(sub, billing):
                return False
            dob = sub.get("dmg", ("", ""))[0]  # (a DMG may still come inside the claim)
            if dob:
                _day(dob)  # (memoised: a date parses the same every time)
            lines = claim["lines"]
            if not 1 <= len(claim["diagnoses"]) <= MAX_DIAGNOSES or \
                    not 1 <= len(lines) <= MAX_LINES or not _plain_amount(claim["charge"]):
                return False
            for line in lines:
                # "plain": the line's SV1 was read and passes (_read_sv1)
                if not line.get("plain") or "date" not in line:
                    return False
                int(line["number"])
                _day(line["date"])
                end = line.get("date_end")
                if end:
                    _day(end)
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        return True

    def _levels_readable(self, sub: dict, billing: dict) -> bool:
        """The part of :meth:`_surely_readable` that reads the billing and subscriber levels
        alone, decided once per pair of levels: what it reads (names, payer, addresses) is
        set only while no claim is open, and from a level's first claim to the next HL one
        always is (HL and the control segments forget the answer)."""
        known = self._levels_known
        if known is not None and known[0] is sub and known[1] is billing:
            return known[2]
        try:
            ok = "name" in billing and "member" in sub and "payer" in sub and \
                billing["address"].keys() == _ADDRESS_KEYS and \
                ("address" not in sub or sub["address"].keys() == _ADDRESS_KEYS)
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        self._levels_known = (sub, billing, ok)
        return ok

    @staticmethod
    def _claim_view(claim: dict, sub: dict, billing: dict) -> tuple:
        """The view of a claim :meth:`_surely_readable` accepted (a plain tuple in the field
        order of :class:`~gateway.model.view.ClaimView`, its lines in that of ``LineView``):
        the values :class:`Encounter` would hold, without building it."""
        lines = []
        for line in claim["lines"]:
            rendering = line.get("rendering")
            end = line.get("date_end")
            lines.append((
                int(line["number"]), line["code"], tuple(line["modifiers"]), line["units"],
                line["pos"], _day(line["date"]), _day(end) if end else None,
                rendering["id"] if rendering else None))
        rendering = claim.get("rendering")
        return (sub["member"]["id"], billing["name"]["id"], billing.get("tin", ""),
                rendering["id"] if rendering else None, sub["payer"]["id"], claim["pos"],
                tuple(lines))

    def _encounter_data(self, claim: dict, sub: dict, billing: dict) -> dict:
        """The encounter as the nested dict :class:`Encounter` validates (amounts, dates and
        numbers already converted: a value that does not convert raises here)."""
        header = self._header
        name = billing["name"]
        member = sub["member"]
        dob, gender = sub.get("dmg", ("", ""))
        responsibility, filing = sub.get("sbr", ("P", "MC"))
        lines = []
        for line in claim["lines"]:
            rendering = line.get("rendering")
            lines.append(dict(
                line_number=int(line["number"]), procedure_code=line["code"],
                modifiers=line["modifiers"], charge=_amount(line["charge"]),
                unit_type=line["unit_type"], units=_amount(line["units"]),
                place_of_service=line["pos"],
                diagnosis_pointers=[int(p) for p in line["pointers"]] or [1],
                service_date=_date(line["date"]),
                service_date_end=_date(line["date_end"]) if line.get("date_end") else None,
                rendering_provider=_rendering(rendering) if rendering else None,
                line_control_number=line.get("line_control_number"),
            ))
        signature, assignment, benefits, release = claim["flags"]
        rendering = claim.get("rendering")
        return dict(
            envelope=dict(self._envelope),
            submitter=dict(header["submitter"]),
            receiver=dict(header["receiver"]),
            billing_provider=dict(
                name=name["last"], first_name=name["first"] if name["person"] else None,
                npi=name["id"], tin=billing.get("tin", ""), taxonomy=billing.get("taxonomy"),
                address=dict(billing["address"]),
            ),
            member=dict(
                cin=member["id"], last_name=member["last"], first_name=member["first"],
                middle_name=member["middle"],
                birth_date=_date(dob) if dob else None, gender=gender or None,
                address=dict(sub["address"]) if "address" in sub else None,
            ),
            payer=dict(sub["payer"]),
            payer_responsibility=responsibility, claim_filing_indicator=filing,
            rendering_provider=_rendering(rendering) if rendering else None,
            claim=dict(
                id=claim["id"], total_charge=_amount(claim["charge"]),
                place_of_service=claim["pos"], frequency_code=claim["freq"],
                provider_signature=signature, assignment=assignment,
                benefits_assignment=benefits, release_of_information=release,
                diagnosis_qualifier=claim["dx_qualifier"],
                diagnosis_codes=claim["diagnoses"],
                prior_authorization=claim.get("prior_authorization"),
                payer_claim_control_number=claim.get("payer_claim_control_number"),
                lines=lines,
            ),
        )


# The constraints of gateway/model/encounter.py that the data built by
# ClaimCollector._encounter_data can break (everything else is converted, or is a str read from
# a segment, before validation). tests/test_claims837.py fingerprints the model's schema so a
# new constraint there fails a test until it is reflected here.
MAX_DIAGNOSES, MAX_LINES, MAX_MODIFIERS, MAX_POINTERS = 12, 50, 4, 4
_ADDRESS_KEYS = frozenset({"line1", "line2", "city", "state", "postal_code"})
# an amount Decimal reads as a finite number whatever the model's Decimal options
_PLAIN_AMOUNT = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,6})?").fullmatch


def _dates_read(f: list) -> bool:
    """Whether the dates of a line's ``DTP*472`` read as :meth:`ClaimCollector._on_DTP` takes
    them and :meth:`ClaimCollector._surely_readable` checks them."""
    if len(f) < 4:
        f = f + _PAD
    value = f[3]
    try:
        if f[2] == "RD8" and "-" in value:
            start, end = value.split("-", 1)
            _day(start)
            if end:
                _day(end)
        else:
            _day(value)
    except (ValueError, TypeError):
        return False
    return True


def _plain_amount(text: str) -> bool:
    """:data:`_PLAIN_AMOUNT`, whole amounts (the usual) without the regular expression."""
    if len(text) <= 15 and text.isdigit() and text.isascii():
        return True
    return _PLAIN_AMOUNT(text) is not None


def surely_valid(data: dict) -> bool:
    """True when :class:`Encounter` certainly accepts ``data`` (built by ``_encounter_data``);
    False when it may not — then the model itself decides. Lets a validation that keeps no
    encounter skip building the model for the (usual) claim that is certainly readable."""
    claim = data["claim"]
    if not 1 <= len(claim["diagnosis_codes"]) <= MAX_DIAGNOSES or \
            not 1 <= len(claim["lines"]) <= MAX_LINES or not claim["total_charge"].is_finite():
        return False
    for line in claim["lines"]:
        if len(line["modifiers"]) > MAX_MODIFIERS or \
                len(line["diagnosis_pointers"]) > MAX_POINTERS or \
                not line["charge"].is_finite() or not line["units"].is_finite():
            return False
    for address in (data["billing_provider"]["address"], data["member"]["address"]):
        if address is not None and address.keys() != _ADDRESS_KEYS:
            return False
    return True


def counted_only(on_claim) -> object | None:
    """The :class:`~gateway.x12.acks.ClaimSpans` whose ``add`` ``on_claim`` is (a report that
    only counts the claims), else None. (Looked up among the loaded modules: a caller with
    such spans has loaded it, and this module does not import the acknowledgments.)"""
    import sys

    acks = sys.modules.get("gateway.x12.acks")
    spans = getattr(on_claim, "__self__", None)
    if acks is None or not isinstance(spans, acks.ClaimSpans) or on_claim != spans.add:
        return None
    return spans


_PAD = [""] * 16  # padding: every element a handler reads exists
SEGMENT_CACHE_SIZE = 4096  # per collector: SV1, HI, DTP texts read (then it starts afresh)
LIGHT_SEGMENTS = 4 * MAX_LINES  # a claim read light keeps at most this many segments
SPANS_BATCH = 6 * 1024  # spans noted (six numbers a claim) before they are handed over
_NO_NAME: dict = {}


def _name(f: list[str]) -> dict:
    """An NM1's name parts (``f`` padded)."""
    return {"last": f[3], "first": f[4] or None, "middle": f[5] or None, "id": f[9],
            "person": f[2] == "1"}


def _rendering(name: dict) -> dict:
    return dict(last_name=name["last"], first_name=name["first"], is_person=name["person"],
                npi=name["id"], taxonomy=name.get("taxonomy"))


_CONTROL = frozenset({"ISA", "GS", "ST", "SE", "GE", "IEA"})
# segment id -> how ClaimCollector._light takes it inside a claim read light (one look-up
# instead of a string comparison per kind); _ENDS_CLAIM: the segments that close the claim
_ENDS_CLAIM = 8
_LIGHT_KINDS = {"SV1": 1, "DTP": 2, "LX": 3, "HI": 4, "NM1": 5, "N3": 6, "N4": 6, "REF": 7,
                "PRV": 7, "SBR": 7, "HL": _ENDS_CLAIM, "CLM": _ENDS_CLAIM}
# segment id -> ClaimCollector._on_<id>, looked up once
_HANDLERS = {name[len("_on_"):]: function for name, function in vars(ClaimCollector).items()
             if name.startswith("_on_")}


def _describe(exc: Exception) -> str:
    """Which field failed, without the value (it may be member data)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['type']}"
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]}"
    return exc.__class__.__name__


def ranges_ordered(ranges):  # (types: claims837.pxd)
    """Whether, in :attr:`gateway.x12.acks.ClaimSpans.ranges` (an ``array("i")``, six numbers
    a claim: start, end, then two scope ranges), each of the six columns never decreases from
    claim to claim (what :func:`gateway.x12.acks.verdict_counts` searches by bisection). Here,
    compiled, for its loop over every claim's numbers: the report's verdict counts come after
    the validation, on the wall time."""
    n = len(ranges)
    for i in range(6, n):
        if ranges[i] < ranges[i - 6]:
            return False
    return True


# -- the ECM rules' view of a claim read light (issue 14) -----------------------------------------
class RulesSpansCollector(ClaimCollector):
    """The collector of a validation that runs the ECM rules (in their worker) and only counts
    its claims: a claim the light reading vouches for goes to ``spans`` as a span, as without
    the rules, and its row to the list ``rows``: with ``as_text``, its text row
    (:func:`light_claim_text`: the text of the segments the light reading kept) for the
    rules' worker to view (:func:`light_claim_row`: cheaper here, dearer there), else its
    view row (:func:`light_claim_view`); ``full()`` is called when ``rows`` holds ``size`` of
    them. Any other claim is read in full with its view (``keep_encounters="rules"``) and goes
    to ``on_claim`` as a record."""

    def __init__(self, delimiters: Delimiters, on_claim, spans, rows: list, size: int,
                 full) -> None:
        super().__init__(delimiters, on_claim, keep_encounters=False, spans=spans)
        self.keep = "rules"  # (after the light reading was set up: the claims read in full)
        self.rows = rows
        self.size = size
        self.full = full
        self.separators = (delimiters.element, delimiters.component, delimiters.segment)
        self.as_text = True
        # what light_claim_view makes of an SV1's text (its part of a view line) and of a
        # DTP*472's (its dates), once per text: a file repeats both from claim to claim
        self.sv1_parts = {}
        self.line_dates = {}

    def _light_done(self) -> bool:
        buf = self._buf
        lines_before = self._l_lines_at
        if not ClaimCollector._light_done(self):
            return False
        rows = self.rows
        rows.append(light_claim_text(self, buf, lines_before) if self.as_text
                    else light_claim_view(self, buf, lines_before))
        if len(rows) >= self.size:
            self.full()
        return True


def light_claim_view(collector, buf, lines_before):  # (types: claims837.pxd)
    """The row of a claim the light reading vouched for (``buf``: its CLM and the segments it
    kept; ``lines_before``: the set's LX count before it): its view exactly as
    :meth:`ClaimCollector._claim_view` makes it from the full reading (the handlers' rules:
    the last SV1 and DTP*472 of a line count, an NM1*82 names the open line's rendering
    provider, else the claim's unless an SBR opened another payer's loop), then the place
    parts of :class:`~gateway.x12.validate._RowPlace`."""
    c = collector
    sub: dict = c._subscriber.data if c._subscriber is not None else {}
    billing: dict = c._billing.data if c._billing is not None else {}
    clm = buf[0]
    f = clm.fields
    if len(f) < 10:
        f = f + _PAD
    claim_id = f[1]
    pos = f[5]
    at = pos.find(c.separators[1])  # (CLM05-1: up to the first component separator)
    if at >= 0:
        pos = pos[:at]
    rendering = None
    other_payer = False
    parts = c.sv1_parts
    lines: list = []  # [number, SV1's part of the view, DTP*472, rendering, ordinal, st index]
    line = None
    st_index = lines_before
    for i in range(1, len(buf)):
        seg = buf[i]
        f = seg.fields
        seg_id = f[0]
        # (told apart by the first letter before the whole id is compared: at 10k claims sent
        # as views, 21 string comparisons a claim, a third of this function's instructions)
        first = seg_id[0] if seg_id else " "
        if first == "L":
            if seg_id == "LX":
                st_index += 1
                line = [f[1] if len(f) > 1 else "", None, None, None, seg.ordinal, st_index]
                lines.append(line)
        elif first == "S":
            if seg_id == "SBR":
                other_payer = True
            elif seg_id == "SV1" and line is not None:
                part = parts.get(seg.raw)
                if part is None:
                    parsed = c._sv1.get(seg.raw)
                    if parsed is None:
                        parsed = c._read_sv1(f)
                    part = (parsed["code"], tuple(parsed["modifiers"]), parsed["units"],
                            parsed["pos"])
                    if len(parts) >= TEXT_CACHE_SIZE:
                        parts.clear()
                    parts[seg.raw] = part
                line[1] = part
                line[4] = seg.ordinal
        elif first == "D":
            if seg_id == "DTP" and line is not None:
                if len(f) < 4:
                    f = f + _PAD
                if f[1] == "472":
                    line[2] = seg  # (the line's last DTP*472 counts: its dates read below)
        elif first == "N":
            if seg_id != "NM1" or (other_payer and line is None):
                continue
            if len(f) < 10:
                f = f + _PAD
            if f[1] == "82":
                if line is not None:
                    line[3] = f[9]
                else:
                    rendering = f[9]
    view_lines = []
    refs = []
    known = c.line_dates
    for number, part, dtp, line_rendering, ordinal, index in lines:
        dates = known.get(dtp.raw)
        if dates is None:
            dates = _line_dates(dtp.fields)
            if len(known) >= TEXT_CACHE_SIZE:
                known.clear()
            known[dtp.raw] = dates
        view_lines.append((int(number), part[0], part[1], part[2], part[3], dates[0],
                           dates[1], line_rendering))
        refs.append((ordinal, index))
    view = (sub["member"]["id"], billing["name"]["id"], billing.get("tin", ""), rendering,
            sub["payer"]["id"], pos, tuple(view_lines))
    return (view, c._tx, c._claim_index, sub.get("index", 0), clm.ordinal, claim_id, refs)


def _line_dates(f: list) -> tuple:
    """(service date, end date or None) of a DTP*472's fields, as the full reading reads them
    (an RD8 range split at its dash)."""
    if len(f) < 4:
        f = f + _PAD
    value = f[3]
    if f[2] == "RD8" and "-" in value:
        day, end = value.split("-", 1)
    else:
        day, end = value, None
    days = _DAYS
    first = days.get(day)
    last = (days.get(end) or _day(end)) if end else None
    return (first if first is not None else _day(day), last)


def light_claim_text(collector, buf, lines_before):  # (types: claims837.pxd)
    """The text row of a claim the light reading vouched for (``buf``: its CLM and the
    segments it kept; ``lines_before``: the set's LX count before it): ``(its segments' texts
    joined by the segment terminator, the separators, the CLM's ordinal when the segments'
    ordinals follow on from it (else all of them), lines_before, then the member, billing NPI
    and TIN and payer of its levels, the set, the claim's index in it and the subscriber
    index)``. Cheaper to make and to ship than the view :func:`light_claim_row` makes of it
    in the worker: one string a claim (no segment's text holds the terminator), a REF, HI or
    PRV left empty (nothing the view reads), nothing else read here; the worker memoises what
    the texts mean (``meanings``). Against numbering each text sent before (a text the worker
    had went as its number), at 10k claims (callgrind): the caller's reading with the rows
    (and their marshalling) 96.6M -> 82.8M instructions over the count-only reading (the
    caller is the longer side), the worker's viewing of them 222.6M -> 217.5M; 2.48 MB
    shipped instead of 1.75."""
    c = collector
    sub: dict = c._subscriber.data if c._subscriber is not None else {}
    billing: dict = c._billing.data if c._billing is not None else {}
    n = len(buf)
    seg = buf[0]
    first = seg.ordinal
    last = buf[n - 1]
    if last.ordinal - first == n - 1:
        ordinals = first
    else:
        ordinals = tuple([seg.ordinal for seg in buf])
    texts = [None] * n  # (filled in place: the segments' texts, the terminator joins them)
    for i in range(n):
        seg = buf[i]
        raw = seg.raw
        letter = raw[0] if raw else "R"
        # (a REF, HI or PRV: no part of the view, goes empty (split, an empty text is no new
        # string in the worker); the CLM is the first segment)
        texts[i] = "" if i and (letter == "R" or letter == "H" or letter == "P") else raw
    terminator = c.separators[2]
    return (terminator.join(texts), c.separators, ordinals, lines_before,
            sub["member"]["id"], billing["name"]["id"], billing.get("tin", ""),
            sub["payer"]["id"], c._tx, c._claim_index, sub.get("index", 0))


def rule_entries(batch, place, meanings):  # (types: claims837.pxd)
    """``(view, place(row))`` of each row of a batch the ECM rules' worker got: a view row as
    it is, a :func:`light_claim_text` row viewed first (:func:`light_claim_row`, with the
    stream's ``meanings``, a dict); ``place`` makes a row's
    :class:`~gateway.ecm.rules.ClaimPlace` (``validate._RowPlace``)."""
    entries = []
    for row in batch:
        if row[0].__class__ is str:
            row = light_claim_row(row, meanings)
        entries.append((row[0], place(row)))
    return entries


def light_claim_row(row, meanings):  # (types: claims837.pxd)
    """The rules' row ``(view, transaction, index, subscriber index, CLM ordinal, claim id,
    line refs)`` of a :func:`light_claim_text` row: the view exactly as
    :meth:`ClaimCollector._claim_view` makes it from the full reading (the handlers' rules:
    the last SV1 and DTP*472 of a line count, an NM1*82 names the open line's rendering
    provider, else the claim's unless an SBR opened another payer's loop). ``meanings``: the
    stream's memo, segment text -> what it means (:func:`_meaning`: LX, SV1, DTP, SBR; the
    texts repeat from claim to claim); a REF, HI or PRV (left empty) is passed over, and an
    NM1 is read where it is, not memoised (each claim's REF*G1 and HI differ,
    NM1s from provider to provider). A line's view is made when the next LX (or the claim's
    end) closes it."""
    text, separators, ordinals, lines_before, cin, npi, tin, payer, tx, index, sub_index = row
    element, component, terminator = separators
    tokens = text.split(terminator)
    f = tokens[0].split(element, 6)  # (CLM01 and CLM05 only)
    if len(f) < 6:
        f = f + _PAD
    claim_id = f[1]
    pos = f[5].split(component)[0]
    contiguous = ordinals.__class__ is int
    rendering = None
    other_payer = False
    view_lines = []
    refs = []
    st_index = lines_before
    # the open line (``open_line``: one is): LX01 as a number, its SV1's part of the view, its
    # DTP*472's meaning, its rendering provider and its SV1's ordinal
    open_line = False
    number = part = dates = line_rendering = ordinal = None
    for i in range(1, len(tokens)):
        raw = tokens[i]
        if not raw:  # (a REF, HI or PRV: light_claim_text left it empty)
            continue
        if raw[0] == "N":  # (NM1: N3 and N4 are not kept) read here, not memoised: its text
            # differs from provider to provider (more than the memo holds)
            f = raw.split(element, 10)
            if f[0] == "NM1" and len(f) > 1 and f[1] == "82":  # (as _meaning)
                if open_line:
                    line_rendering = f[9] if len(f) > 9 else ""
                elif not other_payer:
                    rendering = f[9] if len(f) > 9 else ""
            continue
        meaning = meanings.get(raw)  # (the LX, SV1, DTP texts repeat from claim to claim)
        if meaning is None:
            meaning = _meaning(raw, separators)
            if len(meanings) >= TEXT_CACHE_SIZE:
                meanings.clear()
            meanings[raw] = meaning
        kind = meaning[0]
        if kind == 0:  # (nothing the view reads)
            continue
        if kind == 1:  # LX
            if open_line:
                view_lines.append(_view_line(number, part, dates, line_rendering))
                refs.append((ordinal, st_index))
            st_index += 1
            open_line = True
            number = meaning[1]
            part = dates = line_rendering = None
            ordinal = ordinals + i if contiguous else ordinals[i]
        elif kind == 2:  # SV1
            if open_line:
                part = meaning[1]
                ordinal = ordinals + i if contiguous else ordinals[i]
        elif kind == 3:  # DTP*472
            if open_line:
                dates = meaning
        elif kind == 4:  # NM1*82
            if other_payer and not open_line:
                continue
            if open_line:
                line_rendering = meaning[1]
            else:
                rendering = meaning[1]
        else:  # SBR
            other_payer = True
    if open_line:
        view_lines.append(_view_line(number, part, dates, line_rendering))
        refs.append((ordinal, st_index))
    view = (cin, npi, tin, rendering, payer, pos, tuple(view_lines))
    return (view, tx, index, sub_index, ordinals if contiguous else ordinals[0], claim_id, refs)


def _view_line(number, part, dates, rendering):  # (types: claims837.pxd)
    """A line's part of a view: LX01, its SV1's part, its DTP*472's dates, its rendering
    provider (as :meth:`ClaimCollector._claim_view`)."""
    first = dates[3]
    if first is None:  # (dates _meaning could not read: read here, failing as the full reading)
        day = dates[1]
        end = dates[2]
        first = _day(day)
        return (number, part[0], part[1], part[2], part[3], first,
                _day(end) if end else None, rendering)
    return (number, part[0], part[1], part[2], part[3], first, dates[4], rendering)


def _meaning(raw: str, separators: tuple) -> tuple:
    """What the view reads of a segment kept by the light reading, as the full handlers read
    it: (1, LX01 as a number) for an LX, (2, (code, modifiers, units, place of service)) for an
    SV1 (as :meth:`ClaimCollector._read_sv1`), (3, date, end date, their days or None if
    unreadable (read again on use, failing as the full reading does)) for a DTP*472, (4, NM109)
    for an NM1*82, (5,) for an SBR, else (0,)."""
    element, component, _ = separators
    f = raw.split(element)
    seg_id = f[0]
    if seg_id == "LX":
        return (1, int(f[1] if len(f) > 1 else ""))
    if seg_id == "SV1":
        if len(f) < 8:
            f = f + _PAD
        procedure = f[1].split(component)
        return (2, (procedure[1] if len(procedure) > 1 else "",
                    tuple([m for m in procedure[2:6] if m]), f[4], f[5] or None))
    if seg_id == "DTP":
        if len(f) < 4:
            f = f + _PAD
        if f[1] != "472":
            return (0,)
        value = f[3]
        if f[2] == "RD8" and "-" in value:
            start, end = value.split("-", 1)
        else:
            start, end = value, None
        try:
            return (3, start, end, _day(start), _day(end) if end else None)
        except ValueError:
            return (3, start, end, None, None)
    if seg_id == "NM1":
        if len(f) < 10:
            f = f + _PAD
        return (4, f[9]) if f[1] == "82" else (0,)
    if seg_id == "SBR":
        return (5,)
    return (0,)


TEXT_CACHE_SIZE = 8192  # segment texts a stream memoises the meaning of (light_claim_row)
