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

from datetime import date, timedelta

from gateway.ecm.codesets import EVENT_PRIORITY, event_index
from gateway.registry._rows import codes_of, day_of
from gateway.registry.store import CODE_TUPLES, DATES, Assignment, HistoryLine

STAY_KINDS = ("inpatient_stay", "snf_stay")


def months_back(day: date, months: int) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month + 1, min(day.day, 28))


def month_start(day: date, months_before: int = 0) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - months_before, 12)
    return date(year, month + 1, 1)


def classify(line: HistoryLine, index: tuple[dict, dict]) -> str | None:
    """Which utilization event a history line is (ed_visit, inpatient_stay, snf_stay)."""
    return _kind(line.place_of_service, line.procedure_code, index)


def _kind(place_of_service, procedure_code, index: tuple[dict, dict]) -> str | None:
    by_place, by_code = index
    place = by_place.get(place_of_service)
    code = by_code.get(procedure_code)
    if place and code:  # the stronger of the two (a stay outranks a visit)
        return place if EVENT_PRIORITY.index(place) <= EVENT_PRIORITY.index(code) else code
    return place or code


def diagnosis_matcher(spec: dict, name: str):
    """A predicate on a set of diagnosis codes: any code inside one of the set's ranges."""
    ranges = [(str(low).upper(), str(high).upper())
              for low, high in (spec.get("diagnosis_sets", {}).get(name, {}).get("ranges") or ())]

    known: dict[str, bool] = {}  # code -> inside a range (a history repeats its codes)

    def matches(codes) -> bool:
        for code in codes:
            found = known.get(code)
            if found is None:
                if len(known) > 20_000:
                    known.clear()
                found = known[code] = any(low <= code[:len(low)] and code[:len(high)] <= high
                                          for low, high in ranges)
            if found:
                return True
        return False
    return matches


def pof_shortfalls(assignments: list[Assignment], history: list[HistoryLine],
                   spec: dict, index: tuple[dict, dict] | None = None,
                   latest: date | None = None, rows: bool = False) -> list[dict]:
    """For each utilization POF a member is assigned under whose tested alternatives all lack
    evidence in the lookback: the values of the ECM-POF-001 message. ``rows``: ``history``
    holds plain rows of the :data:`~gateway.registry.store.EVENT_ROW` columns
    (``Registry.snapshot(event_rows=True)``), not HistoryLine objects.

    Runs once per member with ECM lines in a validation (and per member in
    :func:`pof_evidence`): it reads the spec compiled once (:func:`_compiled`) and the events
    as small lists (:func:`_event_tuples`). tests/ecm_reference_rules.py keeps the earlier
    object-per-event form of the same counting; tests/test_ecm_fast_path.py holds the two
    equal."""
    compiled = _compiled(spec, index)
    gaps = []
    seen: set[str] = set()
    evts = None
    windows = compiled.windows
    for assignment in assignments:
        pof_codes = assignment.pof_codes
        for codes, name, months, tested, other, none_found in compiled.criteria:
            pof = None
            for code in pof_codes:
                if code in codes:
                    pof = code
                    break
            if pof is None or pof in seen:
                continue
            if not tested:
                continue
            key = (assignment.authorization_date or assignment.benefit_start, months, latest)
            span = windows.get(key, _NO_NAME)
            if span is _NO_NAME:
                span = compiled.window(assignment, months, latest)
                if span is not None:
                    span = (*span, span[0].isoformat(), span[1].isoformat())
                if len(windows) > 4096:
                    windows.clear()
                windows[key] = span
            if span is None:
                continue
            seen.add(pof)
            if evts is None:
                evts = _event_tuples(history, compiled, rows)
            start, end, start_text, end_text = span
            inside = [e for e in evts if start <= e[1] <= end] if evts else evts
            if not inside:  # (no event: every alternative found 0, decided once per criterion)
                lacking = none_found
            else:
                lacking = []
                for option_name, kinds, matches, sum_kinds, at_least in tested:
                    count = _count_tuples(inside, kinds, matches, sum_kinds)
                    if count >= at_least:
                        lacking = None
                        break
                    lacking.append(f"{option_name} ({count} found)")
                if lacking:
                    lacking = "; ".join(lacking)
            if lacking:
                gaps.append({"pof": pof, "criterion": pof if name is _NO_NAME else name,
                             "start": start_text, "end": end_text, "lacking": lacking,
                             "other": other})
    return gaps


_NO_NAME = object()


class _Compiled:
    """A utilization spec read once: criteria as tuples, the event kind of each (place of
    service, procedure code) pair memoised."""

    def __init__(self, spec: dict, index: tuple[dict, dict] | None) -> None:
        self.spec = spec
        self.index = index or event_index(spec)
        self.gap = timedelta(days=int(spec.get("stay_gap_days", 1)))
        self.ed_window = timedelta(days=int(spec.get("ed_admission_window_days", 1)))
        self.by_authorization = spec.get("lookback_anchor",
                                         "latest_claims_month") == "authorization_date"
        self.kind_of: dict[tuple[str, str], str | None] = {}
        # (anchor day, months, latest) -> (start, end, as text) or None: a member's window
        self.windows: dict[tuple, tuple | None] = {}
        self.criteria = []
        for criterion in spec.get("criteria", []):
            codes = criterion["pof"] if isinstance(criterion["pof"], list) else [criterion["pof"]]
            tested = tuple(
                (o["name"], tuple(o["events"]),
                 _matcher(spec, o["diagnoses"]) if o.get("diagnoses") else None,
                 bool(o.get("sum_kinds")), int(o["at_least"]))
                for o in criterion["any_of"] if o.get("at_least") is not None)
            other = criterion.get("other_criteria")
            # what the alternatives lack when no event is in the window (None: one is met
            # with none, at_least 0)
            none_found = None if any(t[4] <= 0 for t in tested) else \
                "; ".join(f"{t[0]} (0 found)" for t in tested)
            self.criteria.append((frozenset(codes), criterion.get("name", _NO_NAME),
                                  criterion.get("window_months"), tested,
                                  f"; other criteria may qualify the member: {other}"
                                  if other else "", none_found))

    def window(self, assignment: Assignment, months, latest: date | None):
        """The lookback window of a criterion for an assignment (``lookback_anchor``:
        ``authorization_date``, or the latest month of adjudicated claims, the default)."""
        auth = assignment.authorization_date or assignment.benefit_start
        if auth is None:
            return None
        months = int(months)
        if self.by_authorization:
            return months_back(auth, months), auth
        end = min(auth, latest) if latest else auth
        return month_start(end, months - 1), end


