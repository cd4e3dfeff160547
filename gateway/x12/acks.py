"""Acknowledgments for an inbound interchange: TA1, 999 (005010X231A1) and 277CA (005010X214).

Policy (README, "Acknowledgments"):

- **TA1** when the interchange envelope has an error (rejected, ``TA104 = R``, and nothing else
  is acknowledged because the envelope cannot be trusted) or when ``ISA14 = 1`` asks for one.
- **999**, one transaction set per functional group. A transaction set is rejected (``IK5 R``)
  for envelope errors or implementation-guide errors outside any claim; when every error lies
  inside claims it is accepted with errors (``IK5 E``) and the 277CA rejects just those claims,
  so one bad claim does not sink a batch.
- **277CA** for every 837 transaction set the 999 accepted: a claim-level ``STC`` for **every**
  claim, ``A2:20`` accepted or ``A7:<status>`` rejected, the status codes coming from the rules
  that fired (``ack.claim_status`` in the rule packs; 21 "missing or invalid information" when a
  rule names none).

Control numbers and the clock are inputs, so output is reproducible byte for byte.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from io import StringIO
from typing import TYPE_CHECKING

from gateway.findings import Finding, Severity
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.x12.claims837 import ClaimRecord, ranges_ordered
from gateway.x12.envelope import Group, Interchange, TransactionSet
from gateway.x12.validate import X12Result

if TYPE_CHECKING:  # the writer (and pydantic, for its envelope settings) loads when writing
    from gateway.x12.writer import X12Writer

ACK_999 = "005010X231A1"
# IK3 loops written per transaction set: every locatable error up to this cap (the 999 TR3
# allows more, but a submitter gets the first thousand in file order and fixes those first)
MAX_IK3_PER_SET = 1000
ACK_277CA = "005010X214"
DEFAULT_CLAIM_STATUS = "21"  # Missing or invalid information


@dataclass(frozen=True)
class AckParty:
    """Who the acknowledgments come from (the gateway or the plan running it)."""

    name: str = "ECM GATEWAY"
    id: str = "ECMGATEWAY"


@dataclass
class TransactionVerdict:
    ts: TransactionSet
    code: str  # A, E, R
    syntax_codes: list[str] = field(default_factory=list)
    segment_findings: list[Finding] = field(default_factory=list)
    claim_findings: dict[int, list[Finding]] = field(default_factory=dict)


@dataclass
class Acknowledgments:
    ta1: str | None = None
    ack999: str | None = None
    ack277ca: str | None = None
    verdicts: list[TransactionVerdict] = field(default_factory=list)
    claim_errors: dict[int, list[Finding]] = field(default_factory=dict)  # by claim position
    accepted_claims: list[ClaimRecord] = field(default_factory=list)
    rejected_claims: list[ClaimRecord] = field(default_factory=list)


def _errors(findings: list[Finding]) -> list[Finding]:
    error = Severity.ERROR  # (once: an enum member read from its class is a Python-level
    # descriptor call in 3.11, 0.3 ms over 4.6k findings against 0.06)
    return [f for f in findings if f.severity is error]


def _in(findings: list[Finding], start: int, end: int | None) -> list[Finding]:
    stop = end if end is not None else 1 << 62
    return [f for f in findings if f.segment is not None and start <= f.segment <= stop]


class _ClaimIndex:
    """Which claims a segment ordinal belongs to, in O(log n)."""

    def __init__(self, claims: list[ClaimRecord]) -> None:
        spans = []
        for position, claim in enumerate(claims):
            spans.append((claim.start, claim.end, position))
            for lo, hi in claim.scope:
                spans.append((lo, hi, position))
        spans.sort()
        self._starts = [s[0] for s in spans]
        self._spans = spans
        self._claims = claims
        # the longest span bounds how far back a covering span can start
        self._longest = max((hi - lo for lo, hi, _ in spans), default=0)

    def claims_at(self, ordinal: int) -> list[int]:
        found = []
        index = bisect_right(self._starts, ordinal) - 1
        while index >= 0 and self._spans[index][0] >= ordinal - self._longest:
            lo, hi, position = self._spans[index]
            if lo <= ordinal <= hi:
                found.append(position)
            index -= 1
        return found


def judge(result: X12Result, catalogue: RuleCatalogue | None = None) -> Acknowledgments:
    """Decide interchange, transaction set and claim verdicts from the findings."""
    acks = Acknowledgments()
    errors = _errors(result.findings)
    index = _ClaimIndex(result.claims)
    claim_errors: dict[int, list[Finding]] = {}
    outside_claims: list[Finding] = []
    for finding in errors:
        positions = index.claims_at(finding.segment) if finding.segment else []
        if positions and not finding.rule.startswith("X12-ENV-"):
            for position in positions:
                claim_errors.setdefault(position, []).append(finding)
        else:
            outside_claims.append(finding)
    catalogue = catalogue or default_catalogue()
    for ic in result.interchanges:
        for group in ic.groups:
            for ts in group.transactions:
                acks.verdicts.append(_judge_ts(ts, outside_claims, catalogue))
    rejected_ts = {id(v.ts) for v in acks.verdicts if v.code == "R"}
    for ic in result.interchanges:  # a rejected interchange or group takes its sets along
        for group in ic.groups:
            if ic.ta1_codes or group.error_codes:
                rejected_ts.update(id(t) for t in group.transactions)
    ts_of = {(i.index, g.index, t.index): t for i in result.interchanges for g in i.groups
             for t in g.transactions}
    for position, claim in enumerate(result.claims):
        ts = ts_of.get(claim.transaction)
        if ts is None or id(ts) in rejected_ts:
            continue
        if claim_errors.get(position) or claim.problem:
            acks.rejected_claims.append(claim)
        else:
            acks.accepted_claims.append(claim)
    acks.claim_errors = claim_errors
    return acks


def in_999(finding: Finding, catalogue: RuleCatalogue) -> bool:
    """Listed in the 999 (IK3/IK4): implementation-guide errors and the SNIP rules that name an
    IK3 code; other business rules are answered in the 277CA only."""
    return finding.rule.startswith("X12-IG-") or (
        finding.rule in catalogue and "ik3" in catalogue.rule(finding.rule).ack)


def _judge_ts(ts: TransactionSet, outside_claims: list[Finding],
              catalogue: RuleCatalogue) -> TransactionVerdict:
    ts_errors = _in(outside_claims, ts.start, ts.end)
    codes = list(dict.fromkeys(ts.rejected_codes))
    ig = [f for f in ts_errors if in_999(f, catalogue)]
    if ig and "5" not in codes:
        codes.append("5")
    code = "R" if codes else "A"
    return TransactionVerdict(ts=ts, code=code, syntax_codes=codes[:5], segment_findings=ig)


class ClaimSpans:
    """The few numbers per claim :func:`verdict_counts` needs, in flat arrays (about 32 bytes a
    claim), so a report of a million-claim file does not keep a million claim records. Pass
    :meth:`add` as ``validate_x12(on_claim=...)``."""

    def __init__(self) -> None:
        from array import array

        self.ranges = array("i")  # per claim: start, end, then two scope ranges (lo, hi)
        self.transactions = array("i")  # index into self.keys
        self.problems = bytearray()
        self.keys: list[tuple[int, int, int]] = []
        self._key_index: dict[tuple[int, int, int], int] = {}

    def add(self, claim: ClaimRecord) -> None:
        scope = claim.scope  # the first two ranges; (0, -1) for one that is not there
        lo1, hi1 = scope[0] if scope else (0, -1)
        lo2, hi2 = scope[1] if len(scope) > 1 else (0, -1)
        self.ranges.extend((claim.start, claim.end, lo1, hi1, lo2, hi2))
        index = self._key_index.get(claim.transaction)
        if index is None:
            index = self._key_index[claim.transaction] = len(self.keys)
            self.keys.append(claim.transaction)
        self.transactions.append(index)
        self.problems.append(1 if claim.problem else 0)

    def add_spans(self, transaction: tuple[int, int, int], ranges: list[int]) -> None:
        """What :meth:`add` records for readable claims of one transaction set, from their
        parts (no records built: :class:`~gateway.x12.claims837.ClaimCollector` with
        ``spans``): ``ranges`` six numbers a claim, as :attr:`ranges` holds them."""
        from array import array

        count = len(ranges) // 6
        self.ranges.extend(ranges)
        index = self._key_index.get(transaction)
        if index is None:
            index = self._key_index[transaction] = len(self.keys)
            self.keys.append(transaction)
        self.transactions.extend(array("i", [index]) * count)
        self.problems.extend(bytes(count))

    def __len__(self) -> int:
        return len(self.problems)


def _errors_by_sorted_ranges(ranges, ordinals: list[int], errored: bytearray,
                             covered: bytearray) -> bool:
    """:func:`verdict_counts`'s marking (``errored``: claims with an error ordinal inside one
    of their three ranges; ``covered``: ordinals inside some claim's range), searched per error
    rather than per claim, when it can be: for each of the three ranges, the claims' starts and
    ends both never decrease in claim order (a well-formed file: claims, and the HL levels
    above them, follow one another). Then the claims whose range holds an ordinal are one run,
    from the first whose end reaches it to the last whose start does. False (nothing marked)
    when some column decreases (a missing level, a malformed file): the caller searches per
    claim. A file with a few errors then costs O(errors x log claims), not O(claims): the
    order is checked in C (:func:`~gateway.x12.claims837.ranges_ordered`, 0.03 ms at 10k
    claims against 1.6 ms for the columns as lists, sorted) and the columns stay arrays."""
    from bisect import bisect_left, bisect_right

    if not ranges_ordered(ranges):
        return False
    columns = [(ranges[k::6], ranges[k + 1::6]) for k in (0, 2, 4)]  # (arrays: copied in C)
    for index, ordinal in enumerate(ordinals):
        for los, his in columns:
            first, last = bisect_left(his, ordinal), bisect_right(los, ordinal)
            if first < last:
                errored[first:last] = b"\x01" * (last - first)
                covered[index] = 1
    return True


def _clean(errored: bytearray, problems: bytearray) -> int:
    """How many claims have neither an error inside (``errored``) nor a problem (both one
    byte a claim, 0 or 1): the two OR-ed as whole numbers, not claim by claim."""
    if 1 not in errored:
        return problems.count(0)
    both = int.from_bytes(errored, "little") | int.from_bytes(problems, "little")
    return both.to_bytes(len(problems), "little").count(0)


def verdict_counts(result: X12Result, spans: ClaimSpans,
                   catalogue: RuleCatalogue | None = None) -> tuple[int, int]:
    """(accepted, rejected) claims, the same decision as :func:`judge` makes (a claim is
    accepted when its set is accepted, no error lies in it or in the levels above it, and it
    could be read), computed from :class:`ClaimSpans` in bounded memory."""
    from bisect import bisect_left, bisect_right

    catalogue = catalogue or default_catalogue()
    errors = sorted((f for f in _errors(result.findings) if f.segment),
                    key=lambda f: f.segment)
    inner = [f for f in errors if not f.rule.startswith("X12-ENV-")]
    ordinals = [f.segment for f in inner]
    covered = bytearray(len(inner))
    errored = bytearray(len(spans))
    r = spans.ranges
    if ordinals and not _errors_by_sorted_ranges(r, ordinals, errored, covered):
        for claim in range(len(spans)):
            base = claim * 6
            for lo, hi in ((r[base], r[base + 1]), (r[base + 2], r[base + 3]),
                           (r[base + 4], r[base + 5])):
                if hi < lo:
                    continue
                first, last = bisect_left(ordinals, lo), bisect_right(ordinals, hi)
                if first < last:
                    errored[claim] = 1
                    covered[first:last] = b"\x01" * (last - first)
    outside = [f for f in errors if f.rule.startswith("X12-ENV-")] + \
        [f for f, c in zip(inner, covered) if not c]
    rejected_ts: set[tuple[int, int, int]] = set()
    for ic in result.interchanges:
        for group in ic.groups:
            for ts in group.transactions:
                key = (ic.index, group.index, ts.index)
                if ic.ta1_codes or group.error_codes or \
                        _judge_ts(ts, outside, catalogue).code == "R":
                    rejected_ts.add(key)
    rejected_index = {i for i, key in enumerate(spans.keys) if key in rejected_ts}
    known = {i for i, key in enumerate(spans.keys)
             if any((ic.index, g.index, t.index) == key for ic in result.interchanges
                    for g in ic.groups for t in g.transactions)}
    if len(known) == len(spans.keys) and not rejected_index:
        # every set accepted (the usual file): the readable claims with no error inside
        accepted = _clean(errored, spans.problems)
    else:
        accepted = sum(1 for claim in range(len(spans))
                       if spans.transactions[claim] in known and
                       spans.transactions[claim] not in rejected_index and
                       not errored[claim] and not spans.problems[claim])
    return accepted, len(spans) - accepted


# -- TA1 ---------------------------------------------------------------------------------------
def write_ta1(ic: Interchange, out: X12Writer) -> None:
    code = ic.ta1_codes[0] if ic.ta1_codes else "000"
    out.segment("TA1", ic.field(13) or "000000000", ic.field(9) or "000000",
                ic.field(10) or "0000", "R" if ic.ta1_codes else "A", code)


# -- 999 ---------------------------------------------------------------------------------------
def _write_ik3(out: X12Writer, finding: Finding, catalogue: RuleCatalogue,
               claim_id: str | None) -> None:
    ctx = finding.context or {}
    ack = catalogue.rule(finding.rule).ack
    out.segment("IK3", ctx.get("segment_id", ""), ctx.get("position", ""),
                ctx.get("loop", ""), ack.get("ik3", "8"))
    if claim_id is not None:
        out.segment("CTX", out.composite("CLM01", claim_id))
    if "ik4" in ack and ctx.get("element"):
        position = out.composite(ctx["element"], ctx.get("component") or "")
        out.segment("IK4", position, ctx.get("data_element", ""), ack["ik4"])


def write_999_group(out: X12Writer, interchange: int, group: Group,
                    verdicts: list[TransactionVerdict], acks: Acknowledgments,
                    result: X12Result, catalogue: RuleCatalogue, control: str) -> None:
    out.st("999", control, ACK_999)
    out.segment("AK1", group.functional_id, group.control_number, group.version)
    claim_errors = acks.claim_errors
    accepted = 0
    for verdict in verdicts:
        ts = verdict.ts
        out.segment("AK2", ts.st01, ts.st02, ts.st03)
        key = (interchange, group.index, ts.index)
        # every locatable error of the set in file order, whatever the verdict (a rejected set
        # still lists its claim-level errors, so one round trip fixes them all)
        listed: list[tuple[int, int, Finding, str | None]] = [
            (f.segment or 0, 0, f, None) for f in verdict.segment_findings]
        seen: set[int] = set()
        for position, claim in enumerate(result.claims):
            if claim.transaction != key:
                continue
            for finding in claim_errors.get(position, []):
                if id(finding) in seen or not in_999(finding, catalogue):
                    continue  # business rules are answered in the 277CA, not the 999
                seen.add(id(finding))
                listed.append((finding.segment or 0, 1, finding, claim.claim_id))
        listed.sort(key=lambda item: (item[0], item[1]))
        for _, _, finding, claim_id in listed[:MAX_IK3_PER_SET]:
            _write_ik3(out, finding, catalogue, claim_id)
        noted = any(claim_id is not None for _, _, _, claim_id in listed)
        if verdict.code == "A" and noted:
            verdict.code = "E"
            verdict.syntax_codes = ["5"]
        out.segment("IK5", verdict.code, *verdict.syntax_codes)
        if verdict.code != "R":
            accepted += 1
    received = len(verdicts)
    included = received  # AK902: the sets included in the group as received
    if group.error_codes:
        status = "R"
        accepted = 0
    elif accepted == received and all(v.code == "A" for v in verdicts):
        status = "A"
    elif accepted == received:
        status = "E"
    elif accepted:
        status = "P"
    else:
        status = "R"
    out.segment("AK9", status, included, received, accepted, *list(dict.fromkeys(
        group.error_codes))[:5])
    out.se()


# -- 277CA ------------------------------------------------------------------------------------
def _money(text: str) -> Decimal:
    try:
        return Decimal(text)
    except (InvalidOperation, TypeError):
        return Decimal(0)


def _status_codes(findings: list[Finding], catalogue: RuleCatalogue) -> list[str]:
    codes = []
    for finding in findings:
        code = catalogue.rule(finding.rule).ack.get("claim_status", DEFAULT_CLAIM_STATUS)
        if code not in codes:
            codes.append(code)
    return codes[:3] or [DEFAULT_CLAIM_STATUS]


def write_277ca_transaction(out: X12Writer, ts: TransactionSet, claims: list[ClaimRecord],
                            rejected: dict[int, list[Finding]], positions: dict[int, int],
                            result: X12Result, catalogue: RuleCatalogue, sender: AckParty,
                            submitter: tuple[str, str], when: datetime, control: str,
                            received: datetime) -> None:
    from gateway.x12.writer import amount

    out.st("277", control, ACK_277CA)
    day = when.strftime("%Y%m%d")
    out.segment("BHT", "0085", "08", f"{control}{ts.st02}"[:30], day, when.strftime("%H%M"),
                "TH")
    def totals(of: list[ClaimRecord], qualifiers: tuple[str, str]) -> None:
        # 2200B counts claims with QTY 90/AA, 2200C with QA/QC
        ok = [c for c in of if id(c) not in rejected]
        bad = [c for c in of if id(c) in rejected]
        if ok:
            out.segment("QTY", qualifiers[0], len(ok))
        if bad:
            out.segment("QTY", qualifiers[1], len(bad))
        if ok:
            out.segment("AMT", "YU", amount(sum((_money(c.charge) for c in ok), Decimal(0))))
        if bad:
            out.segment("AMT", "YY", amount(sum((_money(c.charge) for c in bad), Decimal(0))))

    hl = 1
    out.segment("HL", hl, "", "20", "1")
    out.segment("NM1", "AY", "2", sender.name, "", "", "", "", "46", sender.id)
    out.segment("TRN", "1", f"{ts.st02}")
    out.segment("DTP", "050", "D8", received.strftime("%Y%m%d"))
    out.segment("DTP", "009", "D8", day)
    hl += 1
    receiver_hl = hl
    out.segment("HL", hl, 1, "21", "1")
    out.segment("NM1", "41", "2", submitter[0] or "SUBMITTER", "", "", "", "", "46",
                submitter[1] or "UNKNOWN")
    out.segment("TRN", "2", ts.st02)
    total = amount(sum((_money(c.charge) for c in claims), Decimal(0)))
    out.segment("STC", out.composite("A1", "19", "PR"), day, "WQ", total)
    totals(claims, ("90", "AA"))
    previous_billing = None
    billing_hl = 0
    runs: dict[int, list[ClaimRecord]] = {}  # consecutive claims of one billing provider
    for claim in claims:
        billing = (claim.billing_npi, claim.billing_name)
        if billing != previous_billing:
            run: list[ClaimRecord] = []
            runs[id(claim)] = run
            previous_billing = billing
        run.append(claim)
    previous_billing = None
    for claim in claims:
        billing = (claim.billing_npi, claim.billing_name)
        if billing != previous_billing:
            hl += 1
            billing_hl = hl
            out.segment("HL", hl, receiver_hl, "19", "1")
            out.segment("NM1", "85", "2", claim.billing_name or "BILLING PROVIDER", "", "", "",
                        "", "XX", claim.billing_npi or "0000000000")
            out.segment("TRN", "1", claim.billing_npi or "0")
            group = runs[id(claim)]
            charge = amount(sum((_money(c.charge) for c in group), Decimal(0)))
            out.segment("STC", out.composite("A1", "19", "PR"), "", "WQ", charge)
            totals(group, ("QA", "QC"))
            previous_billing = billing
        hl += 1
        out.segment("HL", hl, billing_hl, "PT")
        out.segment("NM1", "QC", "1", claim.member_last or "UNKNOWN", claim.member_first, "",
                    "", "", "MI" if claim.member_id else "", claim.member_id)
        out.segment("TRN", "2", claim.claim_id or "0")
        charge = amount(_money(claim.charge))
        if id(claim) in rejected:
            codes = _status_codes(rejected[id(claim)], catalogue)
            # a status may name its entity ("109:IL"): category, status, entity components
            extra = [out.composite("A7", *c.split(":")) for c in codes[1:]]
            while len(extra) < 2:
                extra.append("")
            out.segment("STC", out.composite("A7", *codes[0].split(":")), day, "U", charge,
                        "", "", "", "", "", *extra, _reason_text(rejected[id(claim)], out))
        else:
            out.segment("STC", out.composite("A2", "20"), day, "WQ", charge)
            out.segment("REF", "1K", f"{control}{positions[id(claim)]:06d}")
        if claim.service_from:
            if claim.service_to and claim.service_to != claim.service_from:
                out.segment("DTP", "472", "RD8", f"{claim.service_from}-{claim.service_to}")
            else:
                out.segment("DTP", "472", "D8", claim.service_from)
        else:
            out.segment("DTP", "472", "D8", received.strftime("%Y%m%d"))
    out.se()


def _reason_text(findings: list[Finding], out: X12Writer) -> str:
    """STC12: the rules that rejected the claim, in words the submitter can act on."""
    text = "; ".join(dict.fromkeys(f"{f.rule} {f.message}" for f in findings))
    for delimiter in (out.d.element, out.d.component, out.d.repetition, out.d.segment):
        text = text.replace(delimiter, " ")
    return text[:264].rstrip()


# -- all together -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AckControls:
    interchange: int
    group: int


def acknowledge(result: X12Result, *, controls: AckControls, when: datetime,
                sender: AckParty = AckParty(), catalogue: RuleCatalogue | None = None,
                received: datetime | None = None) -> Acknowledgments:
    """TA1 / 999 / 277CA texts for ``result`` (None where an acknowledgment does not apply)."""
    from gateway.x12.writer import X12Writer

    catalogue = catalogue or default_catalogue()
    received = received or when
    acks = judge(result, catalogue)
    verdicts = {id(v.ts): v for v in acks.verdicts}
    refused = {id(c) for c in acks.rejected_claims}
    rejected_ids = {id(c): acks.claim_errors.get(p, []) or [_problem_finding(c, catalogue)]
                    for p, c in enumerate(result.claims) if id(c) in refused}
    positions = {id(c): p + 1 for p, c in enumerate(result.claims)}
    ta1, a999, a277 = StringIO(), StringIO(), StringIO()
    w_ta1, w_999, w_277 = X12Writer(ta1), X12Writer(a999), X12Writer(a277)
    interchange_control = controls.interchange
    group_control = controls.group
    for ic in result.interchanges:
        header = dict(sender_qualifier=ic.field(7) or "ZZ", sender_id=ic.field(8).strip() or
                      sender.id, receiver_qualifier=ic.field(5) or "ZZ",
                      receiver_id=ic.field(6).strip() or "UNKNOWN", when=when,
                      usage=ic.field(15) if ic.field(15) in ("P", "T") else "P")
        if ic.ta1_codes or ic.field(14) == "1":
            w_ta1.isa(control=interchange_control, **header)
            write_ta1(ic, w_ta1)
            w_ta1.iea()
            interchange_control += 1
        if ic.ta1_codes:
            continue
        w_999.isa(control=interchange_control, **header)
        interchange_control += 1
        for group in ic.groups:
            w_999.gs(functional_id="FA", sender=group.gs[3] if len(group.gs) > 3 else sender.id,
                     receiver=group.gs[2] if len(group.gs) > 2 else "UNKNOWN", when=when,
                     control=group_control, version=ACK_999)
            write_999_group(w_999, ic.index, group,
                            [verdicts[id(t)] for t in group.transactions], acks, result,
                            catalogue, "0001")
            w_999.ge()
            group_control += 1
        w_999.iea()
        # 277CA: the 837 transaction sets the 999 accepted
        groups_837 = [g for g in ic.groups if any(t.st01 == "837" for t in g.transactions)]
        if not groups_837 or not result.claims:
            continue
        w_277.isa(control=interchange_control, **header)
        interchange_control += 1
        for group in groups_837:
            accepted_ts = [t for t in group.transactions
                           if t.st01 == "837" and verdicts[id(t)].code != "R"]
            if not accepted_ts:
                continue
            w_277.gs(functional_id="HN", sender=group.gs[3] if len(group.gs) > 3 else sender.id,
                     receiver=group.gs[2] if len(group.gs) > 2 else "UNKNOWN", when=when,
                     control=group_control, version=ACK_277CA)
            group_control += 1
            by_ts: dict[tuple, list[ClaimRecord]] = {}
            for claim in result.claims:
                by_ts.setdefault(claim.transaction, []).append(claim)
            for number, ts in enumerate(accepted_ts, start=1):
                key = (ic.index, group.index, ts.index)
                claims = by_ts.get(key, [])
                write_277ca_transaction(
                    w_277, ts, claims, rejected_ids, positions, result, catalogue, sender,
                    _submitter(result, key), when, f"{number:04d}", received)
            w_277.ge()
        w_277.iea()
    acks.ta1 = ta1.getvalue() or None
    acks.ack999 = a999.getvalue() or None
    text_277 = a277.getvalue()
    acks.ack277ca = text_277 if "ST*277" in text_277 else None
    return acks


def _problem_finding(claim: ClaimRecord, catalogue: RuleCatalogue) -> Finding:
    return catalogue.finding("X12-837-CLAIM", f"claim {claim.claim_id}", claim.start,
                             problem=claim.problem or "")


def _submitter(result: X12Result, key: tuple[int, int, int]) -> tuple[str, str]:
    return result.submitters.get(key, ("", ""))
