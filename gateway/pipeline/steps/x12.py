"""Step ``x12``: an X12 837P (or another X12 transaction) from a plan or a provider.

It is validated with the ECM rules against the server's registries
(:mod:`gateway.pipeline.registries`; only when some registry is loaded, and then only the rules
whose registry is there, as the command line does). TA1/999/277CA go back to the sender (route
``ack``). A provider's accepted claims go to the member's plan
(:func:`gateway.pipeline.delivery.resolve_plan`), one routed 837P per plan when the members
belong to different plans. A plan's accepted encounters go to the state and into the encounter
history of that plan (source ``plan:<plan>:submission:<first submission of the replay
chain>``, :func:`gateway.pipeline.registries.plan_history_source`: a re-run or replay replaces
its lines). A provider's lines judged under presumptive authorization are recorded per
submission (:func:`gateway.pipeline.registries.record_presumptive`): its next submission
continues the period. A provider may submit only as itself
(:func:`gateway.pipeline.delivery.authorise_sender`, ``GATEWAY-AUTH-001``).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

from gateway.conversion import canonical_to_837p
from gateway.findings import Finding, Severity
from gateway.pipeline.controls import check_control_numbers
from gateway.pipeline.delivery import (
    X12_MEDIA,
    ack_recipient,
    claim_targets,
    envelope_for,
    sender_finding,
)
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import (
    clear_history,
    forget_routed,
    plan_history_source,
    presumptive_source,
    record_presumptive,
    record_routed,
    replace_history,
    server_registry,
    server_rules,
)
from gateway.pipeline.status import Status
from gateway.pipeline.steps.result import StepResult
from gateway.registry.history import encounter_history_rows
from gateway.rules import default_catalogue
from gateway.x12.acks import AckControls, acknowledge, judge
from gateway.x12.claims837 import ClaimRecord
from gateway.x12.reader import NotX12Error
from gateway.x12.validate import validate_x12
from gateway.x12.writer import ControlNumbers


def sender_findings(claims: list[ClaimRecord], partner: Partner) -> list[Finding]:
    """``GATEWAY-AUTH-001`` for each claim whose billing provider is not the sender's."""
    found = []
    for claim in claims:
        encounter = claim.encounter
        if encounter is None:
            continue
        billing = encounter.billing_provider
        i, g, t = claim.transaction
        finding = sender_finding(partner, billing.npi, billing.tin,
                                 f"ISA#{i}/GS#{g}/ST#{t}/2010AA/NM109", claim.start)
        if finding:
            found.append(finding)
    return found


