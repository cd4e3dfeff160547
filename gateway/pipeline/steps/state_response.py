"""Step ``state response`` (an upload of the state's response XML): each Encounter is linked back to the 837P the gateway
routed to the state.

Processing a state encounter response: each Encounter is linked back to the 837P the gateway
routed to the state (ISA13 + GS06/ST02 + claim id), its status and the state's reasons are kept
(``state_encounter_status``), denied encounters and lines leave the encounter history, and a
readable CSV summary goes to the plan that sent the encounters — and, for denied encounters, to
the provider that first sent the claim to the plan (lineage: the routed claim with the same
claim id and billing NPI that reached the plan).

Re-running it (after a crash, or a replay) gives the same result: the statuses of the response
are replaced, history removals are idempotent, and the documents of an earlier run are cleared
by the runner.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from gateway.tabular.cells import neutral_row
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import (
    find_routed,
    find_routed_by_claim,
    plan_of_interchange,
    history_source,
    origin_of,
    remove_denied_history,
    replace_state_statuses,
    server_registry,
)
from gateway.pipeline.steps.result import StepResult
from gateway.rules import default_catalogue
from gateway.state.response import (
    StateResponseError,
    load_layout,
    parse_state_response,
    summary_rows,
)

CSV_MEDIA = "text/csv"


def summary_csv(rows: list[dict]) -> bytes:
    columns = load_layout()["summary_columns"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(neutral_row(c["header"] for c in columns))
    for row in rows:  # the state's descriptions are free text: no live formulas
        writer.writerow(neutral_row(row.get(c["field"], "") for c in columns))
    return out.getvalue().encode("utf-8")


def process_state_response(store, partners: Partners, partner: Partner, submission_id: str,
                           payload: bytes, now: datetime) -> StepResult:
    """Link the response's encounters to the 837Ps routed to the state, keep the state's
    verdicts, take denied lines out of the history and send the summaries."""
    result = StepResult(submission_id)
    catalogue = default_catalogue()
    if partner.role not in ("state", "plan"):
        finding = catalogue.finding("STATE-XML-001", "file", None,
                                    problem="only the state (or a plan forwarding it) sends "
                                            "state responses")
        return result.reject("not the state", [finding])
    try:
        response = parse_state_response(payload)
    except StateResponseError as exc:
        finding = catalogue.finding("STATE-XML-001", "file", None, problem=str(exc))
        result.summary = {"kind": "state-response", "valid": False}
        return result.reject("unreadable state response", [finding])
    registry = server_registry(store)
    findings = []
    statuses: list[dict] = []
    to_plan: dict[str, list[dict]] = {}
    to_provider: dict[str, list[dict]] = {}
    counts = {"encounters": 0, "accepted": 0, "denied": 0, "unmatched": 0,
              "history_lines_removed": 0}
    sender = partner.id if partner.role == "plan" else None
    states = [p.id for p in partners.partners.values() if p.role == "state"]
    plans = [p.id for p in partners.partners.values() if p.role == "plan"]
    only_plan = plans[0] if len(plans) == 1 else None
    for t_number, (transaction, encounter) in enumerate(response.encounters, start=1):
        counts["encounters"] += 1
        where = f"Encounter[{t_number}]"
        routed, link_findings = link_encounter(registry, partners, transaction, encounter,
                                               where, sender, states)
        findings.extend(link_findings)
        if routed is None:  # nothing changes for it; its plan's summary lists it
            counts["unmatched"] += 1
            plan_id = sender or plan_of_interchange(registry, transaction.isa13, states) \
                or only_plan
            if plan_id:
                reason = "; ".join(f"{f.rule}: {f.message}" for f in link_findings)
                to_plan.setdefault(plan_id, []).append({
                    "claim_id": encounter.claim_id, "status": "not linked",
                    "dhcs_encounter_id": encounter.dhcs_encounter_id, "line": "",
                    "severity": "Warning", "reason": reason})
            continue
        counts["denied" if encounter.denied else "accepted"] += 1
        statuses.append(_status_row(routed, encounter, None, encounter.status, encounter))
        for line in encounter.lines:
            statuses.append(_status_row(routed, encounter, line.line_number, line.status, line))
        source = routed.get("history_source")
        if source:
            if encounter.denied:
                counts["history_lines_removed"] += remove_denied_history(
                    registry, source, encounter.claim_id)
            else:
                for line in encounter.lines:
                    if line.status == "denied" and line.line_number is not None:
                        counts["history_lines_removed"] += remove_denied_history(
                            registry, source, encounter.claim_id, line.line_number)
        rows = summary_rows(encounter)
        plan_id = routed["sender"]
        to_plan.setdefault(plan_id, []).extend(rows)
        if encounter.denied:
            origin = origin_of(registry, claim_id=encounter.claim_id,
                               billing_npi=routed.get("billing_npi") or "", plan_id=plan_id)
            provider = partners.partners.get(origin["sender"]) if origin else \
                partners.provider_for(routed.get("billing_npi") or "")
            if provider is not None and provider.role == "provider":
                to_provider.setdefault(provider.id, []).extend(rows)
    # keyed by the first submission of a replay chain: a replay replaces, never adds
    root = history_source(store, submission_id).split(":", 1)[1]
    replace_state_statuses(registry, root, statuses)
    for plan_id, rows in to_plan.items():
        # routed as the state's document, also when a plan forwards the state's file itself
        target = partners.route("state-response", "state", plan_id=plan_id)
        if target is None or target.id != plan_id:
            continue
        result.route(role="state-response-summary", name=f"{submission_id}.state-response.csv",
                     content=summary_csv(rows), media_type=CSV_MEDIA, recipient=plan_id)
    for provider_id, rows in to_provider.items():
        if partners.route("state-response-denied", "state",
                          npi=partners.partners[provider_id].npis[0]
                          if partners.partners[provider_id].npis else "") is None:
            continue
        result.route(role="state-response-denied", name=f"{submission_id}.denied-encounters.csv",
                     content=summary_csv(rows), media_type=CSV_MEDIA, recipient=provider_id)
    result.add_findings(findings)
    result.summary = {"kind": "state-response", "file_status": response.status,
                      "transactions": len(response.transactions), **counts, "valid": True}
    return result


def link_encounter(registry, partners: Partners, transaction, encounter, where: str,
                   sender: str | None, states: list[str]):
    """The routed claim a response's encounter answers, and the findings of its linking: ONLY
    by ISA13 + GS06 + ST02 + claim id of an 837P the gateway sent to the state. Else
    ``STATE-LINK-001`` (no such 837P) or ``-002`` (the response leaves a control number out),
    and nothing changes for it — unless the plan that sent that claim to the state asks for a
    claim-id link in its partner entry (``state_link: claim-id``): then the one routed claim
    with that id is linked, with the warning ``STATE-LINK-003``."""
    catalogue = default_catalogue()
    values = dict(claim=encounter.claim_id, isa13=transaction.isa13 or "none",
                  gs06=transaction.gs06 or "none", st02=transaction.st02 or "none")
    complete = all((transaction.isa13, transaction.gs06, transaction.st02, encounter.claim_id))
    routed = find_routed(registry, isa13=transaction.isa13, gs06=transaction.gs06,
                         st02=transaction.st02, claim_id=encounter.claim_id, sender=sender,
                         recipients=states) if complete else None
    if routed is not None:
        return routed, []
    found = [catalogue.finding("STATE-LINK-001" if complete else "STATE-LINK-002", where,
                               None, **values)]
    by_claim = find_routed_by_claim(registry, claim_id=encounter.claim_id, recipients=states,
                                    sender=sender) if encounter.claim_id else None
    plan = partners.partners.get(by_claim["sender"]) if by_claim else None
    if plan is not None and plan.state_link == "claim-id":
        warned = catalogue.finding("STATE-LINK-003", where, None, plan=plan.id,
                                   routed=by_claim["submission_id"], **values)
        return by_claim, [f for f in (warned,) if f]
    return None, [f for f in found if f]


def _status_row(routed: dict, encounter, line_number, status: str, part) -> dict:
    first = part.responses[0] if part.responses else None
    return {"routed_submission": routed["submission_id"], "claim_id": encounter.claim_id,
            "line_number": line_number, "status": status,
            "dhcs_encounter_id": encounter.dhcs_encounter_id,
            "severity": first.severity if first else None, "code": first.id if first else None,
            "description": first.description if first else None}
