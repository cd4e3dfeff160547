"""Population-of-Focus evidence from encounter history: the high-utilizer and SMI/SUD
utilization criteria of the ECM Policy Guide, with the event code lists and thresholds kept in
``profiles/codesets/utilization.yaml``. History is often incomplete, so a shortfall is a
warning, never a rejection."""

from __future__ import annotations

from datetime import date, timedelta

from gateway.ecm.codesets import EVENT_PRIORITY, event_index
from gateway.registry.store import Assignment, HistoryLine


def _months_before(day: date, months: int) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month + 1, min(day.day, 28))


def classify(line: HistoryLine, index: tuple[dict, dict]) -> str | None:
    """Which utilization event a history line is (ed_visit, inpatient_stay, snf_stay)."""
    by_place, by_code = index
    place = by_place.get(line.place_of_service)
    code = by_code.get(line.procedure_code)
    if place and code:  # the stronger of the two (a stay outranks a visit)
        return place if EVENT_PRIORITY.index(place) <= EVENT_PRIORITY.index(code) else code
    return place or code


def events(history: list[HistoryLine], spec: dict,
           index: tuple[dict, dict] | None = None) -> list[tuple[date, str]]:
    """One event per member-day and kind; an ED visit that leads to an admission counts once,
    as the stay."""
    index = index or event_index(spec)
    found = sorted({(line.service_date, kind) for line in history
                    if (kind := classify(line, index)) is not None})
    window = timedelta(days=int(spec.get("ed_admission_window_days", 1)))
    admissions = [day for day, kind in found if kind == "inpatient_stay"]
    kept = []
    for day, kind in found:
        if kind == "ed_visit" and any(day <= a <= day + window for a in admissions):
            continue
        kept.append((day, kind))
    return kept


def pof_shortfalls(assignments: list[Assignment], history: list[HistoryLine],
                   spec: dict, index: tuple[dict, dict] | None = None) -> list[dict]:
    """For each utilization POF a member is assigned under without enough history before the
    authorization: the values of the ECM-POF-001 message."""
    gaps = []
    seen: set[str] = set()
    evts = None
    for assignment in assignments:
        anchor = assignment.authorization_date or assignment.benefit_start
        if anchor is None:
            continue
        for criterion in spec.get("criteria", []):
            codes = criterion["pof"] if isinstance(criterion["pof"], list) else [criterion["pof"]]
            pof = next((c for c in assignment.pof_codes if c in codes), None)
            if pof is None or pof in seen:
                continue
            seen.add(pof)
            if evts is None:
                evts = events(history, spec, index)
            start = _months_before(anchor, int(criterion["window_months"]))
            best = 0
            needed = 0
            for option in criterion["any_of"]:
                count = sum(1 for day, kind in evts
                            if kind in option["events"] and start <= day <= anchor)
                if count >= option["at_least"]:
                    best = None
                    break
                best = max(best, count)
                needed = needed or option["at_least"]
            if best is not None:
                gaps.append({"pof": pof, "found": best, "months": criterion["window_months"],
                             "needed": " or ".join(
                                 f"{o['at_least']} {'/'.join(o['events'])}"
                                 for o in criterion["any_of"])})
    return gaps