_COMPILED: list = []  # [(spec, index, _Compiled)]: a handful of specs per process


def _compiled(spec: dict, index: tuple[dict, dict] | None) -> _Compiled:
    for known, known_index, compiled in _COMPILED:
        if known is spec and (known_index is index or (
                index is not None and known_index is not None and known_index == index)):
            return compiled
    compiled = _Compiled(spec, index)
    _COMPILED.append((spec, index, compiled))
    del _COMPILED[:-8]
    return compiled


def _event_tuples(history: list, c: _Compiled, rows: bool = False) -> list[list]:
    """The member's utilization events as ``[kind, start, end, claims, diagnoses]`` lists, in
    no particular order: stays as admissions (lines of one kind on days no more than
    ``stay_gap_days`` apart, or of one claim, are one stay), ED visits once a day, an ED visit
    within ``ed_admission_window_days`` before an inpatient stay folded into the stay.
    ``history``: HistoryLine objects, or (``rows``) :data:`EVENT_ROW` tuples."""
    kind_of = c.kind_of
    index = c.index
    days: dict = DATES  # (typed: C dict look-ups in the compiled build)
    codes: dict = CODE_TUPLES
    # each event line as (day, claim id, diagnoses), by kind
    by_kind: dict[str, list[tuple]] = {}
    for line in history:
        if rows:
            _, served, place, code, claim_id, diagnoses = line
        else:
            place, code = line.place_of_service, line.procedure_code
        key = (place, code)
        try:
            kind = kind_of[key]
        except KeyError:
            kind = kind_of[key] = _kind(place, code, index)
        if kind is None:
            continue
        if rows:
            day = days.get(served)
            if day is None:
                day = day_of(days, served)
            listed = codes.get(diagnoses)
            if listed is None:
                listed = codes_of(codes, diagnoses)
            item = (day, claim_id or "", listed)
        else:
            item = (line.service_date, line.claim_id, line.diagnoses)
        found_kind = by_kind.get(kind)
        if found_kind is None:
            by_kind[kind] = [item]
        else:
            found_kind.append(item)
    if not by_kind:
        return []
    gap = c.gap
    found: list[list] = []
    admissions: list[list] = []
    for kind in STAY_KINDS:
        lines = by_kind.get(kind)
        if not lines:
            continue
        current: list | None = None  # (typed: its items read and sets updated in C)
        for day, claim_id, diagnoses in sorted(lines, key=_first) if len(lines) > 1 \
                else lines:
            if current is not None and (day <= current[2] + gap or claim_id
                                        and claim_id in current[3]):
                if day > current[2]:
                    current[2] = day
            else:
                current = [kind, day, day, set(), set()]
                found.append(current)
                if kind == "inpatient_stay":
                    admissions.append(current)
            if claim_id:
                current[3].add(claim_id)
            current[4].update(diagnoses)
    visits = by_kind.get("ed_visit")
    if visits:
        window = c.ed_window
        by_day: dict[date, list] = {}
        for day, _, diagnoses in visits:
            stay = None  # (a loop, not next() over a generator: once an ED visit)
            for a in admissions:
                if a[1] - window <= day <= a[2]:
                    stay = a
                    break
            if stay is not None:  # the ED visit that led to the admission is the stay
                stay[4].update(diagnoses)
                continue
            visit: list | None = by_day.get(day)
            if visit is None:
                visit = by_day[day] = ["ed_visit", day, day, None, set()]
                found.append(visit)
            visit[4].update(diagnoses)
    return found


def _first(item: tuple):
    return item[0]


def _count_tuples(evts: list[list], kinds: tuple[str, ...], matches, sum_kinds: bool) -> int:
    """How many events of ``kinds`` (with a matching diagnosis when ``matches``) the
    alternative has: the best single kind, or all kinds together when ``sum_kinds``."""
    per_kind: dict[str, int] = {}
    total = 0
    e: list  # (an event: its kind and diagnoses read by index in C)
    for e in evts:
        kind = e[0]
        if kind in kinds and (matches is None or matches(e[4])):
            per_kind[kind] = per_kind.get(kind, 0) + 1
            total += 1
    if sum_kinds:
        return total
    return max((per_kind.get(k, 0) for k in kinds), default=0)


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


_matchers: dict[tuple[int, str], tuple[dict, object]] = {}


def _matcher(spec: dict, name: str):
    """:func:`diagnosis_matcher`, made once per spec and set (the entry holds its spec, so a
    spec loaded later under a recycled id never gets another spec's matcher)."""
    key = (id(spec), name)
    entry = _matchers.get(key)
    if entry is not None and entry[0] is spec:
        return entry[1]
    found = diagnosis_matcher(spec, name)
    _matchers[key] = (spec, found)
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

