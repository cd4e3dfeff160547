"""Members' data-sharing authorizations as a plan sees them: "Communicate Member-level record of
written authorization to allow data sharing (once obtained) back to the MCP" (ECM Policy Guide
002:1598-1599). The registry is :data:`gateway.registry.store.data_sharing` (loaded from the
data-sharing columns of RTF files, ``mappings/layouts/rtf/``, and from FHIR Consent); this
module decides which decision stands on a day for each member, provider and scope
(:func:`in_effect`: the latest in effect wins) and lists them with their status - for the
command line (``ecm-gateway report data-sharing``, from RTF files) and the API (``GET
/registries/data-sharing``, from the server's registry)."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

COLUMNS = ["plan", "member_cin", "authorized", "authorization_date", "scope", "expiry",
           "status", "provider_npi", "provider_tin", "provider_name", "reported_on"]


def plan_of(source: str) -> str:
    return source.split(":", 2)[1] if source.startswith("plan:") else ""


def decided_on(authorization) -> date:
    """The day an authorization decision takes effect: its date (for a withdrawal, the day
    it was withdrawn), else the day the RTF reporting it was produced, else always."""
    return authorization.authorization_date or authorization.reported_on or date.min


def in_effect(authorizations, as_of: date) -> list[tuple[object, tuple[str, ...]]]:
    """The decisions that stand on ``as_of``: for each plan, member, provider (NPI, else TIN)
    and scope code, the LATEST decision in effect that day (dated on or before it; a later
    withdrawal supersedes an earlier authorization from its date, a later re-authorization
    a withdrawal) - or, when every decision is dated later, the first to come. A tie (same
    day, same RTF production date) goes to the withdrawal. A withdrawal naming no scope
    withdraws every scope. Returns ``(authorization, the scope codes it decides)``, each
    deciding authorization once."""
    groups: dict[tuple, list] = {}
    for a in authorizations:
        key = (plan_of(a.source), a.cin, a.provider_npi or a.provider_tin or a.provider_name)
        groups.setdefault(key, []).append(a)
    out: list[tuple[object, tuple[str, ...]]] = []
    for decisions in groups.values():
        codes = list(dict.fromkeys(c for a in decisions for c in a.scope))
        if not codes or any(a.authorized and not a.scope for a in decisions):
            codes.append("")  # an authorization naming no scope: a scope of its own
        # latest first: decision day, then report day, a withdrawal before an authorization
        ranked = sorted(decisions, key=lambda a: (decided_on(a), a.reported_on or date.min,
                                                  not a.authorized), reverse=True)
        decides: dict[int, list[str]] = {}
        for code in codes:
            about = [a for a in ranked
                     if code in a.scope or (not a.scope and (not a.authorized or not code))]
            standing = [a for a in about if decided_on(a) <= as_of]
            winner = standing[0] if standing else (about[-1] if about else None)
            if winner is not None:
                decides.setdefault(id(winner), []).append(code)
        for a in ranked:
            if id(a) in decides:
                out.append((a, tuple(c for c in decides[id(a)] if c)))
    return out


def authorization_rows(authorizations, as_of: date) -> list[dict]:
    """One dict per member, provider and scope (codes decided by the same authorization share
    a row: ``scope``), newest first per member, with the status on ``as_of`` of the decision
    that stands that day (:func:`in_effect`): ``active``, ``expired``, ``not-yet-effective``
    or ``not-authorized`` (refused, withdrawn, inactive)."""
    standing = in_effect(authorizations, as_of)
    standing.sort(key=lambda pair: (pair[0].cin, -decided_on(pair[0]).toordinal(),
                                    -(pair[0].reported_on or date.min).toordinal(),
                                    pair[0].source))
    return [{"plan": plan_of(a.source), "member_cin": a.cin,
             "authorized": a.authorized,
             "authorization_date": a.authorization_date.isoformat()
             if a.authorization_date else None,
             "scope": list(scope),
             "expiry": a.expiry.isoformat() if a.expiry else None,
             "status": a.status(as_of), "provider_npi": a.provider_npi,
             "provider_tin": a.provider_tin, "provider_name": a.provider_name,
             "reported_on": a.reported_on.isoformat() if a.reported_on else None}
            for a, scope in standing]


def report_csv(rows: list[dict]) -> bytes:
    from gateway.tabular.cells import neutral_row

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(neutral_row(
            ("Y" if row[c] else "N") if c == "authorized" else
            ";".join(row[c]) if c == "scope" else (row[c] or "") for c in COLUMNS))
    return out.getvalue().encode("utf-8")


def _has_data_sharing_columns(layout: str | None) -> bool:
    """Whether the RTF layout a file matched has the data-sharing authorization column."""
    from gateway.tabular import load_layout

    return layout is not None and \
        load_layout("rtf", layout).column("data_sharing_authorization") is not None


def data_sharing_from_files(rtf: list[Path], plan: str, as_of: date):
    """RTF files (any RTF layout with the data-sharing columns) into an in-memory registry,
    each file applied whole or not at all. Returns the rows (None when any file has an error)
    and a FileReport per file."""
    from gateway.ecm.tables import read_checked_table
    from gateway.registry.load import not_applied
    from gateway.registry.store import Registry
    from gateway.reports import FileReport
    from gateway.rules import default_catalogue
    from gateway.tabular import LayoutError

    registry = Registry()
    files, ok = [], True
    for path in rtf:
        try:
            table = read_checked_table(Path(path), "rtf")
        except (LayoutError, OSError) as exc:
            finding = default_catalogue().finding("REG-FILE-001", "file", None, kind="rtf",
                                                  problem=str(exc))
            files.append(FileReport(str(path), "rtf", [finding] if finding else []))
            ok = False
            continue
        findings = list(table.findings)
        loaded = 0
        if not _has_data_sharing_columns(table.layout):  # read, but nothing to report from it
            finding = default_catalogue().finding("REG-FILE-002", "file", None, kind="rtf",
                                                  what="data-sharing authorization",
                                                  layout=table.layout)
            findings.extend([finding] if finding else [])
        if table.valid:
            loaded = registry.load_data_sharing(
                (row for _, row in table.rows),
                source=f"plan:{plan}:data-sharing:file:{Path(path).name}")
        else:
            findings += not_applied(table)
            ok = False
        files.append(FileReport(str(path), "rtf", findings,
                                {"rows": table.rows_total, "authorizations": loaded}))
    if not ok:
        return None, files
    return authorization_rows(registry.data_sharing(), as_of), files
