"""The processing steps, one per kind of submission, each run from the raw payload the store
kept (so a run can be replayed, or re-run after a crash, at any time):

* ``process_x12`` — an X12 837P. It is validated with the ECM rules against the server's
  registries (:mod:`gateway.pipeline.registries`; only when some registry is loaded, and then
  only the rules whose registry is there, as the command line does). TA1/999/277CA go back to
  the sender (route ``ack``). A provider's accepted claims go to the member's plan — the plan
  whose MIF assigns the member, else the one the payer id names, else the only plan — one
  routed 837P per plan when the members belong to different plans. A plan's accepted
  encounters go to the state and into the encounter history (source ``submission:<first
  submission of the replay chain>``: a re-run or replay replaces its lines). A provider may
  submit only as itself (``GATEWAY-AUTH-001``).
* ``process_file`` — an upload: the state's response XML
  (:mod:`gateway.pipeline.state_responses`); a plan's MIF (loaded as that plan's, replacing its MIF of the same reporting period, and each
  assigned provider partner gets the rows of its own members in the layout received) or roster
  (the plan's provider directory); a provider's RTF/OTF (rows routed to the member's plan); an
  invoice (an 837P per member's plan, and a row report back to the sender); other tables are
  validated only.
* ``process_history_extract`` — a provider's encounter-history extract
  (:mod:`gateway.pipeline.extract`).

Registry writes replace by source and routing records are rewritten per submission, so
running a step twice leaves the registries as one run does.

:data:`STEPS` maps a submission kind to its step; :mod:`gateway.pipeline.process` runs it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.conversion import canonical_to_837p
from gateway.findings import Finding, Severity
from gateway.pipeline.extract import process_history_extract
from gateway.pipeline.forward import table_subset
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import (
    clear_history,
    forget_routed,
    history_source,
    load_plan_members,
    load_plan_providers,
    plans_of_members,
    record_routed,
    replace_history,
    route_to_members_plan,
    server_registry,
    server_rules,
)
from gateway.pipeline.store import Store
from gateway.registry.history import encounter_history_rows
from gateway.rules import default_catalogue
from gateway.x12.acks import AckControls, acknowledge, judge
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


def envelope_numbers(store: Store, profile: str) -> ControlNumbers:
    """The next ISA13 and GS06 of envelope profile ``profile`` from the store's counters
    (shared by every process on the store), in one transaction."""
    names = (f"isa13:{profile}", f"gs06:{profile}")
    taken = store.take_numbers({name: 1 for name in names})
    return ControlNumbers(*(taken[name][0] for name in names))


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


def _ack_recipient(partners: Partners, partner: Partner) -> str:
    found = partners.route("ack", partner)
    return found.id if found is not None else partner.id


def _claim_targets(partners: Partners, registry, partner: Partner, encounters: list,
                   kind: str = "837p") -> tuple[dict[str, list], list]:
    """Accepted encounters grouped by receiving partner (in file order), and those no route
    leads anywhere. A provider's claim goes to the member's plan: the plan whose MIF assigns
    the member (when several do, the one the claim's payer id names), else the plan the payer
    id names, else the only plan; claims for members of different plans are split per plan.
    A plan's encounters go to the state."""
    member_plans = plans_of_members(registry, {e.member.cin for e in encounters}) \
        if partner.role == "provider" else {}
    groups: dict[str, list] = {}
    nowhere = []
    for encounter in encounters:
        target = route_to_members_plan(partners, partner, kind, encounter.member.cin,
                                       encounter.payer.id, member_plans)
        if target is None:
            nowhere.append(encounter)
        else:
            groups.setdefault(target.id, []).append(encounter)
    return groups, nowhere


class _PlanWriters:
    """837P writers per receiving partner, opened as the first encounter for each arrives, so
    a streamed file (an invoice) is split per member's plan without holding its claims."""

    def __init__(self, store: Store, partners: Partners, registry, partner: Partner, kind: str,
                 now: datetime) -> None:
        from gateway.x12.write837 import Encounter837Writer

        self._writer_class = Encounter837Writer
        self.store = store
        self.partners, self.registry, self.partner = partners, registry, partner
        self.kind, self.now = kind, now.replace(tzinfo=None)
        self.writers: dict[str, tuple] = {}
        self.unrouted: list[str] = []
        self._plans: dict[tuple[str, str], Partner | None] = {}

    def target(self, encounter) -> Partner | None:
        key = (encounter.member.cin, encounter.payer.id)
        if key not in self._plans:
            groups, _ = _claim_targets(self.partners, self.registry, self.partner, [encounter],
                                       kind=self.kind)
            self._plans[key] = self.partners.partners[next(iter(groups))] if groups else None
        return self._plans[key]

    def write(self, encounter) -> None:
        target = self.target(encounter)
        if target is None:
            self.unrouted.append(encounter.claim.id)
            return
        if target.id not in self.writers:
            settings = envelope_settings(target.envelope)
            out = io.StringIO()
            self.writers[target.id] = (out, self._writer_class(
                out, settings, envelope_numbers(self.store, settings.name), self.now))
        self.writers[target.id][1].write(encounter)

    def unrouted_findings(self) -> list[Finding]:
        catalogue = default_catalogue()
        found = [catalogue.finding("GATEWAY-ROUTE-001", "file", None, claim=claim)
                 for claim in self.unrouted]
        return [f for f in found if f]

    def close(self, submission_id: str) -> list[tuple[str, str, bytes]]:
        """``(recipient, document name, 837P)`` per receiving partner."""
        out = []
        for recipient, (text, writer) in self.writers.items():
            writer.close()
            name = f"{submission_id}.837p.x12" if len(self.writers) == 1 \
                else f"{submission_id}.{recipient}.837p.x12"
            out.append((recipient, name, text.getvalue().encode()))
        return out


def process_x12(store: Store, partners: Partners, partner: Partner, submission_id: str,
                now: datetime | None = None) -> Outcome:
    """Validate (with the ECM rules when the server's registries hold anything), acknowledge
    and route one stored X12 submission. A plan's encounters routed to the state also become
    encounter history (replacing what an earlier run of the same submission put there)."""
    now = now or datetime.now(UTC)
    payload = store.raw_payload(submission_id)
    if _is_274(payload):  # a plan's provider directory (gateway/pipeline/directory.py)
        return _directory_upload(store, partners, partner, submission_id, payload, "274")
    store.attempt(submission_id)
    registry = server_registry(store)
    forget_routed(registry, submission_id)
    source = history_source(store, submission_id) if partner.role == "plan" else None
    if source is not None:
        # an earlier run's lines must not make this run's claims duplicates of themselves
        clear_history(registry, source)
    try:
        result = validate_x12(payload, keep_encounters=True, rules=server_rules(registry))
    except NotX12Error as exc:
        finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None, problem=str(exc))
        store.add_findings(submission_id, [finding])
        store.set_status(submission_id, "rejected", error=str(exc))
        return Outcome(submission_id, "rejected", False, None, 1)
    auth_findings = _sender_check(result.claims, partner)
    result.findings.extend(auth_findings)
    result.findings.sort(key=lambda f: f.segment or 0)
    # where the accepted claims go, first, so the control numbers of the acknowledgments and
    # of the routed 837Ps are drawn together (one transaction)
    accepted = [c.encounter for c in judge(result).accepted_claims if c.encounter is not None]
    groups, nowhere = _claim_targets(partners, registry, partner, accepted) \
        if result.kind == "837p" and accepted else ({}, [])
    wanted = {"isa13:acks": 3, "gs06:acks": 8}
    profiles = {t: envelope_settings(partners.partners[t].envelope) for t in groups}
    for settings in profiles.values():
        for counter in (f"isa13:{settings.name}", f"gs06:{settings.name}"):
            wanted[counter] = wanted.get(counter, 0) + 1
    numbers = {name: iter(taken) for name, taken in store.take_numbers(wanted).items()}
    acks = acknowledge(result, controls=AckControls(next(numbers["isa13:acks"]),
                                                    next(numbers["gs06:acks"])),
                       when=now.replace(tzinfo=None))
    ack_to = _ack_recipient(partners, partner)
    for role, name, text in (("ta1", "ta1", acks.ta1), ("999", "999", acks.ack999),
                             ("277ca", "277ca", acks.ack277ca)):
        if text:
            store.add_document(submission_id, role=f"ack-{role}",
                               name=f"{submission_id}.{name}.x12", content=text.encode(),
                               media_type=X12_MEDIA, recipient=ack_to)
    errors = any(f.severity is Severity.ERROR for f in result.findings)
    routed: dict[str, int] = {}
    status = "validated"
    store.set_status(submission_id, "validated")
    if result.kind == "837p" and accepted:
        catalogue = default_catalogue()
        for encounter in nowhere:
            finding = catalogue.finding("GATEWAY-ROUTE-001", "file", None,
                                        claim=encounter.claim.id)
            if finding:
                result.findings.append(finding)
        for target_id, encounters in groups.items():
            target = partners.partners[target_id]
            settings = profiles[target_id]
            out = io.StringIO()
            controls = ControlNumbers(next(numbers[f"isa13:{settings.name}"]),
                                      next(numbers[f"gs06:{settings.name}"]))
            canonical_to_837p(encounters, out, settings, controls, now.replace(tzinfo=None))
            if status == "validated":
                store.set_status(submission_id, "converted")
            name = f"{submission_id}.837p.x12" if len(groups) == 1 \
                else f"{submission_id}.{target.id}.837p.x12"
            content = out.getvalue().encode()
            document = store.add_document(submission_id, role="routed-837p", name=name,
                                          content=content, media_type=X12_MEDIA,
                                          recipient=target.id)
            to_state = target.role == "state"
            record_routed(registry, submission_id=submission_id, sender=partner.id,
                          recipient=target.id, document_id=document, x12=content,
                          history_source=source if to_state else None)
            if to_state and source is not None:
                replace_history(registry, source, (row for e in encounters
                                                   for row in encounter_history_rows(e)))
            routed[target.id] = len(encounters)
            status = "routed"
        if status == "routed":
            store.set_status(submission_id, status)
    store.add_findings(submission_id, result.findings)
    store.set_summary(submission_id, {
        "kind": result.kind, "claims": len(result.claims),
        "accepted_claims": len(acks.accepted_claims),
        "rejected_claims": len(result.claims) - len(acks.accepted_claims),
        "valid": not errors, **({"routed": routed} if routed else {})})
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

    now = now or datetime.now(UTC)
    found = store.submission(submission_id)
    store.attempt(submission_id)
    suffix = Path(found.get("filename") or "upload").suffix.lower()
    with tempfile.TemporaryDirectory(prefix="ecm-upload-") as folder:
        path = Path(folder) / f"upload{suffix if suffix in ('.csv', '.xlsx', '.txt') else ''}"
        path.write_bytes(store.raw_payload(submission_id))
        member_file = _member_file(store, partners, partner, submission_id, path, now)
        if member_file is not None:
            return member_file
        registry = server_registry(store)
        target = partners.route("invoice", partner)
        settings = envelope_settings(target.envelope if target else "plan-default")
        writers = _PlanWriters(store, partners, registry, partner, "invoice", now)
        try:
            from gateway.reports import validate_invoice, validate_table
            from gateway.sniff import sniff
            from gateway.tabular import sniff_table

            kind = sniff(path)
            if kind not in ("csv", "xlsx"):
                raise UnknownKind(f"a {kind} file is not an uploadable table; send X12 to /x12")
            if sniff_table(path) == "invoice":
                report = validate_invoice(path, rules=server_rules(registry),
                                          settings_name=settings.name, received=now.date(),
                                          on_encounter=writers.write)
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
        if invoice.claims and partner.role == "provider":
            store.add_findings(submission_id, writers.unrouted_findings())
            for recipient, name, content in writers.close(submission_id):
                if status == "validated":
                    store.set_status(submission_id, "converted")
                store.add_document(submission_id, role="routed-837p", name=name,
                                   content=content, media_type=X12_MEDIA, recipient=recipient)
                status = "routed"
            if status == "routed":
                store.set_status(submission_id, status)
    if not report.valid and status == "validated":
        status = "rejected" if invoice is None or not invoice.claims else status
        if status == "rejected":
            store.set_status(submission_id, status)
    return Outcome(submission_id, status, report.valid, None, len(report.findings))


