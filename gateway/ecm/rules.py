"""ECM rules on canonical encounters: member assignment, provider, program overlaps, code sets,
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
from decimal import Decimal
from importlib.machinery import EXTENSION_SUFFIXES
from typing import TYPE_CHECKING

from gateway.ecm.codesets import CodeSets, ServiceCode, load_codesets
from gateway.ecm.pof import pof_shortfalls
from gateway.findings import _FIELDS, Finding, Severity
from gateway.model.view import ClaimView, LineView, view_of
from gateway.periods import within
from gateway.registry.store import Registry, Snapshot, modifier_key, units_text
from gateway.rules import RuleCatalogue, default_catalogue, message_of

if TYPE_CHECKING:  # the pydantic model is read through view_of, never imported here
    from gateway.model.encounter import Encounter

CIN_PATTERN_LENGTH = 9
# claims per batch: one registry read per batch; a smaller batch keeps the claims waiting for
# it from outliving the collector's young generations (300 measured best of 100-1000)
BATCH = 300


def cin_is_valid(cin: str) -> bool:
    return len(cin) == CIN_PATTERN_LENGTH and cin[:8].isdigit() and "A" <= cin[8] <= "Z"


@dataclass
class ClaimPlace:
    """Where an encounter sits in its source file."""

    claim: str  # path of the claim, e.g. ISA#1/GS#1/ST#1/2300[5]
    member: str  # path of the member id
    lines: list[str]  # path of each service line's procedure code
    ordinal: int | None = None  # segment ordinal of the claim (CLM), for X12
    line_ordinals: list[int | None] = field(default_factory=list)
    label: str = ""  # how another finding names this claim ("claim X line 2")


@dataclass(frozen=True)
class Presumptive:
    """A plan's presumptive-authorization arrangement (ECM Policy Guide 002:1536-1542; 003:117):
    the trusted providers (NPIs) whose ECM lines for a member not yet in a MIF are accepted with
    a warning for ``days`` days from the member's first such line."""

    providers: frozenset[str]
    days: int

    @classmethod
    def from_setting(cls, setting: dict | None) -> Presumptive | None:
        if not setting or not setting.get("providers"):
            return None
        return cls(frozenset(str(n) for n in setting["providers"]), int(setting.get("days", 0)))


def covering_assignment(assignments, day: date):
    """The ONE assignment covering ``day``: a member has one assigned ECM provider at a time
    (ECM Policy Guide 002:1544-1545, as the gateway reads it), so when periods overlap the newest
    (latest benefit start, then authorization) wins."""
    covering = [a for a in assignments if a.covers(day)]
    if not covering:
        return None
    return max(covering, key=lambda a: (a.benefit_start or date.min,
                                        a.authorization_date or date.min))


def _day_number(day: date) -> int:
    """``day`` as the number yyyymmdd: ``(number(day) - number(birth)) // 10000`` is
    :func:`age_on` (the month and day as mmdd order as the pair does), 29 February birthdays
    and days before the birth included (tests/test_ecm_fast_path.py)."""
    return day.year * 10000 + day.month * 100 + day.day


def _first_day(lines) -> str:
    """The claim's first service date, as messages show it (a loop: a generator for min()
    cost ≈ 1 µs more a call)."""
    first = None
    for line in lines:
        day = line[5]
        if first is None or day < first:
            first = day
    return first.isoformat() if first else ""


class _Batch:
    """What one batch of claims reads from the registries (a :class:`Snapshot`) and the
    per-batch memo of the assignment covering a member's date. (Compiled: an extension type,
    its fields declared in rules.pxd; the slots are the pure-Python build's.)"""

    __slots__ = ("assignments", "enrolments", "cs", "events", "history_keys", "history_cins",
                 "first_ecm", "covering")

    def __init__(self, snap: Snapshot) -> None:
        self.assignments = snap.assignments
        self.enrolments = snap.enrolments
        self.cs = snap.cs_authorizations
        self.events = snap.events  # utilization event rows (snapshot(event_rows=True))
        self.history_keys = snap.history_keys
        self.history_cins = {key[0] for key in snap.history_keys}
        self.first_ecm = snap.first_ecm_line
        self.covering: dict[tuple[str, date], object] = {}


def _line_place(place: ClaimPlace, index) -> tuple:
    """Where line ``index`` (an int) of the claim at ``place`` is: (its path, its segment
    ordinal, an int or None); the claim's own when the place names fewer lines."""
    lines, ordinals = place.lines, place.line_ordinals
    return (lines[index] if index < len(lines) else place.claim,
            ordinals[index] if index < len(ordinals) else place.ordinal)


def _covering(ctx: _Batch, cin: str, day: date):
    """:func:`covering_assignment`, memoised for the batch."""
    key = (cin, day)
    try:
        return ctx.covering[key]
    except KeyError:
        found = ctx.covering[key] = covering_assignment(ctx.assignments.get(cin, ()), day)
        return found


_NO_FINDINGS: tuple = ()
# how ECM meets another program (ProgramRule.approach) -> the rule a line then breaks
_PROGRAM_RULES = {"excluded": "ECM-PGM-001", "either_or": "ECM-PGM-002", "wrap": "ECM-PGM-003"}
_NO_LOW, _NO_HIGH = float("-inf"), float("inf")  # (an age range's open ends)
_NO_VALUES: dict = {}  # (a finding's values: read, never changed)
_MISSING = object()


