"""The X12 274 provider directory (004050X109, DHCS Provider Network file): writer and reader.

Structure (profiles/x12/274.4050.X109.xml, assumptions A1-A5 there and in the README):

    ISA (ISA01 03, ISA12 00405) GS*PW ... 004050X109  ST*274*...*004050X109
    BHT*0028*27*ref*date*time  DTM*507*as-of  PER*BJ
    HL 20  2100AA NM1*PR  (the plan)
    HL 21  2100BA NM1*40  (DHCS)
    HL 4   2100CA NM1*QV group, REF*EI TIN, DTP*092/093 contract, 2120CA LQ
    HL N   2100DA NM1*77 site, N2, PER*AJ, LUI, WS, CRC, PDI, N3, N4 (N405 CY county),
           2120DA LQ + TPB
    HL 19  2100EA NM1*1P provider, DEG, LUI, 2120EA LQ*PXC taxonomy + TPB roles, ECM/CS flags

The writer streams: one :class:`~gateway.directory.model.Group` at a time. The reader streams
too: it yields each group when the next group (or the trailer) begins, and records located
findings (``ISA#1/GS#1/ST#1/2000E[7]/2100EA/NM109``) for what it cannot take, skipping only
the loop concerned. Pure format code: no store, no routing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime
from typing import BinaryIO, TextIO

from gateway.directory.flags import Flags, load_flags
from gateway.directory.model import Directory, Group, Hours, Provider, Site
from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular.validate import luhn_npi_ok
from gateway.x12.reader import NotX12Error, Segment, X12Reader
from gateway.x12.writer import ControlNumbers, EnvelopeSettings, X12Writer

GUIDE = "004050X109"
DHCS_RECEIVER = "DHCS-PROVNETWK"  # ISA08 and GS03 [DHCS 274 companion guide]
TAXONOMY_QUALIFIER = "PXC"  # LQ01 of the NUCC taxonomy (assumed, README A4)
LANGUAGE_QUALIFIER = "LE"  # LUI01 ISO 639 (assumed)
SITE_ID_QUALIFIER = "ZZ"  # NM108 of the site (assumed)
GROUP_TIN_QUALIFIER = "EI"
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


def _d8(value: date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


# -- writer ---------------------------------------------------------------------------------------
class Directory274Writer:
    """Writes one 274 interchange: header on construction, a group per :meth:`write`,
    trailers on :meth:`close` (which returns the number of providers written)."""

    def __init__(self, out: TextIO, directory: Directory, settings: EnvelopeSettings,
                 controls: ControlNumbers, when: datetime, flags: Flags | None = None) -> None:
        self.flags = flags or load_flags()
        self.w = w = X12Writer(out, line_break=settings.line_break)
        self.hl = 0
        self.providers = 0
        self.groups = 0
        w.isa(sender_qualifier=settings.sender_qualifier, sender_id=settings.sender_id,
              receiver_qualifier=settings.receiver_qualifier, receiver_id=settings.receiver_id,
              when=when, control=controls.interchange, usage=settings.usage,
              ack_requested=settings.acknowledgment_requested,
              authorization_qualifier=settings.authorization_qualifier,
              authorization=settings.authorization, version=settings.interchange_version)
        w.gs(functional_id="PW", sender=settings.application_sender,
             receiver=settings.application_receiver, when=when, control=controls.group,
             version=GUIDE)
        w.st("274", f"{controls.transaction:04d}", GUIDE)
        w.segment("BHT", "0028", "27", directory.reference or f"{controls.interchange}",
                  when.strftime("%Y%m%d"), when.strftime("%H%M"))
        w.segment("DTM", "507", _d8(directory.as_of or when.date()))
        if directory.contact_name or directory.contact_phone:
            w.segment("PER", "BJ", directory.contact_name,
                      "TE" if directory.contact_phone else "", directory.contact_phone)
        w.segment("HL", self._next(), "", "20", "1")
        w.segment("NM1", "PR", "2", directory.plan_name, "", "", "", "", "PI",
                  directory.plan_id)
        self._receiver = self._next()
        w.segment("HL", self._receiver, "1", "21", "1")
        w.segment("NM1", "40", "2", directory.receiver_name, "", "", "", "", "46",
                  directory.receiver_id)

    def _next(self) -> int:
        self.hl += 1
        return self.hl

    def write(self, group: Group) -> None:
        w = self.w
        group_hl = self._next()
        w.segment("HL", group_hl, self._receiver, "4", "1" if group.sites else "0")
        w.segment("NM1", "QV", "2", group.name, "", "", "", "", "XX" if group.npi else "",
                  group.npi)
        if group.tin:
            w.segment("REF", GROUP_TIN_QUALIFIER, group.tin)
        if group.contract_start:
            w.segment("DTP", "092", "D8", _d8(group.contract_start))
        if group.contract_end:
            w.segment("DTP", "093", "D8", _d8(group.contract_end))
        for code in group.specialties:
            w.segment("LQ", TAXONOMY_QUALIFIER, code)
        for site in group.sites:
            self._site(site, group_hl)
        self.groups += 1

    def _site(self, site: Site, parent: int) -> None:
        w = self.w
        site_hl = self._next()
        w.segment("HL", site_hl, parent, "N", "1" if site.providers else "0")
        w.segment("NM1", "77", "2", site.name, "", "", "", "",
                  SITE_ID_QUALIFIER if site.id else "", site.id)
        if site.indicators:
            w.segment("N2", *site.indicators[:2])
        if site.phone:
            w.segment("PER", "AJ", "", "TE", site.phone)
        for code in site.languages:
            w.segment("LUI", LANGUAGE_QUALIFIER, code)
        for hours in site.hours:
            w.segment("WS", hours.day, hours.opens, hours.closes)
        for code in site.accessibility:
            w.segment("CRC", "ZZ", "Y", code)
        if site.gender or site.age_min is not None or site.age_max is not None:
            w.segment("PDI", site.gender,
                      "" if site.age_min is None else site.age_min,
                      "" if site.age_max is None else site.age_max)
        if site.address1:
            w.segment("N3", site.address1, site.address2)
        if site.city or site.state or site.zip or site.county:
            w.segment("N4", site.city, site.state, site.zip, "", "CY" if site.county else "",
                      site.county)
        self._specialties(site.specialties, site.roles)
        for provider in site.providers:
            self._provider(provider, site_hl)

    def _specialties(self, codes: list[str], roles: list[str]) -> None:
        """LQ*PXC per code; the network roles (TPB) follow the first (README A4)."""
        w = self.w
        for index, code in enumerate(codes):
            w.segment("LQ", TAXONOMY_QUALIFIER, code)
            if index == 0:
                for role in roles:
                    w.segment("TPB", role)
        if roles and not codes:
            w.segment("LQ")  # an LQ without codes carries roles of no particular specialty
            for role in roles:
                w.segment("TPB", role)

    def _provider(self, provider: Provider, parent: int) -> None:
        w = self.w
        w.segment("HL", self._next(), parent, "19", "0")
        w.segment("NM1", "1P", "1", provider.last_name, provider.first_name,
                  provider.middle_name, "", "", "XX" if provider.npi else "", provider.npi)
        flags = self.flags
        raised = [(m, s) for m, s in self._markers(provider) if m.loop == "2100EA"]
        for marker, service in sorted(raised, key=lambda item: item[0].segment != "REF"):
            w.segment(*marker.render(service))
        for degree in provider.degrees:
            w.segment("DEG", degree)
        for code in provider.languages:
            w.segment("LUI", LANGUAGE_QUALIFIER, code)
        self._specialties(provider.taxonomies, provider.roles)
        for marker, service in self._markers(provider):
            if marker.loop == "2120EA":
                w.segment(*marker.render(service))
        del flags
        self.providers += 1

    def _markers(self, provider: Provider):
        flags = self.flags
        if provider.ecm:
            yield flags.ecm, ""
        if provider.cs:
            yield flags.cs, ""
        for service in provider.cs_services:
            yield flags.cs_service, service

    def close(self) -> int:
        w = self.w
        w.se()
        w.ge()
        w.iea()
        return self.providers


# -- reader ---------------------------------------------------------------------------------------
_LEVEL_LOOPS = {"20": "2000A", "21": "2000B", "4": "2000C", "N": "2000D", "19": "2000E"}
_NAME_LOOPS = {"20": "2100AA", "21": "2100BA", "4": "2100CA", "N": "2100DA", "19": "2100EA"}
_SPEC_LOOPS = {"4": "2120CA", "N": "2120DA", "19": "2120EA"}
_PARENT_LEVEL = {"20": None, "21": "20", "4": "21", "N": "4", "19": "N"}
# segments each name loop takes (the map's 2100xx children), and its 2120 loop's
_NAME_SEGMENTS = {"20": {"NM1"}, "21": {"NM1"}, "4": {"NM1", "REF", "DTP"},
                  "N": {"NM1", "N2", "PER", "LUI", "WS", "CRC", "PDI", "N3", "N4"},
                  "19": {"NM1", "REF", "N2", "DEG", "LUI"}}
_ENTITY = {"20": {"PR", "2B", "36"}, "21": {"40", "PR", "2B"}, "4": {"QV"}, "N": {"77"},
           "19": {"1P"}}


class _Bad(Exception):
    def __init__(self, rule: str, element: str = "", **values) -> None:
        self.rule, self.element, self.values = rule, element, values


def _date(text: str, element: str) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise _Bad("DIR-274-007", element, what="date", expected="CCYYMMDD") from None


class Directory274Reader:
    """Iterate for the groups of a 274; ``directory`` (the header) is filled once the first
    group is read; ``findings`` and ``stats`` are complete when iteration ends.

    Raises :class:`~gateway.x12.reader.NotX12Error` when the input is not X12 at all."""

    def __init__(self, source: BinaryIO | str | os.PathLike | bytes, *,
                 flags: Flags | None = None, catalogue: RuleCatalogue | None = None) -> None:
        self.flags = flags or load_flags()
        self.catalogue = catalogue or default_catalogue()
        self._reader = X12Reader(source)
        self.delimiters = self._reader.delimiters
        self.directory = Directory(plan_id="", plan_name="")
        self.findings: list[Finding] = []
        self.stats = {"transactions": 0, "groups": 0, "sites": 0, "providers": 0,
                      "skipped_loops": 0}

    # findings --------------------------------------------------------------------------------
    def _find(self, rule: str, seg: Segment | None, where: str, **values) -> None:
        finding = self.catalogue.finding(rule, where, seg.ordinal if seg else None, **values)
        if finding is not None:
            self.findings.append(finding)

    def _where(self, loop: str = "", seg: str = "", element: str = "") -> str:
        parts = [f"ISA#{self._isa}", f"GS#{self._gs}", f"ST#{self._st}"]
        if self._hl_loop:
            parts.append(f"{self._hl_loop}[{self._hl_index}]")
        if loop:
            parts.append(loop)
        tail = element or seg
        if tail:
            parts.append(tail)
        return "/".join(parts)

    # reading ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Group]:
        self._isa = self._gs = self._st = 0
        self._hl_loop, self._hl_index = "", 0
        loop_counts: dict[str, int] = {}
        levels: dict[str, str] = {}  # HL01 -> level code (of loops we took)
        skipped: set[str] = set()  # HL01 of skipped loops (their children are skipped too)
        level = None  # current HL level code
        group: Group | None = None
        site: Site | None = None
        provider: Provider | None = None
        in_spec = False  # inside a 2120 loop
        spec_first = False  # the current 2120 loop is the first of its owner
        spec_count = 0
        skipping = False
        st_segments = 0
        in_transaction = False
        flags = self.flags.markers()
        header_done = False
        try:
            for seg in self._reader:
                sid = seg.fields[0]
                if in_transaction:
                    st_segments += 1
                if sid == "ISA":
                    self._isa += 1
                    self._gs = 0
                    for pos, want in ((1, "03"), (8, DHCS_RECEIVER)):
                        if seg.get(pos).strip() != want:
                            self._find("DIR-274-012", seg, f"ISA#{self._isa}/ISA{pos:02d}",
                                       element=f"ISA{pos:02d}", expected=want)
                    continue
                if sid == "GS":
                    self._gs += 1
                    self._st = 0
                    if seg.get(3) != DHCS_RECEIVER:
                        self._find("DIR-274-012", seg, self._where(element="GS03"),
                                   element="GS03", expected=DHCS_RECEIVER)
                    if seg.get(8) != GUIDE or seg.get(1) != "PW":
                        self._find("DIR-274-001", seg, self._where(element="GS08"),
                                   found=f"GS01 {seg.get(1) or '(empty)'}, GS08 "
                                         f"{seg.get(8) or '(empty)'}")
                    continue
                if sid in ("GE", "IEA"):
                    continue
                if sid == "ST":
                    self._st += 1
                    self.stats["transactions"] += 1
                    in_transaction, st_segments = True, 1
                    self._hl_loop, self._hl_index = "", 0
                    loop_counts.clear()
                    levels.clear()
                    skipped.clear()
                    level = None
                    if seg.get(1) != "274" or seg.get(3) != GUIDE:
                        self._find("DIR-274-001", seg, self._where(element="ST03"),
                                   found=f"ST01 {seg.get(1) or '(empty)'}, ST03 "
                                         f"{seg.get(3) or '(empty)'}")
                    continue
                if sid == "SE":
                    if group is not None:
                        yield self._finish_group(group)
                        group = site = provider = None
                    self._hl_loop = ""
                    if seg.get(1) != str(st_segments):
                        self._find("DIR-274-009", seg, self._where(element="SE01"),
                                   found=seg.get(1) or "(empty)", counted=st_segments)
                    in_transaction = False
                    self._hl_loop = ""
                    continue
                if not in_transaction:
                    self._find("DIR-274-002", seg, self._where(seg=sid), segment=sid,
                               loop="the envelope (outside ST/SE)")
                    continue
                if sid == "HL":
                    hl_id, parent, code = seg.get(1), seg.get(2), seg.get(3)
                    loop = _LEVEL_LOOPS.get(code)
                    loop_counts[loop or "HL"] = loop_counts.get(loop or "HL", 0) + 1
                    self._hl_loop = loop or "HL"
                    self._hl_index = loop_counts[self._hl_loop]
                    in_spec, spec_count, skipping = False, 0, False
                    if parent in skipped:
                        skipped.add(hl_id)
                        skipping = True
                        self.stats["skipped_loops"] += 1
                        continue
                    if loop is None:
                        self._find("DIR-274-004", seg, self._where(element="HL03"),
                                   found=code or "(empty)")
                        skipped.add(hl_id)
                        skipping = True
                        self.stats["skipped_loops"] += 1
                        continue
                    parent_level = levels.get(parent) if parent else None
                    if parent_level != _PARENT_LEVEL[code]:
                        shown = {None: "none", "20": "20 (information source)",
                                 "21": "21 (information receiver)", "4": "4 (provider group)",
                                 "N": "N (site)", "19": "19 (provider)"}
                        self._find("DIR-274-003", seg, self._where(element="HL02"),
                                   level=f"{code} ({self._hl_loop})",
                                   parent=shown.get(parent_level, "unknown")
                                   if parent else "none",
                                   expected=shown[_PARENT_LEVEL[code]])
                        skipped.add(hl_id)
                        skipping = True
                        self.stats["skipped_loops"] += 1
                        continue
                    levels[hl_id] = code
                    level = code
                    if code == "4":
                        if group is not None:
                            yield self._finish_group(group)
                        group, site, provider = None, None, None
                    elif code == "N":
                        site, provider = None, None
                    elif code == "19":
                        provider = None
                    continue
                if skipping:
                    continue
                if level is None:
                    if sid in ("BHT", "DTM", "PER") and not header_done:
                        self._header(seg)
                        continue
                    self._find("DIR-274-002", seg, self._where(seg=sid), segment=sid,
                               loop="the transaction header")
                    continue
                try:
                    if sid == "LQ" and level in _SPEC_LOOPS:
                        in_spec = True
                        spec_count += 1
                        spec_first = spec_count == 1
                        owner = {"4": group, "N": site, "19": provider}[level]
                        if owner is None:
                            continue
                        if level == "19" and self._flag(provider, seg, flags, "2120EA"):
                            spec_first = False
                            continue
                        self._lq(owner, seg, level, spec_first)
                        continue
                    if sid == "TPB" and in_spec:
                        owner = {"N": site, "19": provider}.get(level)
                        if owner is None:
                            raise _Bad("DIR-274-002", segment="TPB",
                                       loop=_SPEC_LOOPS[level], seg_only=True)
                        if not seg.get(1):
                            raise _Bad("DIR-274-005", "TPB01", what="network role")
                        if spec_first:
                            owner.roles.append(seg.get(1))
                        else:
                            self._find("DIR-274-010", seg, self._where(_SPEC_LOOPS[level],
                                                                       element="TPB01"))
                        continue
                    if in_spec or sid not in _NAME_SEGMENTS[level]:
                        where = _SPEC_LOOPS[level] if in_spec else _NAME_LOOPS[level]
                        self._find("DIR-274-002", seg, self._where(where, seg=sid),
                                   segment=sid, loop=where)
                        continue
                    if level == "20" or level == "21":
                        self._party(seg, level)
                        header_done = True
                    elif level == "4":
                        if sid == "NM1":
                            group = self._group(seg)
                        elif group is not None:
                            self._group_segment(group, seg)
                    elif level == "N":
                        if group is None:
                            continue
                        if sid == "NM1":
                            site = self._site(seg)
                            if site is not None:
                                group.sites.append(site)
                        elif site is not None:
                            self._site_segment(site, seg)
                    elif level == "19":
                        if site is None:
                            continue
                        if sid == "NM1":
                            provider = self._provider(seg)
                            if provider is not None:
                                site.providers.append(provider)
                        elif provider is not None:
                            if not self._flag(provider, seg, flags, "2100EA"):
                                self._provider_segment(provider, seg)
                except _Bad as bad:
                    loop = _SPEC_LOOPS[level] if in_spec else _NAME_LOOPS[level]
                    if bad.values.pop("seg_only", False):
                        where = self._where(loop, seg=sid)
                    else:
                        where = self._where(loop, element=bad.element or sid)
                    self._find(bad.rule, seg, where, **bad.values)
            if group is not None:
                yield self._finish_group(group)
        finally:
            self._reader.close()

    # header and parties --------------------------------------------------------------------
    def _header(self, seg: Segment) -> None:
        d = self.directory
        sid = seg.fields[0]
        if sid == "BHT":
            d.reference = seg.get(3)
        elif sid == "DTM" and seg.get(2):
            try:
                d.as_of = _date(seg.get(2), "DTM02")
            except _Bad:
                self._find("DIR-274-007", seg, self._where(element="DTM02"), what="date",
                           expected="CCYYMMDD")
        elif sid == "PER":
            d.contact_name = seg.get(2)
            d.contact_phone = seg.get(4) if seg.get(3) == "TE" else ""

    def _party(self, seg: Segment, level: str) -> None:
        if seg.get(1) not in _ENTITY[level]:
            raise _Bad("DIR-274-006", "NM101", found=seg.get(1) or "(empty)",
                       expected=", ".join(sorted(_ENTITY[level])))
        if level == "20":
            self.directory.plan_name, self.directory.plan_id = seg.get(3), seg.get(9)
        else:
            self.directory.receiver_name = seg.get(3)
            self.directory.receiver_id = seg.get(9)

    def _npi(self, seg: Segment, required: bool) -> str:
        npi = seg.get(9)
        if not npi:
            if required:
                raise _Bad("DIR-274-005", "NM109", what="NPI")
            return ""
        if seg.get(8) == "XX" and not (len(npi) == 10 and npi.isdigit() and luhn_npi_ok(npi)):
            raise _Bad("DIR-274-008", "NM109")
        return npi

    # groups ----------------------------------------------------------------------------------
    def _group(self, seg: Segment) -> Group:
        if seg.get(1) != "QV":
            raise _Bad("DIR-274-006", "NM101", found=seg.get(1) or "(empty)", expected="QV")
        if not seg.get(3):
            raise _Bad("DIR-274-005", "NM103", what="provider group name")
        return Group(npi=self._npi(seg, required=False), name=seg.get(3))

    def _group_segment(self, group: Group, seg: Segment) -> None:
        sid = seg.fields[0]
        if sid == "REF":
            if seg.get(1) == GROUP_TIN_QUALIFIER:
                group.tin = seg.get(2)
        elif sid == "DTP":
            qualifier = seg.get(1)
            if seg.get(2) != "D8":
                raise _Bad("DIR-274-007", "DTP02", what="date format", expected="D8")
            value = _date(seg.get(3), "DTP03")
            if qualifier == "092":
                group.contract_start = value
            elif qualifier == "093":
                group.contract_end = value
            else:
                raise _Bad("DIR-274-006", "DTP01", found=qualifier or "(empty)",
                           expected="092, 093")

    def _lq(self, owner, seg: Segment, level: str, first: bool) -> None:
        qualifier, code = seg.get(1), seg.get(2)
        if not qualifier and not code:
            return  # an LQ only opening a loop for roles
        if qualifier != TAXONOMY_QUALIFIER:
            raise _Bad("DIR-274-011", "LQ01", found=qualifier or "(empty)")
        target = owner.specialties if level in ("4", "N") else owner.taxonomies
        target.append(code)

    # sites -----------------------------------------------------------------------------------
    def _site(self, seg: Segment) -> Site | None:
        if seg.get(1) != "77":
            raise _Bad("DIR-274-006", "NM101", found=seg.get(1) or "(empty)", expected="77")
        if not seg.get(3):
            raise _Bad("DIR-274-005", "NM103", what="site name")
        return Site(id=seg.get(9), name=seg.get(3))

    def _site_segment(self, site: Site, seg: Segment) -> None:
        sid = seg.fields[0]
        if sid == "N2":
            site.indicators = [v for v in seg.fields[1:3]]
        elif sid == "PER":
            if seg.get(3) == "TE":
                site.phone = seg.get(4)
        elif sid == "LUI":
            if seg.get(2):
                site.languages.append(seg.get(2))
        elif sid == "WS":
            day = seg.get(1)
            if day not in DAYS:
                raise _Bad("DIR-274-006", "WS01", found=day or "(empty)",
                           expected=", ".join(DAYS))
            site.hours.append(Hours(day, seg.get(2), seg.get(3)))
        elif sid == "CRC":
            if seg.get(2) == "Y" and seg.get(3):
                site.accessibility.append(seg.get(3))
        elif sid == "PDI":
            site.gender = seg.get(1)
            for attr, pos in (("age_min", 2), ("age_max", 3)):
                text = seg.get(pos)
                if text:
                    if not text.isdigit():
                        raise _Bad("DIR-274-007", f"PDI{pos:02d}", what="age",
                                   expected="whole years")
                    setattr(site, attr, int(text))
        elif sid == "N3":
            site.address1, site.address2 = seg.get(1), seg.get(2)
        elif sid == "N4":
            site.city, site.state, site.zip = seg.get(1), seg.get(2), seg.get(3)
            if seg.get(5) == "CY":
                site.county = seg.get(6)

    # providers -------------------------------------------------------------------------------
    def _provider(self, seg: Segment) -> Provider | None:
        if seg.get(1) != "1P":
            raise _Bad("DIR-274-006", "NM101", found=seg.get(1) or "(empty)", expected="1P")
        if not seg.get(3):
            raise _Bad("DIR-274-005", "NM103", what="provider last name")
        return Provider(npi=self._npi(seg, required=True), last_name=seg.get(3),
                        first_name=seg.get(4), middle_name=seg.get(5))

    def _provider_segment(self, provider: Provider, seg: Segment) -> None:
        sid = seg.fields[0]
        if sid == "DEG":
            if seg.get(1):
                provider.degrees.append(seg.get(1))
        elif sid == "LUI":
            if seg.get(2):
                provider.languages.append(seg.get(2))

    def _flag(self, provider: Provider | None, seg: Segment, flags, loop: str) -> bool:
        if provider is None:
            return False
        for name, marker in flags:
            if marker.loop != loop:
                continue
            captured = marker.match(seg.fields)
            if captured is None:
                continue
            if name == "ecm":
                provider.ecm = True
            elif name == "cs":
                provider.cs = True
            else:
                provider.cs_services.append(captured)
            return True
        return False

    def _finish_group(self, group: Group) -> Group:
        self.stats["groups"] += 1
        self.stats["sites"] += len(group.sites)
        self.stats["providers"] += group.provider_count()
        return group


def read_274(source, **options) -> tuple[Directory, list[Group], list[Finding]]:
    """The whole directory in memory (small files and tests)."""
    reader = Directory274Reader(source, **options)
    groups = list(reader)
    return reader.directory, groups, reader.findings


__all__ = ["Directory274Reader", "Directory274Writer", "NotX12Error", "read_274"]
