"""Step ``tabular``: the member-level tables that feed the registries or go on to another
partner — a plan's MIF (loaded as that plan's, replacing its MIF of the same reporting period,
and each assigned provider partner gets the rows of its own members in the layout received) or
roster (the plan's provider directory); a plan's MIF that is not applied (an error
finding: ``ECM-REG-002``) is forwarded to no one; a provider's RTF/OTF (rows routed to the
member's plan by the MIFs, row by row: the rows without an error go on,
:func:`gateway.pipeline.delivery.resolve_plan`, not by the row's MCP column; a row naming
another provider is refused, :func:`gateway.pipeline.delivery.authorise_sender`,
``GATEWAY-AUTH-002``, and so is a row about a member not assigned to the sender,
``GATEWAY-AUTH-003``: :func:`_plan_recipients`)."""

from __future__ import annotations

from datetime import datetime

from gateway.pipeline.delivery import plan_named, resolve_plan, sender_finding
from gateway.pipeline.forward import table_subset
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import (
    load_plan_members,
    load_plan_providers,
    plans_of_members,
    server_registry,
)
from gateway.pipeline.status import Status
from gateway.pipeline.steps.result import StepResult
from gateway.rules import default_catalogue

TABLES = {"plan": ("mif", "roster", "cs-auth", "claims"), "provider": ("rtf", "otf")}
REGISTRY_TABLES = ("mif", "roster", "cs-auth")  # applied whole or not at all


def is_member_table(partner: Partner, table_kind: str) -> bool:
    """A table this step handles for this sender (others are invoices or validated only)."""
    return table_kind in TABLES.get(partner.role, ())


def process_table(store, partners: Partners, partner: Partner, submission_id: str, path,
                  table_kind: str, now: datetime) -> StepResult:
    from gateway.ecm.tables import read_checked_table
    from gateway.tabular import LayoutError

    result = StepResult(submission_id)
    if table_kind == "claims":
        return _claims(store, partner, submission_id, path, result)
    try:
        table = read_checked_table(path, table_kind, today=now.date())
    except LayoutError as exc:
        finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None,
                                              problem=str(exc))
        return result.reject("not a known table", [finding])
    registry = server_registry(store)
    rows = [row for _, row in table.rows]
    summary = {"kind": table_kind, "rows": table.rows_total,
               "accepted_rows": table.rows_accepted, "rejected_rows": table.rows_rejected,
               "layout": table.layout, "valid": table.valid}
    findings = list(table.findings)
    if table_kind == "mif":
        from gateway.ecm.plans import presumptive_of
        from gateway.ecm.presumptive import recheck

        findings += recheck(registry, table.rows, presumptive_of(partner.id))
    # a registry file is applied whole or not at all: not with any error finding (its rows',
    # or the MIF re-check's should a partner's overrides make one an error)
    applied = table_kind not in REGISTRY_TABLES or not any(f.is_error for f in findings)
    if not applied:
        from gateway.registry.load import not_applied

        findings += not_applied(table)
    forwarded: dict[str, list[int]] = {}
    if table_kind == "roster":
        summary["providers_loaded"] = load_plan_providers(registry, partner.id, rows) \
            if applied else 0
    elif table_kind == "cs-auth":
        summary["cs_authorizations_loaded"] = registry.load_cs_authorizations(
            rows, source=f"plan:{partner.id}:cs-auth") if applied else 0
    elif table_kind == "mif":
        loaded = load_plan_members(registry, partner.id, rows) if applied else {}
        summary["members_loaded"] = sum(loaded.values())
        # a MIF not applied goes to no provider either (the plan's assignments are unchanged:
        # its rows would tell providers of assignments the gateway does not hold)
        forwarded = _mif_recipients(partners, partner, table, findings) if applied else {}
        if not applied:
            summary["forwarded_rows"] = {}
    else:
        forwarded = _plan_recipients(partners, registry, partner, table, findings)
        if table_kind == "rtf":  # data-sharing authorizations: a registry per plan
            summary["data_sharing_recorded"] = _data_sharing(store, registry, partner,
                                                             submission_id, table, forwarded)
    for recipient, numbers in forwarded.items():
        content, media, suffix = table_subset(path, table, numbers)
        result.route(role=f"routed-{table_kind}",
                     name=f"{submission_id}.{recipient}.{table_kind}{suffix}",
                     content=content, media_type=media, recipient=recipient)
    if forwarded:
        summary["forwarded_rows"] = {r: len(n) for r, n in forwarded.items()}
    result.add_findings(findings)
    valid = not any(f.is_error for f in findings)
    summary["valid"] = result.valid = valid
    result.summary = summary
    used = (rows if applied else []) if table_kind in REGISTRY_TABLES else forwarded
    if not used and not valid:  # nothing loaded or forwarded, and errors say why
        result.status, result.read = Status.REJECTED, True
    return result


