"""A plan's claims / encounter extract (``mappings/layouts/claims/``) into the encounter-history
registry: every kind of service line with its diagnoses, streamed in bounded memory, applied
whole or not at all (any error rolls the load back, leaving the registry as it was)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from gateway.findings import Finding
from gateway.registry.store import Registry, diagnosis_key, modifier_key, units_text
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular import load_layout, open_table

ICD10 = re.compile(r"[A-TV-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?")
MAX_FINDINGS = 1000  # row findings kept per file (the count is always exact)
# the earliest service date a Medi-Cal claim can carry: the program began in March 1966
# (California Welfare and Institutions Code 14000 et seq.; Medi-Cal's start date)
MEDI_CAL_START = date(1966, 3, 1)


class _Rejected(Exception):
    """Raised inside the load transaction to roll it back."""


@dataclass
class ClaimsLoad:
    source: str
    findings: list[Finding] = field(default_factory=list)
    rows: int = 0
    loaded: int = 0
    errors: int = 0

    @property
    def applied(self) -> bool:
        return self.errors == 0 and self.rows > 0


def load_claims_extract(registry: Registry, path: Path, source: str,
                        catalogue: RuleCatalogue | None = None,
                        today: date | None = None) -> ClaimsLoad:
    """Load ``path`` under ``source`` (replacing that source's lines) or, when any row has an
    error, load nothing. Raises LayoutError when the header matches no claims layout. A service
    date after ``today`` (the day of the load) or before Medi-Cal began is a row error
    (ECM-HIST-002): history is what happened."""
    catalogue = catalogue or default_catalogue()
    today = today or date.today()
    result = ClaimsLoad(source)
    reader = open_table(Path(path), "claims", catalogue=catalogue)
    layout = load_layout("claims", reader.layout_name)
    column = layout.column("diagnosis_codes")
    dx_header = column.headers[0] if column is not None else "Diagnosis Codes"
    column = layout.column("service_date")
    day_header = column.headers[0] if column is not None else "Service Date"

    good: set[str] = set()  # diagnosis codes seen valid (a file repeats them)
    keys: dict[tuple, str] = {}  # diagnoses / modifiers as stored, by their list

    def stored(codes: list, make) -> str:
        key = tuple(codes)
        found = keys.get(key)
        if found is None:
            if len(keys) > 100_000:  # bounded memory on a file of all-different lists
                keys.clear()
            found = keys[key] = make(codes)
        return found

    units_seen: dict = {}  # units as stored, by value (a file repeats a few values)

    def units(value) -> str:
        found = units_seen.get(value)
        if found is None:
            if len(units_seen) > 10_000:
                units_seen.clear()
            found = units_seen[value] = units_text(value)
        return found

    def rows():
        for number, row in reader:
            day = row["service_date"]
            if day > today or day < MEDI_CAL_START:
                finding = catalogue.finding(
                    "ECM-HIST-002", f"row {number}, column {day_header}", None,
                    day=day.isoformat(), why=f"after the day of the load ({today.isoformat()})"
                    if day > today else f"before Medi-Cal began ({MEDI_CAL_START.isoformat()})")
                result.errors += 1
                if finding and len(result.findings) < MAX_FINDINGS:
                    result.findings.append(finding)
                continue
            codes = row["diagnosis_codes"]
            bad = [c for c in codes if c not in good and not _icd(c, good)]
            if bad:
                finding = catalogue.finding("ECM-HIST-001", f"row {number}, column {dx_header}",
                                            None, code=", ".join(bad[:5]))
                result.errors += 1
                if finding and len(result.findings) < MAX_FINDINGS:
                    result.findings.append(finding)
                continue
            yield (row["member_cin"], row["billing_npi"], row.get("rendering_npi") or None,
                   row["service_date"], row.get("procedure_code") or None,
                   stored(row.get("modifiers") or [], modifier_key),
                   units(row.get("units")), row.get("place_of_service") or None,
                   row["claim_id"], row["line_number"], stored(codes, diagnosis_key))
        table_errors = [f for f in reader.findings if f.is_error]
        result.rows = reader.rows_total
        result.errors += len(table_errors)
        if result.errors or result.rows == 0:
            raise _Rejected

    try:
        result.loaded = registry.load_history_tuples(rows(), source=source)
    except _Rejected:
        result.loaded = 0
    kept = [f for f in reader.findings][:MAX_FINDINGS]
    result.findings = kept + result.findings
    if result.errors:
        finding = catalogue.finding("ECM-REG-002", "file", None, errors=result.errors,
                                    rows=result.rows)
        if finding:
            result.findings.append(finding)
    return result


def _icd(code: str, good: set[str]) -> bool:
    if ICD10.fullmatch(code.upper()):
        if len(good) < 100_000:
            good.add(code)
        return True
    return False
