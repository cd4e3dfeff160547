"""ECM checks on the member-level tables a plan sends, on top of their column layouts: the
ages of the Populations of Focus (ECM-MIF-001), one ECM provider at a time (ECM-MIF-002) and a
possible date of birth (ECM-MIF-004) in a MIF; overlapping CS authorizations of one service
(ECM-CS-003), in a CS authorization file or in a MIF's CS columns. The one entry point every
edge uses
(``validate``, ``--members``, the server's MIF step) is :func:`read_checked_table`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from gateway.ecm.codesets import CodeSets, age_on, load_codesets
from gateway.findings import Finding
from gateway.rules import RuleCatalogue, default_catalogue
from gateway.tabular import read_table
from gateway.tabular.layouts import load_layout


def read_checked_table(path: Path, kind: str, *, catalogue: RuleCatalogue | None = None,
                       codesets: CodeSets | None = None, today: date | None = None):
    """:func:`gateway.tabular.read_table` plus the ECM checks of the kind (raises LayoutError
    like it). ``today``: the day the file is checked (a MIF's birth dates; default: the
    clock's)."""
    table = read_table(path, kind)
    catalogue = catalogue or default_catalogue()
    if kind == "mif":
        table.findings.extend(mif_findings(table, catalogue, codesets or load_codesets(),
                                           today or date.today()))
    elif kind == "claims":
        table.findings.extend(diagnosis_findings(table, catalogue))
    elif kind == "cs-auth":
        table.findings.extend(cs_overlaps(table, catalogue))
    return table


def cs_overlaps(table, catalogue: RuleCatalogue, repeated: bool = False) -> list[Finding]:
    """Two authorizations of one member for one Community Supports service whose periods
    overlap (which one counts would be a guess). Rows without a CS authorization (a MIF's
    ECM-only rows) are not looked at; ``repeated``: a row repeating an earlier row's whole
    authorization (service, provider, dates) is that authorization again, not another one (a
    MIF repeats it on each row of the member: one per other program)."""
    header = _header(table, "cs_authorization_start")
    by_key: dict[tuple, list[tuple[int, dict]]] = {}
    seen: set[tuple] = set()
    for number, row in table.rows:
        if not row.get("cs_service") or row.get("cs_authorization_start") is None:
            continue
        if repeated:
            whole = (row["member_cin"], row["cs_service"], row.get("cs_provider_npi"),
                     row["cs_authorization_start"], row.get("cs_authorization_end"))
            if whole in seen:
                continue
            seen.add(whole)
        by_key.setdefault((row["member_cin"], row["cs_service"]), []).append((number, row))
    out = []
    for rows in by_key.values():
        rows.sort(key=lambda r: r[1]["cs_authorization_start"])
        for (first_number, first), (number, row) in zip(rows, rows[1:]):
            end = first.get("cs_authorization_end")
            if end is None or end >= row["cs_authorization_start"]:
                finding = catalogue.finding(
                    "ECM-CS-003", f"row {number}, column {header}", None,
                    day=row["cs_authorization_start"].isoformat(), other=first_number,
                    service=row["cs_service"])
                if finding:
                    out.append(finding)
    return out


def diagnosis_findings(table, catalogue: RuleCatalogue) -> list[Finding]:
    from gateway.registry.claims import ICD10

    header = _header(table, "diagnosis_codes")
    out = []
    for number, row in table.rows:
        bad = [c for c in row.get("diagnosis_codes") or () if not ICD10.fullmatch(c.upper())]
        if bad:
            finding = catalogue.finding("ECM-HIST-001", f"row {number}, column {header}", None,
                                        code=", ".join(bad[:5]))
            if finding:
                out.append(finding)
    return out


def _header(table, field: str) -> str:
    try:
        column = load_layout(table.kind, table.layout).column(field)
    except (OSError, ValueError):
        column = None
    return column.headers[0] if column is not None else field


def _shown(day: date | None) -> str:
    return day.isoformat() if day else "open end"


def _impossible_birth(birth: date, today: date, max_age: int | None) -> bool:
    """Born after ``today``, or older than ``max_age`` years on it (member-ages.yaml)."""
    return birth > today or (max_age is not None and age_on(birth, today) > max_age)


def mif_findings(table, catalogue: RuleCatalogue, codes: CodeSets,
                 today: date | None = None) -> list[Finding]:
    """``today``: the day the file is checked (default: the clock's)."""
    today = today or date.today()
    found: list[Finding] = []
    birth_header = _header(table, "member_birth_date")
    start_header = _header(table, "ecm_benefit_start")
    seen_age: set[tuple] = set()
    periods: dict[str, list[tuple[int, dict]]] = {}
    for number, row in table.rows:
        birth, auth = row.get("member_birth_date"), row.get("authorization_date")
        if birth and _impossible_birth(birth, today, codes.max_age_years):
            why = "it is after that day" if birth > today else (
                f"the member would be older than {codes.max_age_years} years (the oldest "
                "assumed possible)")
            finding = catalogue.finding("ECM-MIF-004", f"row {number}, column {birth_header}",
                                        None, day=today.isoformat(), why=why)
            if finding:
                found.append(finding)
            birth = None  # no age to check against the Populations of Focus
        if birth and auth:
            age = age_on(birth, auth)
            for pof in row.get("pof_codes") or ():
                ages = codes.pof_ages.get(pof)
                key = (row["member_cin"], pof, auth)
                if ages is None or ages.fits(age) or key in seen_age:
                    continue
                seen_age.add(key)
                finding = catalogue.finding("ECM-MIF-001", f"row {number}, column {birth_header}",
                                            None, day=auth.isoformat(), age=age, pof=pof,
                                            ages=ages.shown())
                if finding:
                    found.append(finding)
        county = (row.get("member_county") or "").strip().upper()
        for pof in (row.get("pof_codes") or ()) if county and auth else ():
            go_live = codes.county_go_live.get((county, pof))
            if go_live is not None and auth < go_live:
                finding = catalogue.finding(
                    "ECM-MIF-003", f"row {number}, column {_header(table, 'authorization_date')}",
                    None, day=auth.isoformat(), pof=pof, county=county,
                    go_live=go_live.isoformat())
                if finding:
                    found.append(finding)
        if row.get("ecm_benefit_start"):
            periods.setdefault(row["member_cin"], []).append((number, row))
    for rows in periods.values():
        found.extend(_overlaps(rows, catalogue, start_header))
    if load_layout(table.kind, table.layout).column("cs_service") is not None:
        found.extend(cs_overlaps(table, catalogue, repeated=True))  # a MIF's CS columns
    return found


def _overlaps(rows: list[tuple[int, dict]], catalogue: RuleCatalogue,
              header: str) -> list[Finding]:
    """Assignments of one member to different providers whose periods overlap."""
    out = []
    reported: set[int] = set()
    ordered = sorted(rows, key=lambda r: r[1]["ecm_benefit_start"])
    for i, (number, row) in enumerate(ordered):
        for other_number, other in ordered[:i]:
            if (other.get("ecm_provider_npi") or "") == (row.get("ecm_provider_npi") or ""):
                continue
            end = other.get("ecm_benefit_end")
            if end is not None and end < row["ecm_benefit_start"]:
                continue
            if number in reported:
                continue
            reported.add(number)
            finding = catalogue.finding(
                "ECM-MIF-002", f"row {number}, column {header}", None,
                day=_shown(row["ecm_benefit_start"]), npi=row.get("ecm_provider_npi") or "", start=_shown(row["ecm_benefit_start"]),
                end=_shown(row.get("ecm_benefit_end")), other=other_number,
                other_npi=other.get("ecm_provider_npi") or "",
                other_start=_shown(other["ecm_benefit_start"]), other_end=_shown(end))
            if finding:
                out.append(finding)
    return out