# -- findings made quickly (compiled with this module): the rules make thousands a file from
# a memoised finding (only the place differs), the rules' worker ships them as rows and the
# caller makes them again (gateway/ecm/pipelined.py). One maker, _finding: the fields set as
# Finding.__init__ sets them (no keyword parsing), through the slots themselves. Pure Python:
# the slots' own setters (no attribute look-up by name). Compiled (rules.pxd): each slot of
# the new instance written in place (what a slot's setter does for a fresh instance), at
# offsets read once from the slots' descriptors - the nine setter calls were ≈ 5.5k
# instructions a finding (4.6k findings a 10k-claim run, made in the worker and again in the
# caller).
_new = object.__new__
_SLOT_SETTERS = tuple(getattr(Finding, name).__set__ for name in _FIELDS)
# the offsets of Finding's slots in _FIELDS order when this module runs compiled (its file the
# extension; rules.pxd defines _slot_offsets and _filled), else None
_SLOT_OFFSETS = _slot_offsets(Finding, _FIELDS) if __file__.endswith(  # noqa: F821
    tuple(EXTENSION_SUFFIXES)) else None


def _finding(rule, severity, location, message, source, segment, context, plan_rule,
             plan_message):  # (types: rules.pxd)
    """A Finding with these fields (``segment`` an int or None, ``severity`` a Severity)."""
    if _SLOT_OFFSETS is not None:
        return _filled(_new, Finding, _SLOT_OFFSETS, rule, severity, location,  # noqa: F821
                       message, source, segment, context, plan_rule, plan_message)
    finding = _new(Finding)
    values = (rule, severity, location, message, source, segment, context, plan_rule,
              plan_message)
    for put, value in zip(_SLOT_SETTERS, values):
        put(finding, value)
    return finding


_SEVERITIES = {s.value: s for s in Severity}


def located(template: Finding, where: str, ordinal) -> Finding:
    """``template`` at ``where`` (segment ``ordinal``), without its context (what
    ``Finding(rule=template.rule, ..., location=where, segment=ordinal, ...)`` makes)."""
    return _finding(template.rule, template.severity, where, template.message,
                    template.source, None if ordinal is None else int(ordinal), None,
                    template.plan_rule, template.plan_message)


def finding_rows(found: list, table: dict | None = None) -> list[tuple]:
    """The findings of a batch (a list a claim) as rows of plain values, in order
    (:func:`findings_of_rows` makes them findings again). ``table``: the messages sent so far
    in this stream (message -> number, kept by the caller across batches): a message sent
    before goes as its number (the ECM-POF-001 messages, ~450 characters, repeat from batch to
    batch), a new one as its text, numbered in the order it is sent."""
    rows = []
    for findings in found:
        for f in findings:
            message = f.message
            if table is not None:
                known = table.get(message)
                if known is None:
                    table[message] = len(table)
                else:
                    message = known
            # (the severity's _value_: its .value is a property run as Python, per finding)
            rows.append((f.rule, f.severity._value_, f.location, message, f.source,
                         f.segment, f.context, f.plan_rule, f.plan_message))
    return rows


def findings_of_rows(rows, into: list, table: list | None = None) -> None:
    """:func:`finding_rows`' rows made findings again, appended to ``into``; ``table``: the
    messages of the stream so far, in the order they came (a number is one of them, a text
    is added)."""
    severities = _SEVERITIES
    append = into.append
    for rule, severity, location, message, source, segment, context, plan_rule, \
            plan_message in rows:
        if table is not None:
            if message.__class__ is int:
                message = table[message]
            else:
                table.append(message)
        append(_finding(rule, severities[severity], location, message, source, segment,
                        context, plan_rule, plan_message))