def _is_274(payload: bytes) -> bool:
    head = payload[:4096]
    return b"004050X109" in head and b"GS" in head


def _directory_upload(store: Store, partners: Partners, partner: Partner, submission_id: str,
                      payload: bytes, kind: str) -> Outcome:
    import tempfile
    from pathlib import Path

    from gateway.pipeline.directory import SUFFIX, process_directory_upload

    store.attempt(submission_id)
    with tempfile.TemporaryDirectory(prefix="ecm-directory-") as folder:
        path = Path(folder) / f"directory{SUFFIX[kind]}"
        path.write_bytes(payload)
        return process_directory_upload(store, partners, partner, submission_id, path, kind)


def _process_monthly_274(store, partners: Partners, partner: Partner, submission_id: str,
                         now: datetime | None = None) -> Outcome:
    from gateway.pipeline.directory import process_monthly_274

    return process_monthly_274(store, partners, partner, submission_id, now)


def _reject_file(store: Store, submission_id: str, problem: str) -> Outcome:
    finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None, problem=problem)
    store.add_findings(submission_id, [finding])
    store.set_status(submission_id, "rejected", error="not a known table")
    return Outcome(submission_id, "rejected", False, None, 1)


def _member_file(store: Store, partners: Partners, partner: Partner, submission_id: str,
                 path, now: datetime) -> Outcome | None:
    """The uploads that feed the registries or go on to another partner: the state's response
    XML, a plan's MIF or roster, a provider's RTF or OTF. None: not one of these (the caller
    handles invoices and plain validation)."""
    from gateway.sniff import UnknownKind, sniff
    from gateway.tabular import LayoutError, read_table, sniff_table

    try:
        kind = sniff(path)
    except UnknownKind:
        return None
    if kind == "state-response":
        from gateway.pipeline.state_responses import process_state_response

        return process_state_response(store, partners, partner, submission_id,
                                      path.read_bytes(), now)
    from gateway.pipeline.directory import directory_kind, process_directory_upload

    directory = directory_kind(path)
    if directory is not None:  # a plan's provider directory (refused from anyone else)
        return process_directory_upload(store, partners, partner, submission_id, path,
                                        directory)
    if kind not in ("csv", "xlsx"):
        return None
    table_kind = sniff_table(path)
    wanted = {"plan": ("mif", "roster"), "provider": ("rtf", "otf")}.get(partner.role, ())
    if table_kind not in wanted:
        return None
    try:
        table = read_table(path, table_kind)
    except LayoutError as exc:
        return _reject_file(store, submission_id, str(exc))
    registry = server_registry(store)
    rows = [row for _, row in table.rows]
    summary = {"kind": table_kind, "rows": table.rows_total,
               "accepted_rows": table.rows_accepted, "rejected_rows": table.rows_rejected,
               "layout": table.layout, "valid": table.valid}
    findings = list(table.findings)
    store.set_status(submission_id, "validated")
    if table_kind == "roster":
        summary["providers_loaded"] = load_plan_providers(registry, partner.id, rows)
        forwarded: dict[str, list[int]] = {}
    elif table_kind == "mif":
        loaded = load_plan_members(registry, partner.id, rows)
        summary["members_loaded"] = sum(loaded.values())
        forwarded = _mif_recipients(partners, partner, table, findings)
    else:
        forwarded = _plan_recipients(partners, registry, partner, table, findings)
    status = "validated"
    for recipient, numbers in forwarded.items():
        content, media, suffix = table_subset(path, table, numbers)
        store.add_document(submission_id, role=f"routed-{table_kind}",
                           name=f"{submission_id}.{recipient}.{table_kind}{suffix}",
                           content=content, media_type=media, recipient=recipient)
        status = "routed"
    if forwarded:
        summary["forwarded_rows"] = {r: len(n) for r, n in forwarded.items()}
        store.set_status(submission_id, "routed")
    store.add_findings(submission_id, findings)
    valid = not any(f.is_error for f in findings)
    summary["valid"] = valid
    store.set_summary(submission_id, summary)
    used = rows if table_kind in ("mif", "roster") else forwarded
    if not used and not valid:  # nothing loaded or forwarded, and errors say why
        status = "rejected"
        store.set_status(submission_id, status)
    return Outcome(submission_id, status, valid, None, len(findings))