def process_x12(store, partners: Partners, partner: Partner, submission_id: str,
                now: datetime | None = None) -> StepResult:
    """Validate (with the ECM rules when the server's registries hold anything), acknowledge
    and route one stored X12 submission. A plan's encounters routed to the state also become
    encounter history (replacing what an earlier run of the same submission put there)."""
    now = now or datetime.now(UTC)
    result = StepResult(submission_id)
    payload = store.raw_payload(submission_id)
    registry = server_registry(store)
    forget_routed(registry, submission_id)
    source = plan_history_source(store, submission_id) if partner.role == "plan" else None
    if source is not None:
        # an earlier run's lines must not make this run's claims duplicates of themselves
        clear_history(registry, source)
    presumptive = presumptive_source(store, partner.id, submission_id) \
        if partner.role == "provider" else None
    if presumptive is not None:  # (nor its presumptive lines open the period before them)
        record_presumptive(registry, presumptive, None)
    rules = server_rules(registry, submitter=partner, partners=partners)
    try:
        checked = validate_x12(payload, keep_encounters=True, rules=rules)
    except NotX12Error as exc:
        finding = default_catalogue().finding("GATEWAY-FILE-001", "file", None, problem=str(exc))
        return result.reject(str(exc), [finding])
    if presumptive is not None and rules is not None and rules.presumptive:
        record_presumptive(registry, presumptive, rules)
    checked.findings.extend(sender_findings(checked.claims, partner))
    reused = check_control_numbers(store, registry, partner, submission_id, checked, now)
    checked.findings.extend(reused)
    checked.findings.sort(key=lambda f: f.segment or 0)
    # where the accepted claims go, first, so the control numbers of the acknowledgments and
    # of the routed 837Ps are drawn together (one transaction)
    accepted = [c.encounter for c in judge(checked).accepted_claims if c.encounter is not None]
    groups, nowhere = claim_targets(partners, registry, partner, accepted) \
        if checked.kind == "837p" and accepted else ({}, [])
    wanted = {"isa13:acks": 3, "gs06:acks": 8}
    profiles = {}
    for target_id in list(groups):
        settings, problem = envelope_for(partner, partners.partners[target_id])
        if problem is not None:  # the plan's entry cannot envelope for the state
            checked.findings += [f for f in (default_catalogue().finding(
                "GATEWAY-ENV-001", "file", None, problem=problem),) if f]
            nowhere += groups.pop(target_id)
            continue
        profiles[target_id] = settings
    for settings in profiles.values():
        for counter in (f"isa13:{settings.name}", f"gs06:{settings.name}"):
            wanted[counter] = wanted.get(counter, 0) + 1
    numbers = {name: iter(taken) for name, taken in store.take_numbers(wanted).items()}
    acks = acknowledge(checked, controls=AckControls(next(numbers["isa13:acks"]),
                                                     next(numbers["gs06:acks"])),
                       when=now.replace(tzinfo=None))
    ack_to = ack_recipient(partners, partner)
    for role, name, text in (("ta1", "ta1", acks.ta1), ("999", "999", acks.ack999),
                             ("277ca", "277ca", acks.ack277ca)):
        if text:
            result.add_document(role=f"ack-{role}", name=f"{submission_id}.{name}.x12",
                                content=text.encode(), media_type=X12_MEDIA, recipient=ack_to)
    errors = any(f.severity is Severity.ERROR for f in checked.findings)
    routed: dict[str, int] = {}
    if checked.kind == "837p" and accepted:
        catalogue = default_catalogue()
        for encounter in nowhere:
            finding = catalogue.finding("GATEWAY-ROUTE-001", "file", None,
                                        claim=encounter.claim.id)
            if finding:
                checked.findings.append(finding)
        for target_id, encounters in groups.items():
            target = partners.partners[target_id]
            settings = profiles[target_id]
            out = io.StringIO()
            controls = ControlNumbers(next(numbers[f"isa13:{settings.name}"]),
                                      next(numbers[f"gs06:{settings.name}"]))
            canonical_to_837p(encounters, out, settings, controls, now.replace(tzinfo=None))
            name = f"{submission_id}.837p.x12" if len(groups) == 1 \
                else f"{submission_id}.{target.id}.837p.x12"
            content = out.getvalue().encode()
            document = result.route(role="routed-837p", name=name, content=content,
                                    media_type=X12_MEDIA, recipient=target.id, converted=True)
            to_state = target.role == "state"
            record_routed(registry, submission_id=submission_id, sender=partner.id,
                          recipient=target.id, document_id=document, x12=content,
                          history_source=source if to_state else None)
            if to_state and source is not None:
                replace_history(registry, source, (row for e in encounters
                                                   for row in encounter_history_rows(e)))
            routed[target.id] = len(encounters)
    result.add_findings(checked.findings)
    result.summary = {
        "kind": checked.kind, "claims": len(checked.claims),
        "accepted_claims": len(acks.accepted_claims),
        "rejected_claims": len(checked.claims) - len(acks.accepted_claims),
        "valid": not errors, **({"routed": routed} if routed else {})}
    result.valid = not errors
    result.ack999 = acks.ack999
    if not accepted and errors:
        result.status, result.read = Status.REJECTED, True
        duplicate = next((f for f in reused if f.rule == "X12-ENV-026"), None)
        if duplicate is not None:  # the answer says why, naming the earlier submission —
            result.error = duplicate.message  # also beside the TA1 in a file-drop outbox
            result.add_document(role="report", name=f"{submission_id}.rejected.txt",
                                content=f"{duplicate.rule} at {duplicate.location}: "
                                        f"{duplicate.message}\n".encode(),
                                media_type="text/plain", recipient=ack_to)
    return result