class EncounterRules:
    """Apply the ECM rules; keeps within-file duplicate state across batches.

    The hot path reads a light :class:`~gateway.model.view.ClaimView` of each claim (the 837P
    reader builds it without the pydantic model; any other encounter is viewed through
    :func:`~gateway.model.view.view_of`), memoises whatever depends only on codes and dates
    (code-set matches, places of service, units, program rules, provider periods, messages)
    for the whole run, and reads the registries once per batch (:meth:`Registry.snapshot`).
    Each rule keeps its meaning, id, message and location (tests/test_ecm_fast_path.py
    compares every finding with the reference engine).

    Compiled, the engine is an extension type (rules.pxd): its attributes are typed C fields
    and its per-claim steps C calls; anything else set on an instance (a spy replacing
    :meth:`check`) goes to its ``__dict__`` as on a plain class."""

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
        self._events = (frozenset(self.codes.event_by_place), frozenset(self.codes.event_by_code))
        # one tuple for the run: pof_shortfalls finds its compiled spec by identity, not by
        # comparing the two dicts every call
        self._event_index = (self.codes.event_by_place, self.codes.event_by_code)
        spec = self.codes.utilization or {}
        # the POFs whose evidence pof_shortfalls looks for (others never have a shortfall)
        self._evidence_pofs = frozenset(
            p for criterion in spec.get("criteria", ())
            for p in (criterion["pof"] if isinstance(criterion["pof"], list)
                      else [criterion["pof"]]))
        self._seen_lines = {}  # line key -> label; any mapping with get / item assignment
        self._seen_own = True  # the index above is ours: values (label, line number)
        self._units_per_day: dict[tuple, float] = {}
        self._pof_checked: set[str] = set()
        # presumptive authorization: member -> trusted provider -> first day; (member,
        # provider) -> (first day, latest line) of the lines judged (presumptive_lines)
        self._first_presumptive: dict[str, dict[str, date]] = {}
        self._presumptive_days: dict[tuple[str, str], tuple[date, date]] = {}
        # memos for the run: they depend on codes, dates and the registries, which do not
        # change while the rules run
        self._code_memo: dict[tuple, tuple] = {}
        self._place_memo: dict[tuple, bool] = {}
        self._units_memo: dict[str, tuple] = {}
        self._modifier_memo: dict[tuple, str] = {}
        self._provider_memo: dict[tuple, tuple] = {}
        self._providers: dict[str, list] = {}
        self._program_memo: dict[tuple, object] = {}
        self._messages: dict[tuple, Finding | None] = {}
        self._shown: dict[tuple[str, str], tuple] = {}  # -> (shown names, form)
        self._cin_memo: dict[str, bool] = {}
        self._line_memo: dict[tuple, tuple] = {}
        self._for_submitter = audience == "submitter"
        self._age_ranges: dict[tuple[str, ...], tuple[float, float]] = {}
        self._day_numbers: dict[date, int] = {}  # date -> _day_number
        self._age_verdicts: dict[tuple[str, int], str | None] = {}  # (pof, age) -> _check_ages
        self._evidence_memo: dict[tuple[str, ...], bool] = {}
        self.batch_size = BATCH  # claims per registry read (validate_x12 batches by it)
        self._worker = None  # a worker process holding this engine's state after a run

    # -- in a worker process (gateway/ecm/pipelined.py) ----------------------------------------
    # the findings of a batch as the worker ships them and as the caller makes them again
    # (reached through the engine: pipelined does not import the rules, which import it)
    finding_rows = staticmethod(finding_rows)
    findings_of_rows = staticmethod(findings_of_rows)

    def pipelined(self, size: int | None, entries_of):
        """A worker process running these rules alongside a validation of ``size`` bytes
        (:class:`~gateway.ecm.pipelined.RulesWorker`: ``submit`` batches of rows, one a claim,
        ``finish`` for the findings in order), or None: run them here with :meth:`check`.
        ``entries_of(rows)`` makes the ``(view, ClaimPlace)`` pairs :meth:`check` takes from rows
        (in the worker).
        Whether to is decided by :func:`gateway.ecm.pipelined.pipelining`."""
        from gateway.ecm.pipelined import start

        return start(self, size, entries_of)

    def warm_up(self) -> None:
        """Connect to the registries and read what a batch's reads need, for no member (the
        worker does this while the caller reads its first batch: ≈ 2 ms off that batch)."""
        if self.registry is not None:
            self.registry.snapshot({""}, set(), events=self._events, event_rows=True)

    def reclaim(self) -> None:
        """This engine's state back from the worker of the last pipelined run, if any (every
        use of the engine does this first: the findings are those of one process)."""
        if self._worker is not None:
            self._worker.reclaim()

    def close(self) -> None:
        """Stop an idle worker of the last pipelined run (its state is dropped)."""
        if self._worker is not None:
            self._worker.close()

    def use_seen_index(self, index) -> None:
        """Keep the file-wide duplicate index elsewhere (e.g. on disk for a huge invoice):
        any object with ``get(key)`` and ``index[key] = label`` (``key`` a tuple)."""
        self.reclaim()
        self._seen_lines = index
        self._seen_own = False

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
    def check(self, batch: list[tuple[Encounter | ClaimView, ClaimPlace]]
              ) -> list[list[Finding]]:
        """Findings for each encounter (or claim view) of the batch, in order. The cyclic
        collector is paused meanwhile: the batch's snapshot (thousands of small objects, alive
        for the whole batch, freed by reference counting after it) would otherwise be promoted
        and re-scanned with everything the caller holds."""
        from gateway.gcpause import collector_paused

        if self._worker is not None:
            self.reclaim()
        with collector_paused():
            return self._check(batch)

    def _check(self, batch) -> list[list[Finding]]:
        # claim views: plain tuples in ClaimView order (the 837P reader's, or an encounter's)
        views = [e if isinstance(e, tuple) else view_of(e) for e, _ in batch]
        ctx = _Batch(self._snapshot(views))
        if self.presumptive:
            self._presumptive_firsts(views, ctx)
        return [self._check_one(view, place, ctx) for view, (_, place) in zip(views, batch)]

    def _snapshot(self, views: list[tuple]) -> Snapshot:
        if self.registry is None or not views:
            return Snapshot()
        cins = {v[0] for v in views}
        npis = {v[1] for v in views if v[1] not in self._providers}
        first = last = None
        for v in views:
            for line in v[6]:
                day = line[5]
                if first is None or day < first:
                    first = day
                if last is None or day > last:
                    last = day
        checked, pofs = self._pof_checked, self._evidence_pofs
        need_history = self.loaded["history"] and self.loaded["members"]

        memo, has_evidence = self._evidence_memo, self._has_evidence_pof

        def event_members(cin: str, assignments) -> bool:
            # utilization history only for members whose POF evidence is still to be checked
            # (a loop, not any() over a generator: once a batch's member)
            if not need_history or cin in checked:
                return False
            for a in assignments:
                found = memo.get(a.pof_codes)
                if found is None:
                    found = has_evidence(a.pof_codes)
                if found:
                    return True
            return False

        snap = self.registry.snapshot(
            cins, npis, days=(first, last) if first is not None else None, events=self._events,
            ecm_codes=self._ecm_codes if self.presumptive else frozenset(),
            event_members=event_members, event_rows=True,
            cs_authorizations=self.loaded["cs_authorizations"])
        for npi in npis:
            self._providers[npi] = snap.providers.get(npi, [])
        return snap

    # -- findings -------------------------------------------------------------------------------
    def _add(self, out: list[Finding], rule_id: str, where: str, ordinal: int | None,
             restricted: bool = False, anywhere: bool = False, **values) -> None:
        """:meth:`_put` with the values as keywords."""
        self._put(out, rule_id, where, ordinal, values, restricted, anywhere)

    def _put(self, out: list[Finding], rule_id: str, where: str, ordinal,
             values: dict, restricted: bool = False, anywhere: bool = False) -> None:
        """Add the finding of ``rule_id`` at ``where`` (segment ``ordinal``) with the values its
        message shows (a dict read, never changed: the hot path passes it as it is, no
        keyword arguments to parse); ``restricted``: about a member not the submitter's."""
        audience = "submitter" if restricted and self.audience == "submitter" else "plan"
        # a message is made once per rule, audience and the values its message(s) show: a
        # finding with the same ones copies it (its location and segment its own). A value no
        # message shows (e.g. the claim's day in ECM-POF-001) is not part of the key.
        told = self._shown.get((rule_id, audience))
        if told is None:
            told = self._shown_fields(rule_id, audience)
        shown, form = told
        if shown is None:
            key = (rule_id, audience, *values.items())
        else:
            key = (rule_id, audience, *[values.get(name, _MISSING) for name in shown])
        try:
            template = self._messages.get(key, _MISSING)
        except TypeError:  # a value that cannot be a key
            key, template = None, _MISSING
        if template is _MISSING:
            # the catalogue's finding (RuleCatalogue.finding: its form, the message made from
            # the values), its fields set here as in located (≈ 1.5 µs less a finding made)
            if form is None:
                finding = None
            else:
                finding = _finding(form[0], form[1], where, message_of(form[2], values),
                                   form[3], None if ordinal is None else int(ordinal), None,
                                   form[4], None if form[5] is None
                                   else message_of(form[5], values))
            if key is not None:
                if len(self._messages) > 50_000:
                    self._messages.clear()
                self._messages[key] = finding
            if finding is None:
                return
        elif template is None:
            return
        else:
            finding = located(template, where, ordinal)
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

    def _put_line(self, out: list[Finding], rule_id: str, place: ClaimPlace, index,
                  values: dict, restricted: bool = False) -> None:
        """:meth:`_put` at line ``index`` (an int) of the claim at ``place``
        (:func:`_line_place`)."""
        where, ordinal = _line_place(place, index)
        self._put(out, rule_id, where, ordinal, values, restricted)

    def _shown_fields(self, rule_id: str, audience: str) -> tuple:
        """``(shown, form)``: the names of the values the finding's message(s) show - the
        rule's and, for a submitter, its ``to_submitter`` form's - or None (all values: a field
        the parse cannot name plainly), and the catalogue's form of the rule for the audience
        (:meth:`RuleCatalogue.form`; KeyError: an unknown rule)."""
        from string import Formatter

        form = self.catalogue.form(rule_id, audience)
        shown: tuple[str, ...] | None = None
        try:
            rule = self.catalogue.rule(rule_id)
            templates = [rule.message]
            if audience == "submitter" and rule.to_submitter:
                templates.append(self.catalogue.rule(rule.to_submitter).message)
            names: set[str] = set()
            for template in templates:
                for _, name, spec, conversion in Formatter().parse(template):
                    if name is None:
                        continue
                    if not name.isidentifier() or (spec and "{" in spec):
                        raise ValueError(name)
                    names.add(name)
            shown = tuple(sorted(names))
        except (KeyError, ValueError):
            shown = None
        found = self._shown[(rule_id, audience)] = (shown, form)
        return found

    # -- memos ----------------------------------------------------------------------------------
    def _code_outcome(self, code: str, modifiers: tuple, day: date) -> tuple:
        """(the service the line is, the code-set findings as (rule, values) pairs)."""
        key = (code, modifiers, day)
        found = self._code_memo.get(key)
        if found is not None:
            return found
        matches = self.codes.services_for(code, list(modifiers), day)
        shown = "+".join(modifiers) or "none"
        findings: list = []
        service = None
        if not matches:
            findings.append(("ECM-CODE-001", {"code": code, "modifiers": shown,
                                              "day": day.isoformat()}))
        elif len(matches) > 1:
            findings.append(("ECM-CODE-002", {
                "code": code, "modifiers": shown,
                "why": "more than one program or outreach modifier"}))
        else:
            service = matches[0]
            for modifier in modifiers:
                if modifier == service.modifier:
                    continue
                known = self.codes.modifiers.get(modifier)
                if known is None or known.role in ("program", "outreach"):
                    findings.append(("ECM-CODE-002", {
                        "code": code, "modifiers": shown,
                        "why": f"{modifier} is not allowed with {service.modifier}"}))
                elif known.role == "fee_for_service_telehealth":
                    findings.append(("ECM-CODE-004", {"modifier": modifier}))
        found = self._code_memo[key] = (service, tuple(findings) or _NO_FINDINGS)
        return found

    def _units(self, text: str) -> tuple[bool, float, str]:
        """(units > 0, as a float, as the duplicate check compares them)."""
        found = self._units_memo.get(text)
        if found is None:
            value = Decimal(text)
            found = self._units_memo[text] = (value > 0, float(value), units_text(value))
        return found

    def _provider(self, npi: str, day: date) -> tuple:
        """(any period active on ``day``, any of them ECM, the CS services of the CS ones)."""
        key = (npi, day)
        found = self._provider_memo.get(key)
        if found is None:
            active = [p for p in self._providers.get(npi, ()) if p.active(day)]
            found = self._provider_memo[key] = (
                bool(active), any(p.ecm for p in active),
                frozenset(s for p in active if p.cs for s in p.cs_services))
        return found

    def _check_provider(self, out: list[Finding], npi: str, day: date, service, program: str,
                        place: ClaimPlace, index) -> None:
        """The line's provider in the directory on ``day``: active (ECM-PRV-002), and offering
        the line's benefit: ECM (ECM-PRV-003) or the line's Community Support (ECM-CS-001)."""
        active, is_ecm, cs_services = self._provider_memo.get((npi, day)) or \
            self._provider(npi, day)
        if not active:
            self._add(out, "ECM-PRV-002", *_line_place(place, index), npi=npi,
                      day=day.isoformat())
        elif program == "ECM":
            if not is_ecm:
                self._add(out, "ECM-PRV-003", *_line_place(place, index), npi=npi,
                          day=day.isoformat())
        elif service.service not in cs_services:
            self._add(out, "ECM-CS-001", *_line_place(place, index), npi=npi,
                      service=service.service, day=day.isoformat())

    def _program(self, program: str, day: date, county: str):
        key = (program, day, county)
        try:
            return self._program_memo[key]
        except KeyError:
            found = self._program_memo[key] = self.codes.program_rule(program, day, county)
            return found

    # -- one claim ------------------------------------------------------------------------------
    def _line_info(self, key: tuple) -> tuple:
        """What a line's code, modifiers, date, place of service and units decide alone (memo
        ``_line_memo``): (service, its program, the findings they make, in the rules' order,
        as (rule, values) pairs, units > 0, units as a float, the tail of the duplicate key)."""
        code, modifiers, day, pos, units_raw = key
        service, code_findings = self._code_outcome(code, modifiers, day)
        findings = list(code_findings)
        # (a line's date, place and modifiers repeat across the memo's keys: each memoised
        # apart, ≈ 2 µs of Python calls a line seen first)
        valid = self._place_memo.get((pos, day))
        if valid is None:
            if len(self._place_memo) > 100_000:
                self._place_memo.clear()
            valid = self._place_memo[(pos, day)] = self.codes.place_valid(pos, day)
        if not valid:
            findings.append(("ECM-CODE-003", {"pos": pos, "day": day.isoformat()}))
        positive, amount, units = self._units(units_raw)
        if not positive:
            findings.append(("ECM-UNIT-001", {}))
        modifier_text = self._modifier_memo.get(modifiers)
        if modifier_text is None:
            if len(self._modifier_memo) > 10_000:
                self._modifier_memo.clear()
            modifier_text = self._modifier_memo[modifiers] = modifier_key(modifiers)
        if len(self._line_memo) > 100_000:
            self._line_memo.clear()
        found = self._line_memo[key] = (
            service, service.program if service is not None else None,
            tuple(findings) or _NO_FINDINGS, positive, amount,
            (day, code, modifier_text, units))
        return found

    def _check_one(self, v: tuple, place: ClaimPlace, ctx: _Batch) -> list[Finding]:
        """The findings of one claim view (a plain tuple in :class:`ClaimView` order)."""
        out: list[Finding] = []
        # the run's memos and settings: in the compiled build typed fields of the engine
        # (rules.pxd), so reading one is a C struct read, and their get/add/in C calls
        cin_memo = self._cin_memo
        line_memo = self._line_memo
        seen = self._seen_lines
        own_index = self._seen_own
        # (our own index is exactly a dict: typed so in the compiled build, its setdefault a C
        # call; another one is any mapping, read through its own get / item assignment)
        own_seen = seen if own_index else None
        provider_memo = self._provider_memo
        day_numbers = self._day_numbers
        pof_checked = self._pof_checked
        loaded = self.loaded
        for_submitter = self._for_submitter
        units_per_day = self._units_per_day
        cin, npi, tin, claim_rendering, _, claim_pos, lines = v
        valid_cin = cin_memo.get(cin)
        if valid_cin is None:
            if len(cin_memo) > 100_000:
                cin_memo.clear()
            valid_cin = cin_memo[cin] = cin_is_valid(cin)
        if not valid_cin:
            self._put(out, "ECM-MEM-001", place.member, place.ordinal, _NO_VALUES)
        assignments = ctx.assignments.get(cin)
        # the assignment covering each line's date (every rule below reads it)
        if not assignments:
            member_known = False
            covering = None
        elif len(assignments) == 1:
            member_known = True
            only = assignments[0]
            start, end = only.benefit_start, only.benefit_end
            covering = [only if (start is None or start <= line[5]) and (
                end is None or line[5] <= end) else None for line in lines]
        else:
            member_known = True
            covering = [_covering(ctx, cin, line[5]) for line in lines]
        # whether it is the submitter's: only a submitter audience is told less about a
        # member not assigned to it (a plan gets every finding as it is)
        here = self._here(v, covering) if for_submitter else None
        ecm: list[tuple[date, object]] = []  # (date, covering assignment) of the ECM lines
        unassigned = None
        unassigned_days: list[date] = []  # the ECM lines' dates of a member with no assignment
        label = None
        # the history's lines on the batch's dates, when this member has any (most have none:
        # no duplicate key to make and look up a line)
        history_keys = ctx.history_keys if cin in ctx.history_cins else None
        enrolments = ctx.enrolments.get(cin) if member_known else None
        has_providers = loaded["providers"]
        for index, line in enumerate(lines):
            number, code, modifiers, units_raw, pos, day, day_end, rendering = line
            if day_end is not None and day_end < day:
                self._put_line(out, "ECM-DATE-001", place, index,
                               {"day": day.isoformat(), "end": day_end.isoformat()})
            key = (code, modifiers, day, pos or claim_pos, units_raw)
            info = line_memo.get(key)
            if info is None:
                info = self._line_info(key)
            service, program, static, positive, amount, tail = info
            if static:
                where, ordinal = _line_place(place, index)
                for rule_id, values in static:
                    self._put(out, rule_id, where, ordinal, values)
            if positive and service is not None and service.unit_limit_per_day is not None:
                per_day = (cin, code, day)
                total = units_per_day.get(per_day, 0) + amount
                units_per_day[per_day] = total
                if total > service.unit_limit_per_day:
                    self._put_line(out, "ECM-UNIT-002", place, index,
                                   {"units": units_text(total), "code": code,
                                    "day": day.isoformat(), "limit": service.unit_limit_per_day})
            # duplicates: in the file, then against the history
            key = (cin, npi, tail[0], tail[1], tail[2], tail[3])  # (no list made to unpack)
            if own_index:  # (a dict: one look-up, the line kept unless already there)
                if label is None:
                    label = place.label
                entry = (label, number)
                first = own_seen.setdefault(key, entry)
                if first is not entry:
                    self._put_line(out, "ECM-DUP-001", place, index,
                                   {"other": f"{first[0]} line {first[1]}".strip()})
            else:
                first = seen.get(key)
                if first is not None:
                    self._put_line(out, "ECM-DUP-001", place, index, {"other": first})
                else:
                    if label is None:
                        label = place.label
                    seen[key] = f"{label} line {number}".strip()
            if history_keys is not None:
                old = history_keys.get(key)
                if old is not None:
                    self._put_line(out, "ECM-DUP-002", place, index,
                                   {"claim": old.claim_id, "line": old.line_number})
            if service is None:
                continue
            assignment = covering[index] if member_known else None
            line_stranger = here is not None and not here[index]
            if program == "ECM":
                ecm.append((day, assignment))
                if member_known:
                    if assignment is None:
                        self._put_line(out, "ECM-MEM-003", place, index,
                                       {"day": day.isoformat()}, line_stranger)
                    else:
                        # one assigned ECM provider at a time (002:1544-1545): only
                        # the assignment covering the date counts, never an older overlapping one
                        n = assignment.provider_npi
                        if n != npi and n != rendering and n != claim_rendering and not (
                                assignment.provider_tin and assignment.provider_tin == tin):
                            self._put_line(out, "ECM-PRV-001", place, index,
                                           {"day": day.isoformat(), "assigned": n or "unknown"},
                                           line_stranger)
                    if enrolments:
                        self._check_programs(out, enrolments, place, index, day, line_stranger)
                elif loaded["members"] and valid_cin:
                    unassigned_days.append(day)  # (the verdict after the loop: _unassigned)
                if has_providers:
                    known = provider_memo.get((npi, day))
                    if known is None:
                        known = self._provider(npi, day)
                    if not known[0] or not known[1]:  # (else nothing to report)
                        self._check_provider(out, npi, day, service, program, place, index)
            else:  # Community Supports: its own benefit, never checked against ECM assignment
                if loaded["cs_authorizations"] and valid_cin:
                    self._check_cs_authorization(out, v, service, place, index, ctx, day,
                                                 line_stranger)
                if has_providers:
                    known = provider_memo.get((npi, day))
                    if known is None:
                        known = self._provider(npi, day)
                    if not known[0] or service.service not in known[2]:
                        self._check_provider(out, npi, day, service, program, place, index)
        if unassigned_days:
            unassigned = self._unassigned(v, unassigned_days, ctx)
        if unassigned is None and not ecm:
            return out
        stranger = here is not None and not any(here)
        if unassigned is not None:  # ECM lines for a member with no ECM assignment
            rule, values = unassigned
            # ECM-MEM-004/005 go to the trusted provider itself: told as they are; ECM-MEM-007
            # (another provider's period) is told as a member not the submitter's
            self._put(out, rule, place.member, place.ordinal,
                      {"day": _first_day(lines), **values},
                      stranger or rule == "ECM-MEM-007")
        if ecm and member_known:
            if len(day_numbers) > 100_000:
                day_numbers.clear()
            age_ranges: dict = self._age_ranges
            for day, assignment in ecm:
                birth = assignment.birth_date if assignment is not None else None
                if birth is None:
                    continue
                pofs = assignment.pof_codes
                low, high = age_ranges.get(pofs) or self._age_range(pofs)
                # the member's age on the day (from two memoised day numbers: ≈ 5 µs less a
                # member than the days it turns each age, made once a member and POFs)
                age = self._age(birth, day)
                if age < low or age >= high:
                    # an age some POF does not fit: the findings, in the rules' order
                    self._check_ages(out, ecm, place, stranger)
                    break
        if ecm and loaded["history"] and member_known and cin not in pof_checked:
            pof_checked.add(cin)
            evidence = False
            evidence_memo = self._evidence_memo
            for a in assignments:
                found = evidence_memo.get(a.pof_codes)
                if found is None:
                    found = self._has_evidence_pof(a.pof_codes)
                if found:
                    evidence = True
                    break
            if evidence:
                gaps = pof_shortfalls(assignments, ctx.events.get(cin) or [],
                                      self.codes.utilization, self._event_index,
                                      latest=self.latest_history, rows=True)
                if gaps:
                    shown_first = _first_day(lines)
                    member, ordinal = place.member, place.ordinal  # (once, not once a gap)
                    for gap in gaps:
                        self._put(out, "ECM-POF-001", member, ordinal,
                                  {"day": shown_first, **gap}, stranger, True)
        return out

    def _has_evidence_pof(self, pofs: tuple[str, ...]) -> bool:
        """Whether one of ``pofs`` has utilization evidence to look for (memo)."""
        found = self._evidence_memo.get(pofs)
        if found is None:
            found = self._evidence_memo[pofs] = any(p in self._evidence_pofs for p in pofs)
        return found

    def _age(self, birth: date, day: date) -> int:
        """The age on ``day`` of a member born on ``birth``
        (:func:`~gateway.ecm.codesets.age_on`'s), from the run's memoised day numbers
        (:func:`_day_number`: no date tuples compared, no Python call a line)."""
        day_numbers = self._day_numbers
        n = day_numbers.get(day)
        if n is None:
            n = day_numbers[day] = _day_number(day)
        b = day_numbers.get(birth)
        if b is None:
            b = day_numbers[birth] = _day_number(birth)
        return (n - b) // 10000

    def _age_range(self, pofs: tuple[str, ...]) -> tuple[float, float]:
        """The ages every POF of ``pofs`` fits: ``low <= age < high`` (memo)."""
        low, high = _NO_LOW, _NO_HIGH
        for pof in pofs:
            ages = self.codes.pof_ages.get(pof)
            if ages is None:
                continue
            if ages.age_from is not None:
                low = max(low, ages.age_from)
            if ages.age_below is not None:
                high = min(high, ages.age_below)
        found = self._age_ranges[pofs] = (low, high)
        return found

    def _here(self, view: tuple, covering: list | None) -> list[bool]:
        """Per line: is the member assigned, on its date, to the submitter (its NPIs/TINs,
        else the claim's billing or rendering provider)?"""
        v = ClaimView._make(view)
        if covering is None:
            return [False] * len(v.lines)
        submitter = self.submitter
        here = []
        for line, a in zip(map(LineView._make, v.lines), covering):
            if a is None:
                here.append(False)
            elif submitter is not None:
                here.append(a.provider_npi in submitter[0] or bool(
                    a.provider_tin and a.provider_tin in submitter[1]))
            else:
                n = a.provider_npi
                here.append(n == v.npi or n == line.rendering or n == v.rendering or bool(
                    a.provider_tin and a.provider_tin == v.tin))
        return here

    def _check_ages(self, out, ecm: list, place: ClaimPlace,
                    stranger: bool) -> None:
        """The member's age on each ECM date fits every POF of the assignment covering it
        (ECM Policy Guide 002:317, 002:325-327, 002:413; ranges in pof.csv). ``ecm``: the
        (date, covering assignment) pairs of the claim's ECM lines."""
        reported = set()
        pof_ages = self.codes.pof_ages
        # (memo: whether a POF fits an age - None - or the text of its ages; two Python calls,
        # ≈ 1 µs each, once a POF and age instead of once a finding)
        verdicts = self._age_verdicts
        member = None  # (the claim's member place, read once)
        for day, assignment in dict.fromkeys(ecm):  # a date seen again: the same outcome
            if assignment is None or assignment.birth_date is None:
                continue
            age = self._age(assignment.birth_date, day)
            for pof in assignment.pof_codes:
                verdict = verdicts.get((pof, age), _MISSING)
                if verdict is _MISSING:
                    ages = pof_ages.get(pof)
                    verdict = verdicts[(pof, age)] = None if ages is None or ages.fits(age) \
                        else ages.shown()
                if verdict is None or pof in reported:
                    continue
                reported.add(pof)
                if member is None:
                    member = place.member
                self._put(out, "ECM-AGE-001", member, place.ordinal,
                          {"age": age, "day": day.isoformat(), "pof": pof, "ages": verdict},
                          stranger, True)

    def _unassigned(self, view: tuple, days: list, ctx: _Batch) -> tuple[str, dict]:
        """ECM-MEM-002, or a presumptive authorization when the plan's setting names the
        billing provider, for a claim's ECM lines of dates ``days`` (ECM Policy Guide
        002:1536-1542: select providers authorize ECM "for a fixed period of time until
        Contractor authorizes or denies"):

        * the period runs ``arrangement.days`` from the member's first such line with that
          provider: the earliest of the registry's (the plan's history and the presumptive
          lines recorded from earlier submissions), the lines checked before and this batch's
          (:meth:`_presumptive_firsts`), so the lines' order within a batch or a claim does not
          move it (across batches and files a line is judged by the earliest line known when it
          is checked: a file's claims are not held back);
        * ECM-MEM-004 when every line is inside it, ECM-MEM-005 when any is after it;
        * one ECM provider at a time (002:1544-1545): when another trusted provider's period
          began first (the same day: the one known first) and covers any of the lines,
          ECM-MEM-007 (told to the submitter as not its member)."""
        v = ClaimView._make(view)
        cin, npi = v.cin, v.npi
        arrangement = self._arrangement(v.payer)
        if arrangement is None or npi not in arrangement.providers:
            return "ECM-MEM-002", {}
        trusted = arrangement.providers
        length = timedelta(days=arrangement.days - 1)
        ours = self._first_presumptive.get(cin)
        if ours is None:
            ours = self._first_presumptive[cin] = {}
        # each trusted provider's first day with the member: (first, rank) - rank 0 for the
        # registry's (earlier submissions), then the order this run met them in
        firsts: dict[str, tuple] = {}
        for (member, other), day in ctx.first_ecm.items():
            if member == cin and other in trusted:
                firsts[other] = (day, 0)
        for rank, (other, day) in enumerate(ours.items(), 1):
            known = firsts.get(other)
            if known is None or day < known[0]:
                firsts[other] = (day, rank if known is None else known[1])
        first = min(days)
        known = firsts.get(npi)
        if known is not None and known[0] < first:
            first = known[0]
        ours[npi] = first
        mine = (first, known[1] if known is not None else len(ours))
        latest = max(days)
        for other, opened in firsts.items():
            if other != npi and opened < mine and \
                    any(opened[0] <= d <= opened[0] + length for d in days):
                return "ECM-MEM-007", {"holder": other, "day": opened[0].isoformat(),
                                       "end": (opened[0] + length).isoformat()}
        last = first + length
        seen = self._presumptive_days.get((cin, npi))
        self._presumptive_days[(cin, npi)] = (first, latest if seen is None or latest > seen[1]
                                              else seen[1])
        values = {"npi": npi, "day": first.isoformat(), "end": last.isoformat()}
        if latest <= last:
            return "ECM-MEM-004", values
        return "ECM-MEM-005", values

    def presumptive_lines(self) -> list[dict]:
        """The presumptive periods this engine judged lines under (ECM-MEM-004/005), one row a
        member and provider: ``cin``, ``billing_npi``, ``first_day`` (the period's start) and
        ``last_day`` (the latest line): what the server records
        (:meth:`~gateway.registry.store.Registry.replace_presumptive`) so that a provider's
        next submission continues the period and a MIF re-checks them."""
        self.reclaim()
        return [{"cin": cin, "billing_npi": npi, "first_day": first, "last_day": last}
                for (cin, npi), (first, last) in self._presumptive_days.items()]

    def _arrangement(self, payer: str):
        """The presumptive-authorization arrangement of the claim's plan (``payer``), if any."""
        if isinstance(self.presumptive, dict):
            return self.presumptive.get(payer)
        return self.presumptive

    def _presumptive_firsts(self, views: list, ctx: _Batch) -> None:
        """Before a batch is checked: the earliest ECM line of each member not in a MIF with
        each trusted provider, into the run's first days (so that a later line coming first
        cannot open the period at its own date)."""
        firsts = self._first_presumptive
        ecm_codes = self._ecm_codes
        assignments = ctx.assignments
        for view in views:
            cin, npi = view[0], view[1]
            arrangement = self._arrangement(view[4])
            if arrangement is None or npi not in arrangement.providers:
                continue
            if assignments.get(cin):
                continue
            ours = firsts.get(cin)
            if ours is None:
                ours = firsts[cin] = {}
            for line in view[6]:
                day = line[5]
                if line[1] in ecm_codes and day is not None:
                    known = ours.get(npi)
                    if known is None or day < known:
                        ours[npi] = day

    def _check_cs_authorization(self, out, v: tuple, service: ServiceCode,
                                place: ClaimPlace, index, ctx: _Batch, day: date,
                                stranger: bool) -> None:
        cin, npi = v[0], v[1]
        for auth in ctx.cs.get(cin, ()):
            if auth.service == service.service and auth.covers(day) and \
                    auth.provider_npi in ("", npi):
                return
        # told to the submitter as "not eligible": other providers' authorizations are the
        # plan's to know
        self._add(out, "ECM-CS-002", *_line_place(place, index), stranger,
                  service=service.service, day=day.isoformat(), npi=npi)

    def _check_programs(self, out, enrolments, place: ClaimPlace, index, day: date,
                        stranger: bool = False) -> None:
        for enrolment in enrolments:
            # (Enrolment.covers' own test, called directly: one Python call a line, not two)
            if not within(day, enrolment.start, enrolment.end):
                continue
            rule_row = self._program(enrolment.program, day, enrolment.county)
            if rule_row is None:
                continue
            if rule_row.approach == "excluded" and rule_row.exceptions & {
                    e.program for e in enrolments}:
                continue  # dual-eligible HHP/WPC members transition to ECM (002:1159-1160)
            rule = _PROGRAM_RULES.get(rule_row.approach)
            if rule:
                self._put_line(out, rule, place, index,
                               {"day": day.isoformat(), "program": enrolment.program}, stranger)