def _mif_recipients(partners: Partners, plan: Partner, table, findings: list) -> dict:
    """Row numbers of the MIF per assigned provider partner (by NPI, then TIN); rows whose
    provider is not a partner become a warning naming only the row."""
    catalogue = default_catalogue()
    out: dict[str, list[int]] = {}
    for number, row in table.rows:
        npi, tin = row.get("ecm_provider_npi") or "", row.get("ecm_provider_tin") or ""
        target = partners.route("mif", plan, npi=npi, tin=tin)
        if target is None or target.role != "provider":
            finding = catalogue.finding("GATEWAY-MIF-001", f"row {number}", None, npi=npi)
            if finding:
                findings.append(finding)
            continue
        out.setdefault(target.id, []).append(number)
    return out


def _plan_recipients(partners: Partners, registry, provider: Partner, table,
                     findings: list) -> dict:
    """Row numbers of an RTF/OTF per plan: the plan its MCP identifier names (payer id or plan
    code), else the plan whose MIF assigns the member, else the only plan. Rows naming another
    ECM provider than the submitting partner are refused."""
    catalogue = default_catalogue()
    plans = {p.id: p for p in partners.partners.values() if p.role == "plan"}
    by_code = {code: p.id for p in plans.values()
               for code in (*p.payer_ids, p.plan_code) if code}
    member_plans = plans_of_members(registry, {row["member_cin"] for _, row in table.rows})
    kind = table.kind
    out: dict[str, list[int]] = {}
    for number, row in table.rows:
        npi, tin = row.get("ecm_provider_npi") or "", row.get("ecm_provider_tin") or ""
        if (npi or tin) and npi not in provider.npis and tin not in provider.tins:
            finding = catalogue.finding("GATEWAY-AUTH-002", f"row {number}", None, npi=npi,
                                        partner=provider.id)
            if finding:
                findings.append(finding)
            continue
        named = by_code.get(str(row.get("mcp_identifier") or ""), "")
        assigned = member_plans.get(row["member_cin"], [])
        plan_id = named or (assigned[0] if assigned else "")
        target = partners.route(kind, provider, plan_id=plan_id)
        if target is None or target.id == provider.id:
            finding = catalogue.finding("GATEWAY-ROUTE-002", f"row {number}", None)
            if finding:
                findings.append(finding)
            continue
        out.setdefault(target.id, []).append(number)
    return out


def process_fhir(store, partners: Partners, partner: Partner, submission_id: str) -> Outcome:
    """A provider's FHIR resources: stored, and routed to the member's plan as a referral
    record, RTF rows and an 837P (:mod:`gateway.fhir.intake`; imported here on first use,
    because it builds on this module)."""
    from gateway.fhir.intake import process_fhir as run

    return run(store, partners, partner, submission_id)


STEPS = {"x12": process_x12, "file": process_file, "history-extract": process_history_extract,
         "fhir": process_fhir, "directory-274": _process_monthly_274}
