"""Invoice rows → canonical encounters, claim by claim, with every row's fate recorded.

Rows come typed from the invoice layouts (``mappings/invoice/layouts``); rows with the same
invoice number, billing NPI and member CIN form one claim (``mappings/invoice/to-encounter.yaml``),
each row one service line. A row rejected by its layout is left out of its claim; a claim with
an ECM-rule error is rejected whole (the state denies an encounter for one bad line), and its
other rows say so. **Nothing is lost**: every data row ends accepted (with its claim id) or
rejected (with reasons).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import yaml

from gateway.ecm.rules import ClaimPlace, EncounterRules
from gateway.findings import Finding, Severity
from gateway.model.encounter import (
    Address, BillingProvider, Claim, Encounter, Member, Party, RenderingProvider, ServiceLine,
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


@dataclass(slots=True)
class RowOutcome:
    row: int
    accepted: bool = False
    claim_id: str = ""
    findings: list[Finding] | tuple = _NO_FINDINGS
    values: tuple = ()  # REPORT_FIELDS, for the report

    def add(self, finding: Finding) -> None:
        if not self.findings:
            self.findings = []
        self.findings.append(finding)

    def value(self, name: str):
        return self.values[REPORT_FIELDS.index(name)] if self.values else None


@dataclass
class InvoiceResult:
    path: str
    layout: str | None
    rows: dict[int, RowOutcome]
    encounters: list[Encounter]  # empty when they were handed to ``on_encounter``
    file_findings: list[Finding]
    claims: int = 0

    @property
    def findings(self) -> list[Finding]:
        found = list(self.file_findings)
        for outcome in sorted(self.rows.values(), key=lambda o: o.row):
            found.extend(outcome.findings)
        return found

    @property
    def accepted_rows(self) -> int:
        return sum(1 for o in self.rows.values() if o.accepted)

    @property
    def rejected_rows(self) -> int:
        return sum(1 for o in self.rows.values() if not o.accepted)


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
                 layout: str | None = None, progress=None, on_encounter=None) -> InvoiceResult:
    """Validate an invoice and build its encounters. ``rules`` (ECM rules, with registries)
    default to the code-set rules alone; ``progress(rows)`` is called as rows are read;
    ``on_encounter(encounter)`` takes each accepted claim as soon as it is settled (streaming
    output) instead of collecting them."""
    with collector_paused():
        return _read_invoice(path, settings, today, rules, catalogue, layout, progress,
                             on_encounter)


def _read_invoice(path, settings, today, rules, catalogue, layout, progress,
                  on_encounter) -> InvoiceResult:
    catalogue = catalogue or default_catalogue()
    rules = rules or EncounterRules(None, catalogue=catalogue)
    mapping = invoice_mapping()
    defaults = mapping["defaults"]
    table = open_table(path, "invoice", layout, catalogue=catalogue)
    headers = _headers(table.layout_name)
    rows: dict[int, RowOutcome] = {}
    claims: "OrderedDict[tuple, list[tuple[int, tuple]]]" = OrderedDict()
    date_where = f"column {headers.get('service_date', 'service date')}"
    for count, (number, values) in enumerate(table, start=1):
        outcome = RowOutcome(row=number, values=tuple(values.get(k) for k in REPORT_FIELDS))
        rows[number] = outcome
        problem = _dates(values, today, int(defaults["timely_filing_days"]),
                         f"row {number}, {date_where}", catalogue)
        if problem:
            outcome.add(problem)
            continue
        key = tuple(values[k] for k in mapping["claim_key"])
        claims.setdefault(key, []).append(
            (number, tuple(values.get(k) for k in LINE_FIELDS)))
        if progress and count % 1000 == 0:
            progress(count)
    file_findings = []
    for finding in table.findings:  # layout findings: to their rows, or to the file
        number = _row_of(finding)
        if number is None:
            file_findings.append(finding)
        else:
            rows.setdefault(number, RowOutcome(row=number)).add(finding)
    encounters: list[Encounter] = []
    settled = _build_claims(claims, rows, settings, defaults, mapping, rules, headers,
                            catalogue, on_encounter or encounters.append)
    for outcome in rows.values():
        outcome.accepted = bool(outcome.claim_id) and not any(
            f.is_error for f in outcome.findings)
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
    return Encounter(
        submitter=Party(name=settings.submitter.name, id=settings.submitter.id,
                        contact_name=settings.submitter.contact_name,
                        contact_phone=settings.submitter.contact_phone),
        receiver=Party(name=settings.receiver.name, id=settings.receiver.id),
        billing_provider=BillingProvider(
            name=first["billing_provider_name"].upper(), npi=first["billing_npi"],
            tin=first["billing_tin"],
            address=Address(line1=first["billing_address_line1"].upper(),
                            city=first["billing_city"].upper(), state=first["billing_state"],
                            postal_code=first["billing_zip"].replace("-", ""))),
        member=Member(cin=first["member_cin"], last_name=first["member_last_name"].upper(),
                      first_name=first["member_first_name"].upper(),
                      birth_date=first["member_birth_date"]),
        payer=Party(name=settings.receiver.name, id=settings.receiver.id),
        claim=Claim(id=claim_id, total_charge=sum((line.charge for line in lines), Decimal(0)),
                    place_of_service=claim_pos,
                    frequency_code=str(defaults.get("claim_frequency", "1")),
                    diagnosis_codes=(diagnoses or [defaults["diagnosis_code"]])[:12],
                    prior_authorization=next((v.get("authorization_number") for _, v in rows
                                              if v.get("authorization_number")), None),
                    lines=lines),
    )


def _build_claims(claims, rows: dict[int, RowOutcome], settings, defaults, mapping,
                  rules: EncounterRules, headers: dict, catalogue: RuleCatalogue,
                  deliver) -> int:
    """Check the claims in batches and hand each accepted one to ``deliver``; returns how many
    were accepted."""
    accepted = 0
    numbers: dict[str, int] = {}
    batch: list[tuple[Encounter, ClaimPlace, list[tuple[int, dict]]]] = []

    def flush() -> None:
        nonlocal accepted
        found = rules.check([(e, place) for e, place, _ in batch])
        for (encounter, _place, members), findings in zip(batch, found):
            if _settle(encounter, members, findings, rows, catalogue):
                deliver(encounter)
                accepted += 1
        batch.clear()

    while claims:
        key, members = claims.popitem(last=False)  # release each group once it is built
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
            rows: dict[int, RowOutcome], catalogue: RuleCatalogue) -> bool:
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
        outcome = rows[number]
        for finding in by_row.get(number, ()):
            outcome.add(finding)
        outcome.claim_id = claim_id  # rejected rows name their claim too
        if errors and not any(f.is_error for f in by_row.get(number, [])):
            reason = f"{errors[0].rule} at {errors[0].location}"
            sibling = catalogue.finding("INV-003", f"row {number}", None, claim=claim_id,
                                        reason=reason)
            if sibling:
                outcome.add(sibling)
    return not errors
