"""The processing steps, one per kind of submission, each run from the raw payload the store
kept (so a run can be replayed at any time):

* ``process_x12`` — an X12 837P from a provider: TA1/999/277CA back to the sender's mailbox; the
  accepted claims, re-enveloped for the receiving partner (the member's plan; the state for a
  plan's encounters), into that partner's mailbox. A provider may submit only as itself: a claim
  whose billing NPI/TIN is not the authenticated partner's is rejected (``GATEWAY-AUTH-001``).
* ``process_file`` — an uploaded invoice, MIF, RTF, OTF or roster (CSV or XLSX).

:data:`STEPS` maps a submission kind to its step; :func:`gateway.pipeline.process.process`
runs it with retries.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone

from gateway.conversion import canonical_to_837p
from gateway.findings import Finding, Severity
from gateway.pipeline.counters import next_numbers
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.store import Store
from gateway.rules import default_catalogue
from gateway.x12.acks import AckControls, acknowledge
from gateway.x12.claims837 import ClaimRecord
from gateway.x12.reader import NotX12Error
from gateway.x12.validate import validate_x12
from gateway.x12.writer import ControlNumbers, envelope_settings

X12_MEDIA = "application/edi-x12"


@dataclass
class Outcome:
    submission_id: str
    status: str
    valid: bool
    ack999: str | None
    findings: int


def _sender_check(claims: list[ClaimRecord], partner: Partner) -> list[Finding]:
    if partner.role != "provider":
        return []
    catalogue = default_catalogue()
    found = []
    for claim in claims:
        encounter = claim.encounter
        if encounter is None:
            continue
        billing = encounter.billing_provider
        if billing.npi in partner.npis or billing.tin in partner.tins:
            continue
        i, g, t = claim.transaction
        finding = catalogue.finding("GATEWAY-AUTH-001", f"ISA#{i}/GS#{g}/ST#{t}/2010AA/NM109",
                                    claim.start, npi=billing.npi, partner=partner.id)
        if finding:
            found.append(finding)
    return found


def process_x12(store: Store, partners: Partners, partner: Partner, submission_id: str,
                now: datetime | None = None) -> Outcome:
    """Validate, acknowledge and route one stored X12 submission."""
    now = now or datetime.now(timezone.utc)
    payload = store.raw_payload(submission_id)
    store.attempt(submission_id)
    try:
        result = validate_x12(payload, keep_encounters=True)
    except NotX12Error as exc:
        finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None, problem=str(exc))
        store.add_findings(submission_id, [finding])
        store.set_status(submission_id, "rejected", error=str(exc))
        return Outcome(submission_id, "rejected", False, None, 1)
    auth_findings = _sender_check(result.claims, partner)
    result.findings.extend(auth_findings)
    result.findings.sort(key=lambda f: f.segment or 0)
    store.add_findings(submission_id, result.findings)
    isa, gs = next_numbers("isa13:acks", 3), next_numbers("gs06:acks", 8)
    acks = acknowledge(result, controls=AckControls(isa[0], gs[0]), when=now.replace(tzinfo=None))
    for role, name, text in (("ta1", "ta1", acks.ta1), ("999", "999", acks.ack999),
                             ("277ca", "277ca", acks.ack277ca)):
        if text:
            store.add_document(submission_id, role=f"ack-{role}",
                               name=f"{submission_id}.{name}.x12", content=text.encode(),
                               media_type=X12_MEDIA, recipient=partner.id)
    errors = any(f.severity is Severity.ERROR for f in result.findings)
    store.set_summary(submission_id, {
        "kind": result.kind, "claims": len(result.claims),
        "accepted_claims": len(acks.accepted_claims),
        "rejected_claims": len(result.claims) - len(acks.accepted_claims),
        "valid": not errors})
    store.set_status(submission_id, "validated")
    accepted = [c.encounter for c in acks.accepted_claims if c.encounter is not None]
    status = "validated"
    if result.kind == "837p" and accepted:
        payer = accepted[0].payer.id
        target = partners.route("837p", partner, payer)
        if target is not None:
            settings = envelope_settings(target.envelope)
            out = io.StringIO()
            numbers = [next_numbers(f"{n}:{settings.name}")[0] for n in ("isa13", "gs06")]
            canonical_to_837p(accepted, out, settings, ControlNumbers(*numbers),
                              now.replace(tzinfo=None))
            store.set_status(submission_id, "converted")
            store.add_document(submission_id, role="routed-837p",
                               name=f"{submission_id}.837p.x12", content=out.getvalue().encode(),
                               media_type=X12_MEDIA, recipient=target.id)
            status = "routed"
            store.set_status(submission_id, status)
    if not accepted and errors:
        status = "rejected"
        store.set_status(submission_id, status)
    return Outcome(submission_id, status, not errors, acks.ack999, len(result.findings))


REPORT_MEDIA = "text/csv"


def process_file(store: Store, partners: Partners, partner: Partner, submission_id: str,
                 now: datetime | None = None) -> Outcome:
    """An uploaded invoice, MIF, RTF, OTF or roster (CSV or XLSX). Invoices from a provider
    become an 837P routed to the member's plan, and a row report back to the sender."""
    import tempfile
    from pathlib import Path

    from gateway.invoice.report import write_csv
    from gateway.reports import UnsupportedKind
    from gateway.sniff import UnknownKind
    from gateway.x12.write837 import Encounter837Writer

    now = now or datetime.now(timezone.utc)
    found = store.submission(submission_id)
    store.attempt(submission_id)
    suffix = Path(found.get("filename") or "upload").suffix.lower()
    with tempfile.TemporaryDirectory(prefix="ecm-upload-") as folder:
        path = Path(folder) / f"upload{suffix if suffix in ('.csv', '.xlsx', '.txt') else ''}"
        path.write_bytes(store.raw_payload(submission_id))
        target = partners.route("invoice", partner)
        settings = envelope_settings(target.envelope if target else "plan-default")
        out = io.StringIO()
        numbers = [next_numbers(f"{n}:{settings.name}")[0] for n in ("isa13", "gs06")]
        writer = Encounter837Writer(out, settings, ControlNumbers(*numbers),
                                    now.replace(tzinfo=None))
        try:
            from gateway.reports import validate_invoice, validate_table
            from gateway.sniff import sniff
            from gateway.tabular import sniff_table

            kind = sniff(path)
            if kind not in ("csv", "xlsx"):
                raise UnknownKind(f"a {kind} file is not an uploadable table; send X12 to /x12")
            if sniff_table(path) == "invoice":
                report = validate_invoice(path, settings_name=settings.name,
                                          received=now.date(), on_encounter=writer.write)
            else:
                report = validate_table(path, kind, "auto")
        except (UnknownKind, UnsupportedKind) as exc:
            finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None,
                                                  problem=str(exc))
            store.add_findings(submission_id, [finding])
            store.set_status(submission_id, "rejected", error="not a known table")
            return Outcome(submission_id, "rejected", False, None, 1)
    store.add_findings(submission_id, report.findings)
    store.set_summary(submission_id, {"kind": report.kind, **report.stats,
                                      "valid": report.valid})
    store.set_status(submission_id, "validated")
    status = "validated"
    invoice = getattr(report, "invoice", None)
    if invoice is not None:
        rows = io.StringIO()
        write_csv(invoice, rows)
        store.add_document(submission_id, role="report", name=f"{submission_id}.report.csv",
                           content=rows.getvalue().encode(), media_type=REPORT_MEDIA,
                           recipient=partner.id)
        if invoice.claims and target is not None and partner.role == "provider":
            writer.close()
            store.set_status(submission_id, "converted")
            store.add_document(submission_id, role="routed-837p",
                               name=f"{submission_id}.837p.x12",
                               content=out.getvalue().encode(), media_type=X12_MEDIA,
                               recipient=target.id)
            status = "routed"
            store.set_status(submission_id, status)
    if not report.valid and status == "validated":
        status = "rejected" if invoice is None or not invoice.claims else status
        if status == "rejected":
            store.set_status(submission_id, status)
    return Outcome(submission_id, status, report.valid, None, len(report.findings))


STEPS = {"x12": process_x12, "file": process_file}
