"""Validate one file of any known kind and describe the outcome (the ``files[]`` entries of
``ecm-gateway validate --format json`` and, later, of submission status)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from gateway.findings import FileReport, Finding, Severity
from gateway.rules import default_catalogue
from gateway.sniff import UnknownKind, sniff
from gateway.x12.acks import ClaimSpans, verdict_counts
from gateway.x12.reader import NotX12Error
from gateway.x12.validate import validate_x12

X12_KINDS = ("837p", "837i", "999", "277ca", "835", "x12")
KINDS = ("auto", "837p", "837i", "999", "277ca", "274", "invoice", "mif", "rtf", "otf", "fhir",
         "cs-auth", "claims")
TABLE_KINDS = ("mif", "rtf", "otf", "roster", "invoice", "cs-auth", "claims", "directory")
NOT_YET = {"json"}


class UnsupportedKind(ValueError):
    """A known kind this version cannot validate yet (usage error, exit 2)."""


def _closest_layout_error(path: Path) -> str:
    """The layout error of the kind whose layout misses the fewest required columns, so the
    user learns which columns to add or rename."""
    from gateway.tabular import LayoutError, read_table

    errors = []
    for kind in TABLE_KINDS:
        try:
            read_table(path, kind)
        except LayoutError as exc:
            fewest = min((len(missing) for missing in exc.tried.values()), default=99)
            errors.append((fewest, str(exc)))
        except (OSError, ValueError):
            continue
    return min(errors)[1] if errors else "none (no header row found)"


def validate_invoice(path: Path, rules=None, settings_name: str = "plan-default",
                     progress=None, received: date | None = None, on_encounter=None,
                     authorise=None):
    """An invoice: rows validated, grouped into claims and checked against the ECM rules.
    Returns the report and the :class:`~gateway.invoice.convert.InvoiceResult`."""
    from gateway.invoice.convert import read_invoice
    from gateway.tabular import LayoutError
    from gateway.x12.writer import envelope_settings

    try:
        result = read_invoice(path, envelope_settings(settings_name),
                              received or date.today(), rules=rules, progress=progress,
                              on_encounter=on_encounter or (lambda encounter: None),
                              authorise=authorise)
    except LayoutError as exc:
        raise UnknownKind(f"{path}: {exc}") from exc
    report = FileReport(path=str(path), kind="invoice", findings=result.findings,
                        stats={"rows": len(result.rows), "accepted_rows": result.accepted_rows,
                               "rejected_rows": result.rejected_rows,
                               "claims": result.claims, "layout": result.layout})
    report.invoice = result  # type: ignore[attr-defined]
    return report


def validate_table(path: Path, found: str, kind: str, rules=None,
                   received: date | None = None) -> FileReport:
    """MIF, RTF, OTF and provider rosters (CSV or XLSX) against their column layouts."""
    from gateway.tabular import LayoutError, sniff_table

    table_kind = kind if kind in TABLE_KINDS else sniff_table(path)
    if table_kind is None:
        raise UnknownKind(f"{path}: a {found.upper()} file whose columns match no known "
                          f"layout; the closest: {_closest_layout_error(path)}")
    if table_kind == "invoice":
        return validate_invoice(path, rules, received=received)
    from gateway.ecm.tables import read_checked_table

    try:
        table = read_checked_table(path, table_kind, today=received)
    except LayoutError as exc:
        raise UnknownKind(f"{path}: {exc}") from exc
    return FileReport(path=str(path), kind=table_kind, findings=table.findings,
                      stats={"rows": table.rows_total,
                             "accepted_rows": table.rows_total - table.rows_rejected,
                             "rejected_rows": table.rows_rejected, "layout": table.layout})


def validate_state_response(path: Path) -> FileReport:
    """The state's encounter response XML (element names in
    mappings/state-response/dhcs-response.yaml): readable or not, and its verdicts counted."""
    from gateway.state.response import StateResponseError, parse_state_response

    try:
        response = parse_state_response(Path(path).read_bytes())
    except StateResponseError as exc:
        finding = default_catalogue().finding("STATE-XML-001", "file", None, problem=str(exc))
        return FileReport(str(path), "state-response", [finding])
    encounters = [e for _, e in response.encounters]
    return FileReport(str(path), "state-response", [], {
        "file_status": response.status, "transactions": len(response.transactions),
        "encounters": len(encounters),
        "denied_encounters": sum(e.denied for e in encounters)})


def validate_274(path: Path, found: str) -> FileReport:
    """The X12 274 provider directory (004050X109): the X12 engine's findings once the guide is
    registered, and the directory reader's (:mod:`gateway.directory.validate`); ``stats``
    counts groups, sites and providers."""
    from gateway.directory.validate import validate_274_file

    if found != "274":
        raise UnsupportedKind(f"{path}: not a 274 provider directory (found {found})")
    try:
        findings, stats = validate_274_file(path)
    except NotX12Error as exc:
        raise UnknownKind(str(exc)) from exc
    return FileReport(path=str(path), kind="274", findings=findings, stats=stats)


def _validate_fhir(path: Path) -> FileReport:
    from gateway.fhir.report import (
        validate_fhir_file,
    )

    return validate_fhir_file(path)


def validate_file(path: Path, kind: str = "auto", rules=None,
                  received: date | None = None, engine: str = "native", jobs: int = 1,
                  progress=None) -> FileReport:
    """Raises :class:`UnknownKind` / :class:`UnsupportedKind` for usage errors (exit 2).
    ``rules`` (an :class:`~gateway.ecm.rules.EncounterRules`) adds the ECM rules to 837P."""
    if kind == "fhir":  # even a body that does not parse is reported as FHIR findings
        return _validate_fhir(path)
    found = sniff(path)
    if found == "fhir":
        if kind not in ("auto", "fhir"):
            raise UnsupportedKind(f"{path}: a FHIR resource, not a {kind} file")
        return _validate_fhir(path)
    if found == "state-response":
        return validate_state_response(path)
    if found == "274" or kind == "274":
        return validate_274(path, found)
    if found in NOT_YET or (kind != "auto" and kind in NOT_YET):
        shown = kind if kind != "auto" else found
        raise UnsupportedKind(f"{path}: {shown} files cannot be validated by this version yet")
    if found in ("csv", "xlsx"):
        return validate_table(path, found, kind, rules, received)
    try:
        spans = ClaimSpans()  # claims counted, not kept: bounded memory for any file size
        result = validate_x12(str(path), rules=rules, engine=engine, jobs=jobs,
                              progress=progress, on_claim=spans.add)
    except NotX12Error as exc:
        raise UnknownKind(str(exc)) from exc
    findings = list(result.findings)
    if kind != "auto" and result.kind != kind:
        finding = default_catalogue().finding("GATEWAY-KIND-001", "file", None,
                                              expected=kind, found=result.kind)
        if finding is not None:
            findings.insert(0, finding)
    accepted, rejected = verdict_counts(result, spans)
    transactions = sum(len(g.transactions) for i in result.interchanges for g in i.groups)
    stats = {"transactions": transactions, "segments": result.segments}
    if result.kind in ("837p", "837i"):
        stats.update(claims=len(spans), lines=result.lines, accepted_claims=accepted,
                     rejected_claims=rejected)
    return FileReport(path=str(path), kind=result.kind, findings=findings, stats=stats)
