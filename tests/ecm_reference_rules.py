"""THE REFERENCE (test oracle only): the ECM rule engine as it was before the fast path
(gateway/ecm/rules.py at 4c4bdf8), one method per rule over the pydantic Encounter.
tests/test_ecm_fast_path.py checks that the engine gives exactly its findings.

ECM rules on canonical encounters: member assignment, provider, program overlaps, code sets,
units and duplicate service lines (in the file and against history).

The engine is format-neutral: each encounter comes with a :class:`ClaimPlace` that says where
the claim, its member id and each line sit in the source (X12 paths and segment ordinals for an
837P; rows for an invoice), so findings point at the exact place. Rule ids, severities,
messages and 277CA codes are in ``profiles/rules/ecm.yaml``; code sets in
``profiles/codesets/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from gateway.ecm.codesets import CodeSets, ServiceCode, age_on, load_codesets
# the rule engine's types and helpers that did not change (the fast path reads them as they are)
from gateway.ecm.rules import ClaimPlace, Presumptive, cin_is_valid, covering_assignment
from gateway.ecm.pof import (STAY_KINDS, _matcher, classify, diagnosis_matcher,  # noqa: F401
                             month_start, months_back)
from gateway.ecm.codesets import event_index
from gateway.registry.store import Assignment, HistoryLine
from collections import Counter
from gateway.findings import Finding
from gateway.model.encounter import Encounter, ServiceLine
from gateway.registry.store import Registry, Snapshot, modifier_key, units_text
from gateway.rules import RuleCatalogue, default_catalogue

# -- gateway/ecm/pof.py as it was (events as objects, counted with Counter); the helpers
# that did not change (months_back, month_start, classify, diagnosis_matcher) are imported --
@dataclass
class Event:
    kind: str
    start: date
    end: date
    claims: set[str] = field(default_factory=set)
    diagnoses: set[str] = field(default_factory=set)


def events(history: list[HistoryLine], spec: dict,
           index: tuple[dict, dict] | None = None) -> list[Event]:
    """The member's utilization events: stays as admissions, ED visits once a day, an ED
    visit leading to an inpatient stay folded into the stay."""
    index = index or event_index(spec)
    gap = timedelta(days=int(spec.get("stay_gap_days", 1)))
    by_kind: dict[str, list[HistoryLine]] = {}
    for line in history:
        kind = classify(line, index)
        if kind is not None:
            by_kind.setdefault(kind, []).append(line)
    found: list[Event] = []
    for kind in STAY_KINDS:
        current: Event | None = None
        for line in sorted(by_kind.get(kind, ()), key=lambda x: x.service_date):
            day = line.service_date
            if current is not None and (day <= current.end + gap or line.claim_id
                                        and line.claim_id in current.claims):
                current.end = max(current.end, day)
            else:
                current = Event(kind, day, day)
                found.append(current)
            if line.claim_id:
                current.claims.add(line.claim_id)
            current.diagnoses.update(line.diagnoses)
    window = timedelta(days=int(spec.get("ed_admission_window_days", 1)))
    admissions = [e for e in found if e.kind == "inpatient_stay"]
    visits: dict[date, Event] = {}
    for line in by_kind.get("ed_visit", ()):
        day = line.service_date
        stay = next((a for a in admissions if a.start - window <= day <= a.end), None)
        if stay is not None:  # the ED visit that led to the admission is the stay
            stay.diagnoses.update(line.diagnoses)
            continue
        visit = visits.setdefault(day, Event("ed_visit", day, day))
        visit.diagnoses.update(line.diagnoses)
    found.extend(visits.values())
    return sorted(found, key=lambda e: (e.start, e.kind))


def window(spec: dict, criterion: dict, assignment: Assignment,
           latest: date | None) -> tuple[date, date] | None:
    """The lookback window of a criterion for an assignment (see ``lookback_anchor``)."""
    auth = assignment.authorization_date or assignment.benefit_start
    if auth is None:
        return None
    months = int(criterion["window_months"])
    if spec.get("lookback_anchor", "latest_claims_month") == "authorization_date":
        return months_back(auth, months), auth
    end = min(auth, latest) if latest else auth
    return month_start(end, months - 1), end


def pof_shortfalls(assignments: list[Assignment], history: list[HistoryLine],
                   spec: dict, index: tuple[dict, dict] | None = None,
                   latest: date | None = None) -> list[dict]:
    """For each utilization POF a member is assigned under whose tested alternatives all lack
    evidence in the lookback: the values of the ECM-POF-001 message."""
    gaps = []
    seen: set[str] = set()
    evts = None
    for assignment in assignments:
        for criterion in spec.get("criteria", []):
            codes = criterion["pof"] if isinstance(criterion["pof"], list) else [criterion["pof"]]
            pof = next((c for c in assignment.pof_codes if c in codes), None)
            if pof is None or pof in seen:
                continue
            tested = [o for o in criterion["any_of"] if o.get("at_least") is not None]
            span = window(spec, criterion, assignment, latest)
            if not tested or span is None:
                continue
            seen.add(pof)
            if evts is None:
                evts = events(history, spec, index)
            start, end = span
            lacking = []
            inside = [e for e in evts if start <= e.start <= end]
            for option in tested:
                count = _count(option, inside, spec)
                if count >= int(option["at_least"]):
                    lacking = None
                    break
                lacking.append(f"{option['name']} ({count} found)")
            if lacking:
                other = criterion.get("other_criteria")
                gaps.append({"pof": pof, "criterion": criterion.get("name", pof),
                             "start": start.isoformat(), "end": end.isoformat(),
                             "lacking": "; ".join(lacking),
                             "other": f"; other criteria may qualify the member: {other}"
                             if other else ""})
    return gaps


def _count(option: dict, evts: list[Event], spec: dict) -> int:
    kinds = option["events"]
    wanted = [e for e in evts if e.kind in kinds]
    if option.get("diagnoses"):
        matches = _matcher(spec, option["diagnoses"])
        wanted = [e for e in wanted if matches(e.diagnoses)]
    if option.get("sum_kinds"):
        return len(wanted)
    per_kind = Counter(e.kind for e in wanted)
    return max((per_kind[k] for k in kinds), default=0)


BATCH = 1000


@dataclass
class _Seen:
    label: str


@dataclass
class _ClaimState:
    ecm_days: list[date] = field(default_factory=list)
    unassigned_days: list[date] = field(default_factory=list)
    unassigned: tuple[str, dict] | None = None


class EncounterRules:
    """Apply the ECM rules; keeps within-file duplicate state across batches."""

    def __init__(self, registry: Registry | None = None,
                 catalogue: RuleCatalogue | None = None, codesets: CodeSets | None = None,
                 audience: str = "plan",
                 submitter: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
                 presumptive: Presumptive | dict | None = None) -> None:
        """``audience="submitter"``: the findings go back to the submitter (the server's
        acknowledgments, status and row reports), so a finding about a member who is not
        assigned to the claim's provider on the date is told in the rule's ``to_submitter``
        form (minimum necessary); ``"plan"`` (the operator's command line): full reasons.
        ``submitter``: the submitting partner's ``(NPIs, TINs)``; a member is the submitter's
        when assigned to one of them (not merely to the provider a claim names); None: the
        claim's billing or rendering provider stands for the submitter. ``presumptive``: the
        plan's arrangement, or payer id → arrangement (a server serving several plans)."""
        self.audience = audience
        self.submitter = submitter
        self.registry = registry
        self.catalogue = catalogue or default_catalogue()
        self.codes = codesets or load_codesets()
        self.presumptive = presumptive
        self.loaded = registry.loaded() if registry else {
            "members": False, "providers": False, "history": False, "cs_authorizations": False}
        self.latest_history = registry.latest_history_day() \
            if registry is not None and self.loaded["history"] else None
        self._ecm_codes = frozenset(c for c, rows in self.codes.services.items()
                                    if any(r.program == "ECM" for r in rows))
        self._seen_lines = {}  # line key -> label; any mapping with get / item assignment
        self._units_per_day: dict[tuple, float] = {}
        self._pof_checked: set[str] = set()
        self._first_presumptive: dict[str, dict[str, date]] = {}

    def use_seen_index(self, index) -> None:
        """Keep the file-wide duplicate index elsewhere (e.g. on disk for a huge invoice):
        any object with ``get(key)`` and ``index[key] = label`` (``key`` a tuple)."""
        self._seen_lines = index

    def notes(self) -> list[Finding]:
        """Info findings naming the rule groups that could not run."""
        missing = [("member rules (assignment, programs, POF)", "member information file",
                    "members"), ("provider rules", "provider roster", "providers"),
                   ("duplicate check against history", "encounter history", "history"),
                   ("Community Supports authorization rules", "CS authorization file or MIF CS "
                    "columns", "cs_authorizations")]
        found = []
        for rules, registry, key in missing:
            if not self.loaded.get(key):
                finding = self.catalogue.finding("ECM-REG-001", "file", None, rules=rules,
                                                 registry=registry)
                if finding:
                    found.append(finding)
        return found

    # -- public ---------------------------------------------------------------------------------
    def check(self, batch: list[tuple[Encounter, ClaimPlace]]) -> list[list[Finding]]:
        """Findings for each encounter of the batch, in order. The cyclic collector is
        paused meanwhile: the batch's snapshot (thousands of small objects, alive for the whole
        batch, freed by reference counting after it) would otherwise be promoted and re-scanned
        with everything the caller holds."""
        from gateway.tabular import collector_paused

        with collector_paused():
            return self._check(batch)

    def _check(self, batch: list[tuple[Encounter, ClaimPlace]]) -> list[list[Finding]]:
        snapshot = Snapshot()
        if self.registry is not None and batch:
            cins = {e.member.cin for e, _ in batch}
            npis = {e.billing_provider.npi for e, _ in batch}
            days = [line.service_date for e, _ in batch for line in e.claim.lines]
            snapshot = self.registry.snapshot(
                cins, npis, days=(min(days), max(days)),
                events=(frozenset(self.codes.event_by_place), frozenset(self.codes.event_by_code)),
                ecm_codes=self._ecm_codes if self.presumptive else frozenset())
        if self.presumptive:  # each trusted provider's earliest ECM line in the batch first
            for e, _ in batch:
                arrangement = self._arrangement(e.payer.id)
                npi = e.billing_provider.npi
                if arrangement is None or npi not in arrangement.providers \
                        or snapshot.assignments.get(e.member.cin):
                    continue
                days = [line.service_date for line in e.claim.lines
                        if line.procedure_code in self._ecm_codes]
                if days:
                    ours = self._first_presumptive.setdefault(e.member.cin, {})
                    ours[npi] = min([*days, *([ours[npi]] if npi in ours else [])])
        return [self._check_one(e, place, snapshot) for e, place in batch]

    def _arrangement(self, payer: str):
        return self.presumptive.get(payer) if isinstance(self.presumptive, dict) \
            else self.presumptive

    # -- one encounter --------------------------------------------------------------------------
    def _add(self, out: list[Finding], rule_id: str, where: str, ordinal: int | None,
             restricted: bool = False, anywhere: bool = False, **values) -> None:
        audience = "submitter" if restricted and self.audience == "submitter" else "plan"
        finding = self.catalogue.finding(rule_id, where, ordinal, audience, **values)
        if finding is None:
            return
        if finding.plan_rule:
            # one submitter-form finding per place: how many member rules fired is itself
            # something the submitter may not learn; the plan keeps every reason
            # (``anywhere``: a member-level remark joins the claim's first such finding)
            for i, other in enumerate(out):
                if other.plan_rule and (anywhere or (other.rule, other.location, other.message)
                                        == (finding.rule, finding.location, finding.message)):
                    out[i] = other.model_copy(update={"plan_message": (
                        f"{other.plan_message}; also {finding.plan_rule}: "
                        f"{finding.plan_message}")})
                    return
        out.append(finding)

    @staticmethod
    def _covering(snap: Snapshot, cin: str, day: date):
        """:func:`covering_assignment`, memoised on the batch's snapshot."""
        memo = snap.__dict__.setdefault("_covering", {})
        key = (cin, day)
        if key not in memo:
            memo[key] = covering_assignment(snap.assignments.get(cin, ()), day)
        return memo[key]

    def _assigned_here(self, e: Encounter, line: ServiceLine, snap: Snapshot, day: date) -> bool:
        """Is the member assigned, on ``day``, to the submitter (its NPIs/TINs, else the
        claim's billing or rendering provider)?"""
        return self._assigned_to(e, line, self._covering(snap, e.member.cin, day))

    def _assigned_to(self, e: Encounter, line: ServiceLine, a) -> bool:
        """:meth:`_assigned_here` for the assignment ``a`` covering the line's date."""
        if a is None:
            return False
        if self.submitter is not None:
            npis, tins = self.submitter
            return a.provider_npi in npis or bool(a.provider_tin and a.provider_tin in tins)
        billing = e.billing_provider
        rendering = {p.npi for p in (line.rendering_provider, e.rendering_provider) if p}
        return a.provider_npi in rendering | {billing.npi} or bool(
            a.provider_tin and a.provider_tin == billing.tin)

    def _check_one(self, e: Encounter, place: ClaimPlace, snap: Snapshot) -> list[Finding]:
        out: list[Finding] = []
        cin = e.member.cin
        if not cin_is_valid(cin):
            self._add(out, "ECM-MEM-001", place.member, place.ordinal)
        member_known = bool(snap.assignments.get(cin))
        lines = e.claim.lines
        # the assignment covering each line's date, and whether it is the submitter's: looked
        # up once per line (every rule below reads them)
        covering = [self._covering(snap, cin, line.service_date) for line in lines] \
            if member_known else [None] * len(lines)
        here = [self._assigned_to(e, line, a) for line, a in zip(lines, covering)]
        # a member not assigned to the submitter on any date of the claim: member-level
        # findings in their submitter form
        stranger = not any(here)
        first_day = min((line.service_date for line in lines), default=None)
        shown_first = first_day.isoformat() if first_day else ""
        claim = _ClaimState()
        n_places, n_ordinals = len(place.lines), len(place.line_ordinals)
        for index, line in enumerate(lines):
            where = place.lines[index] if index < n_places else place.claim
            ordinal = place.line_ordinals[index] if index < n_ordinals else place.ordinal
            self._check_line(out, e, line, where, ordinal, place, snap, member_known, claim,
                             covering[index], here[index])
        if claim.unassigned_days:
            claim.unassigned = self._unassigned(e, claim.unassigned_days, snap)
        if claim.unassigned is not None:  # ECM lines for a member with no ECM assignment
            rule, values = claim.unassigned
            # ECM-MEM-004/005 go to the trusted provider itself: told as they are; ECM-MEM-007
            # as a member not the submitter's
            self._add(out, rule, place.member, place.ordinal,
                      stranger or rule == "ECM-MEM-007", **{"day": shown_first, **values})
        if claim.ecm_days and member_known:
            self._check_ages(out, cin, claim.ecm_days, place, snap, stranger)
        if claim.ecm_days and self.loaded["history"] and member_known \
                and cin not in self._pof_checked:
            self._pof_checked.add(cin)
            for gap in pof_shortfalls(snap.assignments[cin], snap.history.get(cin, []),
                                      self.codes.utilization,
                                      (self.codes.event_by_place, self.codes.event_by_code),
                                      latest=self.latest_history):
                self._add(out, "ECM-POF-001", place.member, place.ordinal, stranger,
                          anywhere=True, **{"day": shown_first, **gap})
        return out

    def _check_ages(self, out, cin: str, days: list[date], place: ClaimPlace,
                    snap: Snapshot, stranger: bool) -> None:
        """The member's age on each ECM date fits every POF of the assignment covering it
        (ECM Policy Guide 002:317, 002:325-327, 002:413; ranges in pof.csv)."""
        reported = set()
        for day in days:
            assignment = self._covering(snap, cin, day)
            if assignment is None or assignment.birth_date is None:
                continue
            age = age_on(assignment.birth_date, day)
            for pof in assignment.pof_codes:
                ages = self.codes.pof_ages.get(pof)
                if ages is None or ages.fits(age) or pof in reported:
                    continue
                reported.add(pof)
                self._add(out, "ECM-AGE-001", place.member, place.ordinal, stranger,
                          anywhere=True, age=age, day=day.isoformat(), pof=pof,
                          ages=ages.shown())

    def _check_line(self, out, e: Encounter, line: ServiceLine, where: str,
                    ordinal: int | None, place: ClaimPlace, snap: Snapshot,
                    member_known: bool, claim: _ClaimState | None = None,
                    assignment=False, here: bool | None = None) -> None:
        """``assignment`` / ``here``: the assignment covering the line's date and whether it
        is the submitter's, when the caller looked them up already."""
        claim = claim if claim is not None else _ClaimState()
        day = line.service_date
        shown_day = day.isoformat()
        if line.service_date_end is not None and line.service_date_end < day:
            self._add(out, "ECM-DATE-001", where, ordinal, day=shown_day,
                      end=line.service_date_end.isoformat())
        code = line.procedure_code
        matches = self.codes.services_for(code, line.modifiers, day)
        service = self._check_codes(out, line, matches, where, ordinal, shown_day)
        pos = line.place_of_service or e.claim.place_of_service
        if not self.codes.place_valid(pos, day):
            self._add(out, "ECM-CODE-003", where, ordinal, pos=pos, day=shown_day)
        self._check_units(out, e, line, service, where, ordinal, shown_day)
        self._check_duplicates(out, e, line, where, ordinal, place, snap)
        if service is None:
            return
        if assignment is False:
            assignment = self._covering(snap, e.member.cin, day)
        stranger = not (here if here is not None else self._assigned_to(e, line, assignment))
        if service.program == "ECM":
            claim.ecm_days.append(day)
            if member_known:
                self._check_assignment(out, e, line, where, ordinal, snap, day, stranger,
                                       assignment)
                self._check_programs(out, e.member.cin, where, ordinal, snap, day, stranger)
            elif self.loaded["members"] and cin_is_valid(e.member.cin):
                claim.unassigned_days.append(day)
            self._check_provider(out, e, "ECM", None, where, ordinal, snap, day)
        else:  # Community Supports: its own benefit, never checked against ECM assignment
            self._check_cs_authorization(out, e, service, where, ordinal, snap, day, stranger)
            self._check_provider(out, e, "CS", service.service, where, ordinal, snap, day)

    def _check_codes(self, out, line: ServiceLine, matches: list[ServiceCode], where: str,
                     ordinal: int | None, day: str) -> ServiceCode | None:
        shown = "+".join(line.modifiers) or "none"
        if not matches:
            self._add(out, "ECM-CODE-001", where, ordinal, code=line.procedure_code,
                      modifiers=shown, day=day)
            return None
        if len(matches) > 1:
            self._add(out, "ECM-CODE-002", where, ordinal, code=line.procedure_code,
                      modifiers=shown, why="more than one program or outreach modifier")
            return None
        service = matches[0]
        for modifier in line.modifiers:
            if modifier == service.modifier:
                continue
            known = self.codes.modifiers.get(modifier)
            if known is None or known.role in ("program", "outreach"):
                self._add(out, "ECM-CODE-002", where, ordinal, code=line.procedure_code,
                          modifiers=shown,
                          why=f"{modifier} is not allowed with {service.modifier}")
            elif known.role == "fee_for_service_telehealth":
                self._add(out, "ECM-CODE-004", where, ordinal, modifier=modifier)
        return service

    def _check_units(self, out, e: Encounter, line: ServiceLine, service: ServiceCode | None,
                     where: str, ordinal: int | None, day: str) -> None:
        if line.units <= 0:
            self._add(out, "ECM-UNIT-001", where, ordinal)
            return
        if service is None or service.unit_limit_per_day is None:
            return
        key = (e.member.cin, line.procedure_code, line.service_date)
        total = self._units_per_day.get(key, 0) + float(line.units)
        self._units_per_day[key] = total
        if total > service.unit_limit_per_day:
            self._add(out, "ECM-UNIT-002", where, ordinal, units=units_text(total),
                      code=line.procedure_code, day=day, limit=service.unit_limit_per_day)

    def _check_duplicates(self, out, e: Encounter, line: ServiceLine, where: str,
                          ordinal: int | None, place: ClaimPlace, snap: Snapshot) -> None:
        modifiers = modifier_key(line.modifiers)
        units = units_text(line.units)
        key = (e.member.cin, e.billing_provider.npi, line.service_date, line.procedure_code,
               modifiers, units)
        first = self._seen_lines.get(key)
        if first is not None:
            self._add(out, "ECM-DUP-001", where, ordinal, other=first)
        else:
            self._seen_lines[key] = f"{place.label} line {line.line_number}".strip()
        old = snap.history_keys.get(key)
        if old is not None:
            self._add(out, "ECM-DUP-002", where, ordinal, claim=old.claim_id,
                      line=old.line_number)

    def _check_assignment(self, out, e: Encounter, line: ServiceLine, where: str,
                          ordinal: int | None, snap: Snapshot, day: date,
                          stranger: bool = False, assignment=False) -> None:
        if assignment is False:
            assignment = self._covering(snap, e.member.cin, day)
        if assignment is None:
            self._add(out, "ECM-MEM-003", where, ordinal, stranger, day=day.isoformat())
            return
        billing = e.billing_provider
        rendering = {p.npi for p in (line.rendering_provider, e.rendering_provider) if p}
        # one assigned ECM provider at a time (002:1544-1545): only the assignment
        # covering the date counts, never an older overlapping one
        if assignment.provider_npi in rendering | {billing.npi} or (
                assignment.provider_tin and assignment.provider_tin == billing.tin):
            return
        self._add(out, "ECM-PRV-001", where, ordinal, stranger, day=day.isoformat(),
                  assigned=assignment.provider_npi or "unknown")

    def _unassigned(self, e: Encounter, days: list[date], snap: Snapshot
                    ) -> tuple[str, dict]:
        """ECM-MEM-002; or, for a trusted provider, ECM-MEM-007 when another trusted
        provider's period began first (same day: known first - the registry, then this run's
        order) and covers a line, else ECM-MEM-004 (every line inside its own period, which
        starts at its earliest known line) or ECM-MEM-005."""
        npi, cin = e.billing_provider.npi, e.member.cin
        arrangement = self._arrangement(e.payer.id)
        if arrangement is None or npi not in arrangement.providers:
            return "ECM-MEM-002", {}
        span = timedelta(days=arrangement.days - 1)
        ours = self._first_presumptive.setdefault(cin, {})
        opened = {}
        for (member, other), day in snap.first_ecm_line.items():
            if member == cin and other in arrangement.providers:
                opened[other] = (day, 0)
        for rank, (other, day) in enumerate(ours.items(), start=1):
            if other not in opened or day < opened[other][0]:
                opened[other] = (day, opened[other][1] if other in opened else rank)
        first = min([*days, *([opened[npi][0]] if npi in opened else [])])
        ours[npi] = first
        mine = (first, opened[npi][1] if npi in opened else len(ours))
        for other, (start, rank) in opened.items():
            if other != npi and (start, rank) < mine and any(
                    start <= day <= start + span for day in days):
                return "ECM-MEM-007", {"holder": other, "day": start.isoformat(),
                                       "end": (start + span).isoformat()}
        end = first + span
        values = {"npi": npi, "day": first.isoformat(), "end": end.isoformat()}
        return ("ECM-MEM-004" if max(days) <= end else "ECM-MEM-005"), values

    def _check_cs_authorization(self, out, e: Encounter, service: ServiceCode, where: str,
                                ordinal: int | None, snap: Snapshot, day: date,
                                stranger: bool) -> None:
        if not self.loaded.get("cs_authorizations") or not cin_is_valid(e.member.cin):
            return
        npi = e.billing_provider.npi
        for auth in snap.cs_authorizations.get(e.member.cin, ()):
            if auth.service == service.service and auth.covers(day) and \
                    auth.provider_npi in ("", npi):
                return
        # told to the submitter as "not eligible": other providers' authorizations are the
        # plan's to know
        self._add(out, "ECM-CS-002", where, ordinal, stranger, service=service.service,
                  day=day.isoformat(), npi=npi)

    def _check_programs(self, out, cin: str, where: str, ordinal: int | None,
                        snap: Snapshot, day: date, stranger: bool = False) -> None:
        enrolments = snap.enrolments.get(cin, ())
        programs_on_record = {e.program for e in enrolments}
        for enrolment in enrolments:
            if not enrolment.covers(day):
                continue
            rule_row = self.codes.program_rule(enrolment.program, day, enrolment.county)
            if rule_row is None:
                continue
            if rule_row.approach == "excluded" and rule_row.exceptions & programs_on_record:
                continue  # dual-eligible HHP/WPC members transition to ECM (002:1159-1160)
            rule = {"excluded": "ECM-PGM-001", "either_or": "ECM-PGM-002",
                    "wrap": "ECM-PGM-003"}.get(rule_row.approach)
            if rule:
                self._add(out, rule, where, ordinal, stranger, day=day.isoformat(),
                          program=enrolment.program)

    def _check_provider(self, out, e: Encounter, program: str, service: str | None,
                        where: str, ordinal: int | None, snap: Snapshot, day: date) -> None:
        if not self.loaded["providers"]:
            return
        npi = e.billing_provider.npi
        active = [p for p in snap.providers.get(npi, ()) if p.active(day)]
        if not active:
            self._add(out, "ECM-PRV-002", where, ordinal, npi=npi, day=day.isoformat())
        elif program == "ECM" and not any(p.ecm for p in active):
            self._add(out, "ECM-PRV-003", where, ordinal, npi=npi, day=day.isoformat())
        elif program == "CS" and not any(p.cs and service in p.cs_services for p in active):
            self._add(out, "ECM-CS-001", where, ordinal, npi=npi, service=service,
                      day=day.isoformat())
