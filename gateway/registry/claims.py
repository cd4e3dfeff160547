"""A plan's claims / encounter extract (``mappings/layouts/claims/``) into the encounter-history
registry: every kind of service line with its diagnoses, streamed in bounded memory, applied
whole or not at all (any error rolls the load back, leaving the registry as it was)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.findings import Finding
from gateway.registry.store import Registry, diagnosis_key, modifier_key
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular import load_layout, open_table

ICD10 = re.compile(r"[A-TV-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?")
MAX_FINDINGS = 1000  # row findings kept per file (the count is always exact)


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
                        catalogue: RuleCatalogue | None = None) -> ClaimsLoad:
    """Load ``path`` under ``source`` (replacing that source's lines) or, when any row has an
    error, load nothing. Raises LayoutError when the header matches no claims layout."""
    catalogue = catalogue or default_catalogue()
    result = ClaimsLoad(source)
    reader = open_table(Path(path), "claims", catalogue=catalogue)
    column = load_layout("claims", reader.layout_name).column("diagnosis_codes")
    dx_header = column.headers[0] if column is not None else "Diagnosis Codes"

    def rows():
        for number, row in reader:
            bad = [c for c in row["diagnosis_codes"] if not ICD10.fullmatch(c.upper())]
            if bad:
                finding = catalogue.finding("ECM-HIST-001", f"row {number}, column {dx_header}",
                                            None, codes=", ".join(bad[:5]))
                result.errors += 1
                if finding and len(result.findings) < MAX_FINDINGS:
                    result.findings.append(finding)
                continue
            yield {"cin": row["member_cin"], "billing_npi": row["billing_npi"],
                   "rendering_npi": row.get("rendering_npi") or None,
                   "service_date": row["service_date"],
                   "procedure_code": row.get("procedure_code") or None,
                   "modifiers": modifier_key(row.get("modifiers") or ()),
                   "units": row.get("units"),
                   "place_of_service": row.get("place_of_service") or None,
                   "claim_id": row["claim_id"], "line_number": row["line_number"],
                   "diagnoses": diagnosis_key(row["diagnosis_codes"])}
        table_errors = [f for f in reader.findings if f.is_error]
        result.rows = reader.rows_total
        result.errors += len(table_errors)
        if result.errors or result.rows == 0:
            raise _Rejected

    try:
        result.loaded = registry.load_history(rows(), source=source)
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
