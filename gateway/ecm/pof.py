"""Population-of-Focus evidence from encounter history: the utilization alternatives of the
high-utilizer and SMI/SUD criteria of the ECM Policy Guide (002:411-443, 002:474-482), with
event code lists, diagnosis sets, thresholds and the lookback anchor kept in
``profiles/codesets/utilization.yaml``.

* A stay is an admission: stay lines of one member and kind on contiguous days (or of one
  claim) are one stay, not one per day; an ED visit that leads to an inpatient stay counts once,
  as the stay (002:443).
* Alternatives are never summed across event kinds unless the data says ``sum_kinds: true``.
* An alternative with ``diagnoses`` counts only events carrying such a diagnosis (SMI/SUD).
* History is often incomplete and a POF has criteria claims cannot show, so a shortfall is a
  warning naming each alternative, never a rejection.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from gateway.ecm.codesets import EVENT_PRIORITY, event_index
from gateway.registry.store import Assignment, HistoryLine

STAY_KINDS = ("inpatient_stay", "snf_stay")


@dataclass
class Event:
    kind: str
    start: date
    end: date
    claims: set[str] = field(default_factory=set)
    diagnoses: set[str] = field(default_factory=set)


def months_back(day: date, months: int) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month + 1, min(day.day, 28))


def month_start(day: date, months_before: int = 0) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - months_before, 12)
    return date(year, month + 1, 1)


def classify(line: HistoryLine, index: tuple[dict, dict]) -> str | None:
    """Which utilization event a history line is (ed_visit, inpatient_stay, snf_stay)."""
    by_place, by_code = index
    place = by_place.get(line.place_of_service)
    code = by_code.get(line.procedure_code)
    if place and code:  # the stronger of the two (a stay outranks a visit)
        return place if EVENT_PRIORITY.index(place) <= EVENT_PRIORITY.index(code) else code
    return place or code


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


def diagnosis_matcher(spec: dict, name: str):
    """A predicate on a set of diagnosis codes: any code inside one of the set's ranges."""
    ranges = [(str(low).upper(), str(high).upper())
              for low, high in (spec.get("diagnosis_sets", {}).get(name, {}).get("ranges") or ())]

    def matches(codes) -> bool:
        return any(low <= code[:len(low)] and code[:len(high)] <= high
                   for code in codes for low, high in ranges)
    return matches


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


def pof_evidence(registry, spec: dict, cins: list[str] | None = None,
                 index: tuple[dict, dict] | None = None, latest: date | None = None):
    """:func:`pof_shortfalls` for many members at once (a plan's whole MIF): their assignments
    in one query, their utilization history in ONE streamed pass over the history
    (:meth:`Registry.utilization_lines`), never a query per member. Yields ``(cin, gaps)`` for
    every member of ``cins`` (all assigned members when None) whose gaps are not empty."""
    index = index or event_index(spec)
    events = (frozenset(index[0]), frozenset(index[1]))
    assigned = registry.assignments_of(cins)
    if latest is None:
        latest = registry.latest_history_day()
    pofs = {p for criterion in spec.get("criteria", ())
            for p in (criterion["pof"] if isinstance(criterion["pof"], list)
                      else [criterion["pof"]])}
    pending = {cin for cin, found in assigned.items()
               if any(p in pofs for a in found for p in a.pof_codes)}
    for cin, lines in registry.utilization_lines(events):
        if cin in pending:
            pending.discard(cin)
            gaps = pof_shortfalls(assigned[cin], lines, spec, index, latest)
            if gaps:
                yield cin, gaps
    for cin in sorted(pending):  # no utilization event at all
        gaps = pof_shortfalls(assigned[cin], [], spec, index, latest)
        if gaps:
            yield cin, gaps


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


_matchers: dict[tuple[int, str], object] = {}


def _matcher(spec: dict, name: str):
    """:func:`diagnosis_matcher`, made once per spec and set."""
    key = (id(spec), name)
    found = _matchers.get(key)
    if found is None:
        found = _matchers[key] = diagnosis_matcher(spec, name)
    return found


REPORT_COLUMNS = ["member_cin", "pof", "criterion", "window_start", "window_end", "lacking",
                  "other_criteria"]


def evidence_report_csv(found) -> bytes:
    """``(cin, gaps)`` pairs of :func:`pof_evidence` as CSV, one row per POF lacking
    evidence."""
    import csv
    import io

    from gateway.tabular.cells import neutral_row

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_COLUMNS)
    for cin, gaps in found:
        for gap in gaps:
            writer.writerow(neutral_row([cin, gap["pof"], gap["criterion"], gap["start"],
                                         gap["end"], gap["lacking"],
                                         gap["other"].removeprefix(
                                             "; other criteria may qualify the member: ")]))
    return out.getvalue().encode("utf-8")

