"""Invoice rows → canonical encounters, claim by claim, with every row's fate recorded.

Rows come typed from the invoice layouts (``mappings/invoice/layouts``); rows with the same
invoice number, billing NPI and member CIN form one claim (``mappings/invoice/to-encounter.yaml``),
each row one service line. A row rejected by its layout is left out of its claim; a claim with
an ECM-rule error is rejected whole (the state denies an encounter for one bad line), and its
other rows say so. **Nothing is lost**: every data row ends accepted (with its claim id) or
rejected (with reasons).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import sqlite3
import tempfile
import weakref
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import yaml

from gateway.ecm.rules import ClaimPlace, EncounterRules
from gateway.findings import Finding, Severity
from gateway.model.encounter import (
    Address,
    BillingProvider,
    Claim,
    Encounter,
    Member,
    RenderingProvider,
    ServiceLine,
)
from gateway.paths import MAPPINGS
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular import collector_paused, load_layout, open_table
from gateway.x12.writer import EnvelopeSettings

MAX_LINES_PER_CLAIM = 50
_ROW = re.compile(r"row (\d+)")


@lru_cache(maxsize=1)
def invoice_mapping() -> dict:
    return yaml.safe_load((MAPPINGS / "invoice" / "to-encounter.yaml").read_text("utf-8"))


REPORT_FIELDS = ("invoice_number", "service_date", "procedure_code", "charge")
# what a claim is built from: rows are grouped as tuples of these (a dict per row would cost
# several times the memory on a 100k-row invoice)
LINE_FIELDS = ("billing_provider_name", "billing_npi", "billing_tin", "billing_address_line1",
               "billing_city", "billing_state", "billing_zip", "rendering_npi", "member_cin",
               "member_last_name", "member_first_name", "member_birth_date", "service_date",
               "service_date_end", "procedure_code", "modifier_1", "modifier_2", "modifier_3",
               "modifier_4", "units", "charge", "place_of_service", "authorization_number",
               "diagnosis_code")
_NO_FINDINGS: tuple = ()
_US = "\x1f"


def _report_text(values: dict) -> str:
    parts = []
    for name in REPORT_FIELDS:
        value = values.get(name)
        parts.append("" if value is None else
                     value.isoformat() if isinstance(value, date) else str(value))
    return _US.join(parts)


@dataclass(slots=True)
class RowOutcome:
    row: int
    accepted: bool = False
    claim_id: str = ""
    findings: list[Finding] | tuple = _NO_FINDINGS
    values: str = ""  # REPORT_FIELDS as text joined by US (one small string per row)

    def add(self, finding: Finding) -> None:
        if not self.findings:
            self.findings = []
        self.findings.append(finding)

    def value(self, name: str) -> str:
        if not self.values:
            return ""
        return self.values.split(_US)[REPORT_FIELDS.index(name)]


@dataclass
class InvoiceResult:
    path: str
    layout: str | None
    rows: RowBook
    encounters: list[Encounter]  # empty when they were handed to ``on_encounter``
    file_findings: list[Finding]
    claims: int = 0

    @property
    def findings(self) -> list[Finding]:
        found = list(self.file_findings)
        for outcome in self.rows.values():
            found.extend(outcome.findings)
        return found

    @property
    def accepted_rows(self) -> int:
        return self.rows.accepted()

    @property
    def rejected_rows(self) -> int:
        return len(self.rows) - self.rows.accepted()


class _Spool:
    """A temporary SQLite file for one invoice run, so that memory does not grow with the
    number of rows: the rows grouped by claim, every row's outcome, and the file-wide
    duplicate-line index. Removed when the run's result is released."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ecm-invoice-")
        self.db = sqlite3.connect(Path(self._dir.name) / "spool.sqlite",
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE line (claim INTEGER, row INTEGER, data BLOB)")
        self.db.execute("CREATE TABLE outcome (row INTEGER PRIMARY KEY, claim TEXT, "
                        "report TEXT)")
        self.db.execute("CREATE TABLE seen (digest BLOB PRIMARY KEY, label TEXT)")

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()


class SeenIndex:
    """The duplicate-line index of :class:`~gateway.ecm.rules.EncounterRules`, on the spool:
    a 16-byte digest of each line's key, not the key's values."""

    def __init__(self, spool: _Spool) -> None:
        self._db = spool.db

    @staticmethod
    def _digest(key: tuple) -> bytes:
        return hashlib.blake2b(repr(key).encode(), digest_size=16).digest()

    def get(self, key: tuple) -> str | None:
        found = self._db.execute("SELECT label FROM seen WHERE digest = ?",
                                 (self._digest(key),)).fetchone()
        return found[0] if found else None

    def __setitem__(self, key: tuple, label: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (self._digest(key), label))


class RowBook:
    """Every data row's outcome, on the spool; only the findings (few, and the output anyway)
    are kept in memory. Iterating gives :class:`RowOutcome` in row order."""

    def __init__(self, spool: _Spool) -> None:
        self._spool = spool
        self._db = spool.db
        self._findings: dict[int, list[Finding]] = {}
        self._pending: list[tuple[int, str, str]] = []
        self._count = 0

    def new(self, row: int, report: str) -> None:
        self._pending.append((row, "", report))
        self._count += 1
        if len(self._pending) >= 5000:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.executemany("INSERT OR IGNORE INTO outcome VALUES (?, ?, ?)",
                                 self._pending)
            self._pending = []

    def add(self, row: int, finding: Finding) -> None:
        if row not in self._findings and not self._known(row):
            self.new(row, "")
        self._findings.setdefault(row, []).append(finding)

    def _known(self, row: int) -> bool:
        self.flush()
        return self._db.execute("SELECT 1 FROM outcome WHERE row = ?", (row,)).fetchone() \
            is not None

    def set_claim(self, rows: list[int], claim_id: str) -> None:
        self.flush()
        self._db.executemany("UPDATE outcome SET claim = ? WHERE row = ?",
                             [(claim_id, row) for row in rows])

    def has_error(self, row: int) -> bool:
        return any(f.is_error for f in self._findings.get(row, ()))

    def __len__(self) -> int:
        self.flush()
        return self._db.execute("SELECT COUNT(*) FROM outcome").fetchone()[0]

    def accepted(self) -> int:
        self.flush()
        bad = {row for row, found in self._findings.items() if any(f.is_error for f in found)}
        claimed = self._db.execute("SELECT row FROM outcome WHERE claim != ''")
        return sum(1 for (row,) in claimed if row not in bad)

    def _outcome(self, row: int, claim: str, report: str) -> RowOutcome:
        findings = self._findings.get(row, _NO_FINDINGS)
        accepted = bool(claim) and not any(f.is_error for f in findings)
        return RowOutcome(row=row, accepted=accepted, claim_id=claim, findings=findings,
                          values=report)

    def __getitem__(self, row: int) -> RowOutcome:
        self.flush()
        found = self._db.execute("SELECT row, claim, report FROM outcome WHERE row = ?",
                                 (row,)).fetchone()
        if found is None:
            raise KeyError(row)
        return self._outcome(*found)

    def values(self):
        self.flush()
        cursor = self._db.cursor().execute("SELECT row, claim, report FROM outcome ORDER BY row")
        for row, claim, report in cursor:
            yield self._outcome(row, claim, report)


class _GroupSpool:
    """Rows grouped by claim key on the spool, so a large invoice in any row order needs
    memory for its claim keys only. Groups come back in the order their first row
    appeared."""

    def __init__(self, spool: _Spool) -> None:
        self._db = spool.db
        self._order: dict[tuple, int] = {}
        self._pending: list[tuple[int, int, bytes]] = []

    def add(self, key: tuple, row: int, values: tuple) -> None:
        claim = self._order.setdefault(key, len(self._order))
        self._pending.append((claim, row, pickle.dumps(values, protocol=5)))
        if len(self._pending) >= 5000:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO line VALUES (?, ?, ?)", self._pending)
        self._pending = []

    def groups(self):
        self._flush()
        self._db.execute("CREATE INDEX line_claim ON line (claim, row)")
        cursor = self._db.cursor().execute(
            "SELECT claim, row, data FROM line ORDER BY claim, row")
        keys = list(self._order)
        current, members = None, []
        for claim, row, data in cursor:
            if claim != current and members:
                yield keys[current], members
                members = []
            current = claim
            members.append((row, pickle.loads(data)))
        if members:
            yield keys[current], members


def _row_of(finding: Finding) -> int | None:
    match = _ROW.match(finding.location)
    return int(match.group(1)) if match else None


def _headers(layout_name: str | None) -> dict[str, str]:
    """canonical field -> the header of the layout the file matched (for locations)."""
    if layout_name is None:
        return {}
    return {c.field: c.headers[0] for c in load_layout("invoice", layout_name).columns}


def read_invoice(path: Path, settings: EnvelopeSettings, today: date,
                 rules: EncounterRules | None = None, catalogue: RuleCatalogue | None = None,
                 layout: str | None = None, progress=None, on_encounter=None,
                 authorise=None) -> InvoiceResult:
    """Validate an invoice and build its encounters. ``rules`` (ECM rules, with registries)
    default to the code-set rules alone; ``progress(rows)`` is called as rows are read;
    ``on_encounter(encounter)`` takes each accepted claim as soon as it is settled (streaming
    output) instead of collecting them."""
    with collector_paused():
        return _read_invoice(path, settings, today, rules, catalogue, layout, progress,
                             on_encounter, authorise)


def _read_invoice(path, settings, today, rules, catalogue, layout, progress,
                  on_encounter, authorise=None) -> InvoiceResult:
    catalogue = catalogue or default_catalogue()
    # ECM rules given (registries): the rule groups they cannot run are said once for the file
    notes = rules.notes() if rules is not None else []
    rules = rules or EncounterRules(None, catalogue=catalogue)
    mapping = invoice_mapping()
    defaults = mapping["defaults"]
    table = open_table(path, "invoice", layout, catalogue=catalogue)
    headers = _headers(table.layout_name)
    spool = _Spool()
    rows = RowBook(spool)
    weakref.finalize(rows, spool.close)  # the spool lives as long as the result's rows
    claims = _GroupSpool(spool)
    rules.use_seen_index(SeenIndex(spool))
    date_where = f"column {headers.get('service_date', 'service date')}"
    for count, (number, values) in enumerate(table, start=1):
        rows.new(number, _report_text(values))
        problem = _dates(values, today, int(defaults["timely_filing_days"]),
                         f"row {number}, {date_where}", catalogue)
        if problem:
            rows.add(number, problem)
            continue
        key = tuple(values[k] for k in mapping["claim_key"])
        claims.add(key, number, tuple(values.get(k) for k in LINE_FIELDS))
        if progress and count % 1000 == 0:
            progress(count)
    file_findings = []
    for finding in table.findings:  # layout findings: to their rows, or to the file
        number = _row_of(finding)
        if number is None:
            file_findings.append(finding)
        else:
            rows.add(number, finding)
    file_findings.extend(notes)
    encounters: list[Encounter] = []
    settled = _build_claims(claims, rows, settings, defaults, mapping, rules, headers,
                            catalogue, on_encounter or encounters.append, authorise)
    rows.flush()
    return InvoiceResult(path=str(path), layout=table.layout_name, rows=rows,
                         encounters=encounters, file_findings=file_findings, claims=settled)


def _dates(values: dict, today: date, timely_days: int, where: str,
           catalogue: RuleCatalogue) -> Finding | None:
    day = values["service_date"]
    last = values.get("service_date_end") or day
    if last > today:
        return catalogue.finding("INV-001", where, None, day=last.isoformat(),
                                 today=today.isoformat())
    if day < today - timedelta(days=timely_days):
        return catalogue.finding("INV-002", where, None, day=day.isoformat(),
                                 days=timely_days, today=today.isoformat())
    return None


def _encounter(grouped: list[tuple[int, tuple]], claim_id: str, settings: EnvelopeSettings,
               defaults: dict) -> Encounter:
    rows = [(number, dict(zip(LINE_FIELDS, values))) for number, values in grouped]
    first = rows[0][1]
    claim_pos = first["place_of_service"]
    lines = []
    for index, (_, v) in enumerate(rows, start=1):
        modifiers = [v.get(f"modifier_{i}") for i in range(1, 5)]
        lines.append(ServiceLine(
            line_number=index, procedure_code=v["procedure_code"],
            modifiers=[m for m in modifiers if m], charge=v["charge"],
            unit_type=defaults.get("unit_type", "UN"), units=v["units"],
            place_of_service=v["place_of_service"] if v["place_of_service"] != claim_pos
            else None,
            service_date=v["service_date"],
            service_date_end=v.get("service_date_end")
            if v.get("service_date_end") not in (None, v["service_date"]) else None,
            rendering_provider=RenderingProvider(last_name="RENDERING PROVIDER",
                                                 npi=v["rendering_npi"], is_person=True)
            if v.get("rendering_npi") and v["rendering_npi"] != v["billing_npi"] else None,
        ))
    diagnoses = list(dict.fromkeys(v.get("diagnosis_code") for _, v in rows
                                   if v.get("diagnosis_code")))
    submitter, receiver = settings.parties()
    return Encounter(
        submitter=submitter, receiver=receiver,
        billing_provider=BillingProvider(
            name=first["billing_provider_name"].upper(), npi=first["billing_npi"],
            tin=first["billing_tin"],
            address=Address(line1=first["billing_address_line1"].upper(),
                            city=first["billing_city"].upper(), state=first["billing_state"],
                            postal_code=first["billing_zip"].replace("-", ""))),
        member=Member(cin=first["member_cin"], last_name=first["member_last_name"].upper(),
                      first_name=first["member_first_name"].upper(),
                      birth_date=first["member_birth_date"]),
        payer=receiver.model_copy(),
        claim=Claim(id=claim_id, total_charge=sum((line.charge for line in lines), Decimal(0)),
                    place_of_service=claim_pos,
                    frequency_code=str(defaults.get("claim_frequency", "1")),
                    diagnosis_codes=(diagnoses or [defaults["diagnosis_code"]])[:12],
                    prior_authorization=next((v.get("authorization_number") for _, v in rows
                                              if v.get("authorization_number")), None),
                    lines=lines),
    )


def _build_claims(claims, rows: RowBook, settings, defaults, mapping,
                  rules: EncounterRules, headers: dict, catalogue: RuleCatalogue,
                  deliver, authorise=None) -> int:
    """Check the claims in batches and hand each accepted one to ``deliver``; returns how many
    were accepted. ``authorise(encounter, location)``: the caller's sender check (a finding
    rejects the claim, None lets it pass; the format code decides nothing about senders)."""
    accepted = 0
    numbers: dict[str, int] = {}
    batch: list[tuple[Encounter, ClaimPlace, list[tuple[int, dict]]]] = []

    def flush() -> None:
        nonlocal accepted
        found = rules.check([(e, place) for e, place, _ in batch])
        if authorise is not None:
            for (encounter, _place, members), findings in zip(batch, found):
                refused = authorise(encounter, f"row {members[0][0]}, column "
                                               f"{headers.get('billing_npi', 'billing_npi')}")
                if refused is not None:
                    findings.append(refused)
        for (encounter, _place, members), findings in zip(batch, found):
            if _settle(encounter, members, findings, rows, catalogue):
                deliver(encounter)
                accepted += 1
        batch.clear()

    for key, members in claims.groups():
        invoice = str(key[0])
        for start in range(0, len(members), MAX_LINES_PER_CLAIM):
            part = members[start:start + MAX_LINES_PER_CLAIM]
            numbers[invoice] = numbers.get(invoice, 0) + 1
            claim_id = mapping["claim_id"].format(invoice_number=invoice,
                                                  claim_number=numbers[invoice])[:38]
            encounter = _encounter(part, claim_id, settings, defaults)
            row_numbers = [n for n, _ in part]
            place = ClaimPlace(
                claim=f"rows {row_numbers[0]}-{row_numbers[-1]}" if len(row_numbers) > 1
                else f"row {row_numbers[0]}",
                member=f"row {row_numbers[0]}, column {headers.get('member_cin', 'member_cin')}",
                lines=[f"row {n}, column {headers.get('procedure_code', 'procedure_code')}"
                       for n in row_numbers],
                label=f"claim {claim_id}")
            batch.append((encounter, place, part))
            if len(batch) >= 1000:
                flush()
    if batch:
        flush()
    return accepted


def _settle(encounter: Encounter, members: list[tuple[int, tuple]], findings: list[Finding],
            rows: RowBook, catalogue: RuleCatalogue) -> bool:
    """Give each row of a claim its findings; reject the whole claim on an error. True when
    the claim is accepted."""
    by_row: dict[int, list[Finding]] = {}
    first_row = members[0][0]
    for finding in findings:
        number = _row_of(finding) or first_row
        by_row.setdefault(number, []).append(finding)
    claim_id = encounter.claim.id
    errors = [f for f in findings if f.severity is Severity.ERROR]
    for number, _ in members:
        for finding in by_row.get(number, ()):
            rows.add(number, finding)
        if errors and not any(f.is_error for f in by_row.get(number, [])):
            reason = f"{errors[0].rule} at {errors[0].location}"
            sibling = catalogue.finding("INV-003", f"row {number}", None, claim=claim_id,
                                        reason=reason)
            if sibling:
                rows.add(number, sibling)
    rows.set_claim([number for number, _ in members], claim_id)  # rejected rows name it too
    return not errors
