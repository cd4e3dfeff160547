"""Step ``invoice`` (an uploaded CSV/XLSX invoice; other tables nobody routes are validated
only): a provider's invoice claims become 837Ps routed to each member's plan
(:class:`gateway.pipeline.delivery.PlanDocuments`, the sender checked per claim by
:func:`gateway.pipeline.delivery.authorise_sender`), and a row report goes back to the
sender."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

from gateway.pipeline.delivery import X12_MEDIA, PlanDocuments, sender_finding
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import (
    presumptive_source,
    record_presumptive,
    server_registry,
    server_rules,
)
from gateway.pipeline.status import Status
from gateway.pipeline.steps.result import StepResult
from gateway.rules import default_catalogue
from gateway.x12.writer import envelope_settings

REPORT_MEDIA = "text/csv"


def process_invoice(store, partners: Partners, partner: Partner, submission_id: str,
                    path: Path, now: datetime) -> StepResult:
    """An invoice (or another table, validated only) kept at ``path``."""
    from gateway.invoice.report import write_csv
    from gateway.reports import UnsupportedKind, validate_invoice, validate_table
    from gateway.sniff import UnknownKind, sniff
    from gateway.tabular import sniff_table

    result = StepResult(submission_id)
    registry = server_registry(store)
    target = partners.route("invoice", partner)
    settings = envelope_settings(target.envelope if target else "plan-default")
    writers = PlanDocuments(store, partners, registry, partner, "invoice", now)
    try:
        kind = sniff(path)
        if kind not in ("csv", "xlsx"):
            raise UnknownKind(f"a {kind} file is not an uploadable table; send X12 to /x12")
        if sniff_table(path) == "invoice":
            presumptive = presumptive_source(store, partner.id, submission_id) \
                if partner.role == "provider" else None
            if presumptive is not None:  # (an earlier run's: see steps/x12.py)
                record_presumptive(registry, presumptive, None)
            rules = server_rules(registry, submitter=partner, partners=partners)
            report = validate_invoice(
                path, rules=rules,
                settings_name=settings.name, received=now.date(), on_encounter=writers.write,
                authorise=lambda encounter, where: sender_finding(
                    partner, encounter.billing_provider.npi, encounter.billing_provider.tin,
                    where))
            if presumptive is not None and rules is not None and rules.presumptive:
                record_presumptive(registry, presumptive, rules)
        else:
            report = validate_table(path, kind, "auto")
    except (UnknownKind, UnsupportedKind) as exc:
        finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None,
                                              problem=str(exc))
        return result.reject("not a known table", [finding])
    result.add_findings(report.findings)
    result.summary = {"kind": report.kind, **report.stats, "valid": report.valid}
    result.valid = report.valid
    invoice = getattr(report, "invoice", None)
    if invoice is not None:
        rows = io.StringIO()
        write_csv(invoice, rows)
        result.add_document(role="report", name=f"{submission_id}.report.csv",
                            content=rows.getvalue().encode(), media_type=REPORT_MEDIA,
                            recipient=partner.id)
        if invoice.claims and partner.role == "provider":
            result.add_findings(writers.unrouted_findings())
            for recipient, name, content in writers.close(submission_id):
                result.route(role="routed-837p", name=name, content=content,
                             media_type=X12_MEDIA, recipient=recipient, converted=True)
    if not report.valid and not result.routed and (invoice is None or not invoice.claims):
        result.status, result.read = Status.REJECTED, True
    return result