def _claims(store, partner: Partner, submission_id: str, path, result: StepResult
            ) -> StepResult:
    """A plan's claims extract: its lines become the plan's history (source
    ``plan:<plan>:claims:<file name>``: the same file sent again replaces its lines), streamed,
    applied whole or not at all."""
    from pathlib import Path

    from gateway.registry.claims import load_claims_extract
    from gateway.tabular import LayoutError

    name = (store.submission(submission_id) or {}).get("filename") or Path(path).name
    try:
        outcome = load_claims_extract(server_registry(store), Path(path),
                                      f"plan:{partner.id}:claims:{Path(name).name}")
    except LayoutError as exc:
        finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None,
                                              problem=str(exc))
        return result.reject("not a known table", [finding])
    result.add_findings(outcome.findings)
    result.valid = outcome.applied
    result.summary = {"kind": "claims", "rows": outcome.rows, "history_lines_loaded":
                      outcome.loaded, "valid": outcome.applied}
    if not outcome.applied:
        result.status, result.read = Status.REJECTED, True
    return result


def _data_sharing(store, registry, provider: Partner, submission_id: str, table,
                  forwarded: dict[str, list[int]]) -> int:
    """The RTF rows' data-sharing authorizations (ECM Policy Guide 002:1598-1599), recorded as
    the plan's each row goes to (:func:`gateway.pipeline.registries.record_data_sharing`)."""
    from gateway.pipeline.registries import record_data_sharing

    by_number = dict(table.rows)
    return sum(record_data_sharing(store, registry, plan_id, provider.id, submission_id,
                                   (by_number[n] for n in numbers))
               for plan_id, numbers in forwarded.items())


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
    """Row numbers of an RTF/OTF per plan. A row goes to the MEMBER's plan
    (:func:`resolve_plan` over the plans whose MIF assigns the member to the submitting
    provider; the row's MCP identifier -- payer id or plan code -- only chooses among several),
    never to a plan just because the row names it:

    * a row naming another ECM provider than the submitting partner is refused
      (``GATEWAY-AUTH-002``);
    * a row about a member some plan's MIF knows but none assigns to the submitting provider
      is refused (``GATEWAY-AUTH-003``): nothing of it is routed or recorded;
    * a row whose MCP identifier names another plan than the member's gets a warning
      (``GATEWAY-ROUTE-003``) and goes to the member's plan;
    * a row about a member no plan's MIF knows goes to the plan its MCP identifier names,
      else the only plan (``GATEWAY-ROUTE-002`` when none)."""
    catalogue = default_catalogue()
    cins = {row["member_cin"] for _, row in table.rows}
    known = plans_of_members(registry, cins)
    theirs = plans_of_members(registry, cins, provider=provider) \
        if provider.role == "provider" else known
    kind = table.kind
    out: dict[str, list[int]] = {}
    for number, row in table.rows:
        where = f"row {number}"
        npi, tin = row.get("ecm_provider_npi") or "", row.get("ecm_provider_tin") or ""
        if npi or tin:  # a row naming no provider is the sender's own
            refused = sender_finding(provider, npi, tin, where,
                                     rule="GATEWAY-AUTH-002", npi_required=False)
            if refused is not None:
                findings.append(refused)
                continue
        cin = row["member_cin"]
        if cin in known and not theirs.get(cin):
            finding = catalogue.finding("GATEWAY-AUTH-003", where, None, partner=provider.id)
            if finding:
                findings.append(finding)
            continue
        code = str(row.get("mcp_identifier") or "")
        target = resolve_plan(partners, provider, kind, cin, code, theirs)
        if target is None:
            finding = catalogue.finding("GATEWAY-ROUTE-002", where, None)
            if finding:
                findings.append(finding)
            continue
        if cin in known and code and plan_named(partners, code) != target.id:
            finding = catalogue.finding("GATEWAY-ROUTE-003", where, None, code=code)
            if finding:
                findings.append(finding)
        out.setdefault(target.id, []).append(number)
    return out
