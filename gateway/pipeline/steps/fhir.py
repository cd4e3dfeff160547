"""Step ``fhir``: a provider's FHIR resources (kind ``fhir``).

resources.

A FHIR create (``POST /fhir/{type}``) or transaction Bundle is one submission: the raw payload
is the submission (kept by :meth:`Store.receive`), its findings are the submission's findings,
and every accepted resource is a document of the submission with role ``fhir-resource``, name
``{type}/{id}``, the resource's JSON as content and the submitting partner as recipient (so
only that partner can read or search it). The submission's filename is
``{expected type}.{json|xml}``: what the step needs to run the payload again (replay).

The API validates in the request, keeps the payload and queues the submission; the queued
step (:func:`process_fhir`) validates the kept payload again (about a millisecond per
resource), stores the resources and routes them, all written in one transaction when the run
ends (the store's :class:`~gateway.pipeline.store.Run`). A resource's gateway id is made from
its submission's id and its position (:func:`resource_id`), so the API answers with it before
the run, a re-run stores the same ids, and a read or search before the run finds the resource
from the kept payload (:func:`find_resource`, :func:`pending_resources`). The request does not
store the resource documents itself: the claim of a run discards whatever the submission holds
from before (so a re-run never duplicates), and mailboxes show documents of finished runs only.

Routing (:class:`Router`, route ``fhir`` of the partner file): every accepted resource goes
through the FHIR mappings (``mappings/fhir/``) to the member's plan — the plan whose MIF
assigns the member, else the plan the resource names as payer, else the only plan (the one
lookup of :func:`gateway.pipeline.delivery.resolve_plan`):

* an ECM referral ServiceRequest → its referral record (JSON, role ``routed-referral``); the
  priority and the authorization deadline (72 hours expedited, 5 working days routine) are in
  the submission summary (``routing``);
* a Task (referral status) → an RTF row (default layout);
* a CarePlan → an RTF row, and its completed ECM/CS activities → encounters checked with the
  ECM rules against the server's registries → an 837P in the plan's envelope.

A submission's RTF rows go to each plan as one CSV (role ``routed-rtf``), its encounters as one
837P (role ``routed-837p``, indexed for state responses). The sender fills what the resource
leaves empty in an RTF row (ECM provider name, NPI, TIN; the member's name from the plan's
MIF), but may not speak for another provider (``GATEWAY-AUTH-001``/``-002``). Mapping findings
(``FHIR-MAP-*``) are the submission's findings; whatever is not routed stays stored and a
``FHIR-ROUTE-*`` finding says why. Documents are written only through the store inside the
step, so the queue's clean-up of an unfinished run leaves nothing routed twice.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache

from gateway.fhir import CIN_SYSTEM, JSON_MEDIA
from gateway.fhir.intake import ROLE, ROUTE_KIND, accepted_resources, member_identifiers
from gateway.fhir.parse import to_json_bytes
from gateway.findings import Finding
from gateway.pipeline.delivery import X12_MEDIA, sender_finding
from gateway.pipeline.fhir_resources import (
    check_stored_payload,
    created_check,
    read_resource,
)
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.status import Status
from gateway.pipeline.steps.result import StepResult
from gateway.rules import default_catalogue

REFERRAL_ROLE, RTF_ROLE, X12_ROLE = "routed-referral", "routed-rtf", "routed-837p"
ROUTED_TYPES = ("ServiceRequest", "Task", "CarePlan")  # what the mappings route
# what makes a resource unroutable (the rest — an ECM rule denying one claim — is a verdict
# on a claim, reported, while the resource is routed)
UNROUTABLE = ("FHIR-MAP-", "FHIR-ROUTE-001", "FHIR-ROUTE-003", "GATEWAY-AUTH-")
CLAIM_VERDICT = "FHIR-MAP-008"  # a claim the ECM rules deny: not the resource's fault
REFERRAL_MEDIA, CSV_MEDIA = "application/json", "text/csv"


# A CarePlan's mapping (its RTF rows, its claims before the ECM rules), as the dry run of a
# create (routing_problems, in the API's request) made it, for the queued run of the same
# create in this process: that run takes it instead of mapping the CarePlan again (the
# mapping is half of what routing a CarePlan costs). Keyed by everything the mapping reads:
# the resource's content, the day, the envelope profile, both fills (from the registries,
# looked up again by the run: a MIF loaded in between is a different key) and the mapping
# specs themselves (an edited spec is read again, a new object); taken once, then forgotten.
MAPPED_KEPT = 256
_MAPPED: OrderedDict[tuple, tuple] = OrderedDict()
_MAPPED_LOCK = threading.Lock()


def _mapping_key(resource: dict, today: date, settings, fill: dict, claim_fill: dict
                 ) -> tuple:
    return (json.dumps(resource, sort_keys=True, default=str), today, settings.name,
            repr(sorted(fill.items())), repr(sorted(claim_fill.items())))


def _mapping_specs() -> tuple:
    from gateway.fhir.mapping.careplan import SPEC
    from gateway.fhir.mapping.engine import load_spec

    return load_spec("careplan-to-rtf"), load_spec(SPEC)


def _keep_mapping(key: tuple, mapped: tuple) -> None:
    with _MAPPED_LOCK:
        _MAPPED[key] = (_mapping_specs(), mapped)
        _MAPPED.move_to_end(key)
        while len(_MAPPED) > MAPPED_KEPT:
            _MAPPED.popitem(last=False)


def _take_mapping(key: tuple) -> tuple | None:
    with _MAPPED_LOCK:
        kept = _MAPPED.pop(key, None)
    if kept is None:
        return None
    specs, mapped = kept
    if any(a is not b for a, b in zip(specs, _mapping_specs())):
        return None  # a spec changed since: map again
    return mapped


@dataclass
class _PlanOutput:
    """What one plan receives from a submission: RTF rows and encounters (one file each)."""
    rtf_rows: list[dict] = field(default_factory=list)
    encounters: list = field(default_factory=list)
    consent_rows: list[dict] = field(default_factory=list)  # RTF data-sharing layout


class Router:
    """Routes the resources of one FHIR submission to the members' plans. :meth:`add` each
    resource (a referral is written at once; RTF rows and encounters are gathered per plan),
    then :meth:`finish` writes one RTF CSV and one 837P per plan. ``findings`` and
    ``entries`` (one per routed-or-not resource, for the summary) are the caller's to
    store."""

    def __init__(self, store, partners: Partners, partner: Partner, result: StepResult,
                 now: datetime | None = None, rules: bool = True) -> None:
        from gateway.pipeline.registries import server_registry, server_rules

        self.store, self.partners, self.partner = store, partners, partner
        self.result = result
        self.submission_id = result.submission_id
        self.now = now or datetime.now(UTC)
        self.today: date = self.now.date()
        self.registry = server_registry(store)
        # ``rules=False``: the code-set rules alone (a dry run: no registry look-ups)
        self.rules = server_rules(self.registry, submitter=partner, partners=partners) \
            if rules else None
        self.rules_run = rules  # False: a dry run (routing_problems)
        self._rules_noted = False  # ECM-REG-001 given for this submission's CarePlans
        self.catalogue = default_catalogue()
        # the look-ups of one routing run, each made once (a CarePlan asks for its member's
        # plan, MIF assignment and the sender's roster name from both of its mappings)
        self._looked: dict[tuple, object] = {}
        self.findings: list[Finding] = []
        self.entries: list[dict] = []
        self.routed: dict[str, int] = {}  # recipient -> documents
        self._outputs: dict[str, _PlanOutput] = {}
        self._own: dict[str, dict] | None = None

    # -- per resource ------------------------------------------------------------------------
    def add(self, resource: dict, sent_id: str | None = None) -> None:
        """Route one stored resource. ``sent_id``: the id the sender gave it (the mappings
        use it, so a CarePlan's claim ids and a referral's id are the EHR's own, the same
        however often it is sent); the summary names the resource by the gateway's id."""
        handler = {"ServiceRequest": self._referral, "Task": self._task,
                   "CarePlan": self._careplan,
                   "Consent": self._consent}.get(resource.get("resourceType"))
        if handler is None:
            return
        label = f"{resource['resourceType']}/{resource.get('id')}"
        handler({**resource, "id": sent_id} if sent_id else resource, label)

    def _referral(self, resource: dict, label: str) -> None:
        from gateway.fhir.mapping.referral import servicerequest_to_referral

        referral, found = servicerequest_to_referral(resource, self.catalogue)
        self.findings.extend(found)
        entry: dict = {"resource": label}
        self.entries.append(entry)
        if referral is not None:
            record = referral.as_json()
            entry.update({k: record[k] for k in ("priority", "fhir_priority",
                                                 "authorization_deadline", "deadline_rule")})
        cin = (referral.member_cin if referral else None) or self._cin(resource)
        if cin is None:
            return self._note("FHIR-ROUTE-003", label)
        target = self._plan(cin, referral.payer_id if referral else None)
        entry["plan"] = target.id if target else None
        if referral is None or any(f.is_error for f in found):
            return self._note("FHIR-ROUTE-002", label, what="referral record")
        if target is None:
            return self._note("FHIR-ROUTE-001", label, what="referral record")
        record = {**referral.as_json(), "resource": label, "sender": self.partner.id,
                  "submission_id": self.submission_id, "plan": target.id}
        name = f"{self.submission_id}.{label.replace('/', '-')}.referral.json"
        self._deliver(target.id, REFERRAL_ROLE, name,
                      (json.dumps(record, indent=2) + "\n").encode(), REFERRAL_MEDIA)
        entry["documents"] = {"referral": target.id}

    def _task(self, resource: dict, label: str) -> None:
        from gateway.fhir.mapping.rtf import tasks_to_rtf

        entry: dict = {"resource": label}
        self.entries.append(entry)
        cin, payer = self._cin(resource), None
        focus = self._focus_request(resource)
        if focus is not None:
            from gateway.fhir.mapping.referral import servicerequest_to_referral

            referral, _ = servicerequest_to_referral(focus, self.catalogue)
            payer = referral.payer_id if referral else None
            if cin is None:
                cin = (referral.member_cin if referral else None) or self._cin(focus)
                if cin is not None:  # the Task names its member through its referral
                    resource = {**resource,
                                "for": {"identifier": {"system": CIN_SYSTEM, "value": cin}}}
        if cin is None:
            self.findings.extend(tasks_to_rtf(resource, today=self.today,
                                              catalogue=self.catalogue,
                                              fill=self._fill(None, None))[1])
            return self._note("FHIR-ROUTE-003", label)
        target = self._plan(cin, payer)
        entry["plan"] = target.id if target else None
        rows, found = tasks_to_rtf(resource, today=self.today, catalogue=self.catalogue,
                                   fill=self._fill(cin, target))
        self.findings.extend(found)
        self._rtf_row(rows[0] if rows else None, found, target, label, "Task.owner", entry)

    def _consent(self, resource: dict, label: str) -> None:
        """The member's data-sharing authorization → an RTF row of the data-sharing layout for
        the member's plan (ECM Policy Guide 002:1598-1599)."""
        from gateway.fhir.mapping.rtf import consents_to_rtf

        entry: dict = {"resource": label}
        self.entries.append(entry)
        cin = self._cin(resource)
        target = self._plan(cin, None) if cin else None
        entry["plan"] = target.id if target else None
        rows, found = consents_to_rtf(resource, today=self.today, catalogue=self.catalogue,
                                      fill=self._fill(cin, target))
        self.findings.extend(found)
        if cin is None:
            return self._note("FHIR-ROUTE-003", label)
        self._rtf_row(rows[0] if rows else None, found, target, label, "Consent.organization",
                      entry, into="consent_rows", what="data-sharing RTF row")

    def _careplan(self, resource: dict, label: str) -> None:
        from gateway.fhir.mapping.careplan import careplan_claims, careplan_to_encounters
        from gateway.fhir.mapping.rtf import careplans_to_rtf
        from gateway.x12.writer import envelope_settings

        entry: dict = {"resource": label}
        self.entries.append(entry)
        cin = self._cin(resource)
        target = self._plan(cin, None) if cin else None
        entry["plan"] = target.id if target else None
        settings = envelope_settings(target.envelope if target else "plan-default")
        fill, claim_fill = self._fill(cin, target), self._claim_fill(cin, target)
        key = _mapping_key(resource, self.today, settings, fill, claim_fill)
        # the queued run takes the mapping its create's dry run made here (_MAPPED)
        mapped = _take_mapping(key) if self.rules_run else None
        if mapped is None:
            mapped = (*careplans_to_rtf(resource, today=self.today, settings=settings,
                                        catalogue=self.catalogue, fill=fill),
                      careplan_claims(resource, settings, self.catalogue, claim_fill))
            if not self.rules_run:  # a dry run (routing_problems): for the run to come
                _keep_mapping(key, mapped)
        rows, found, claims = mapped
        self.findings.extend(found)
        encounters, made = careplan_to_encounters(resource, rules=self.rules,
                                                  catalogue=self.catalogue, claims=claims,
                                                  notes=not self._rules_noted)
        # the rule groups the registries cannot serve: said once per submission
        self._rules_noted = self._rules_noted or any(batch for batch, _ in claims)
        self.findings.extend(made)
        if cin is None:
            return self._note("FHIR-ROUTE-003", label)
        self._rtf_row(rows[0] if rows else None, found, target, label, "CarePlan.author",
                      entry)
        mine = []
        for encounter in encounters:
            billing = encounter.billing_provider
            refused = sender_finding(self.partner, billing.npi, billing.tin, "CarePlan.author")
            if refused is not None:
                self.findings.append(refused)
                continue
            mine.append(encounter)
        if not mine:
            if any(f.is_error for f in made) or len(mine) < len(encounters):
                self._note("FHIR-ROUTE-002", label, what="encounters (837P)")
            return
        if target is None:
            return self._note("FHIR-ROUTE-001", label, what="encounters (837P)")
        self._output(target.id).encounters.extend(mine)
        entry.setdefault("documents", {})["837p"] = target.id
        entry["claims"] = [e.claim.id for e in mine]

    def _rtf_row(self, row: dict | None, found: list[Finding], target: Partner | None,
                 label: str, where: str, entry: dict, into: str = "rtf_rows",
                 what: str = "RTF row") -> None:
        if row is None or any(f.is_error for f in found):
            return self._note("FHIR-ROUTE-002", label, what=what)
        npi, tin = row.get("ECM Provider NPI", ""), row.get("ECM Provider TIN", "")
        refused = sender_finding(self.partner, npi, tin, where, rule="GATEWAY-AUTH-002",
                                 npi_required=False) if (npi or tin) else None
        if refused is not None:
            self.findings.append(refused)
            return
        cin = row.get("Member CIN") or ""
        if self.partner.role == "provider" and where != "Task.owner" and cin \
                and self._member_rows(cin) and not self._theirs(cin):
            # as an uploaded RTF (steps/tabular.py _plan_recipients): a member some plan's MIF
            # knows but none assigns to the sender is not the sender's to report on. (Not a
            # Task: it answers a referral the plan routed to the sender, before any MIF
            # assigns the member to it.)
            finding = self.catalogue.finding("GATEWAY-AUTH-003", where, None,
                                             partner=self.partner.id)
            if finding:
                self.findings.append(finding)
            entry["plan"] = None  # (nor is the sender told which plan has the member)
            return
        if target is None:
            return self._note("FHIR-ROUTE-001", label, what=what)
        getattr(self._output(target.id), into).append(row)
        entry.setdefault("documents", {})["rtf"] = target.id

    # -- per submission ----------------------------------------------------------------------
    def finish(self) -> None:
        """Write each plan's RTF CSV and 837P (into the step's result); the 837Ps' claims
        replace the routing records of any earlier run of the submission (a re-run after a
        crash indexes its own claims afresh), in one transaction."""
        from gateway.conversion import canonical_to_837p
        from gateway.fhir.mapping.rtf import write_rtf_csv
        from gateway.pipeline.registries import record_consents, replace_routed, routed_rows
        from gateway.pipeline.delivery import envelope_numbers
        from gateway.x12.writer import envelope_settings

        several = len(self._outputs) > 1
        records: list[dict] = []
        for plan_id, output in self._outputs.items():
            middle = f".{plan_id}" if several else ""
            if output.rtf_rows:
                text = io.StringIO()
                write_rtf_csv(output.rtf_rows, text)
                self._deliver(plan_id, RTF_ROLE, f"{self.submission_id}{middle}.rtf.csv",
                              text.getvalue().encode("utf-8"), CSV_MEDIA)
            if output.consent_rows:
                text = io.StringIO()
                write_rtf_csv(output.consent_rows, text, layout="data-sharing")
                self._deliver(plan_id, RTF_ROLE,
                              f"{self.submission_id}{middle}.data-sharing.rtf.csv",
                              text.getvalue().encode("utf-8"), CSV_MEDIA)
                record_consents(self.store, self.registry, plan_id, self.partner.id,
                                self.submission_id, output.consent_rows)
            if output.encounters:
                settings = envelope_settings(self.partners.partners[plan_id].envelope)
                text = io.StringIO()
                canonical_to_837p(output.encounters, text, settings,
                                  envelope_numbers(self.store, settings.name),
                                  self.now.replace(tzinfo=None))
                content = text.getvalue().encode()
                document = self._deliver(plan_id, X12_ROLE,
                                         f"{self.submission_id}{middle}.837p.x12", content,
                                         X12_MEDIA)
                records.extend(routed_rows(
                    submission_id=self.submission_id, sender=self.partner.id,
                    recipient=plan_id, document_id=document, x12=content))
        replace_routed(self.registry, self.submission_id, records)

    # -- helpers -----------------------------------------------------------------------------
    def _deliver(self, recipient: str, role: str, name: str, content: bytes,
                 media_type: str) -> str:
        document = self.result.route(role=role, name=name, content=content,
                                     media_type=media_type, recipient=recipient, converted=True)
        self.routed[recipient] = self.routed.get(recipient, 0) + 1
        return document

    def _output(self, plan_id: str) -> _PlanOutput:
        return self._outputs.setdefault(plan_id, _PlanOutput())

    def _once(self, key: tuple, look):
        """``look()``, once per ``key`` in this run."""
        if key not in self._looked:
            self._looked[key] = look()
        return self._looked[key]

    def _member_rows(self, cin: str) -> list[dict]:
        """The member's plan MIF rows, newest first (one query per member and run)."""
        from gateway.pipeline.registries import member_plan_rows

        return self._once(("member", cin), lambda: member_plan_rows(self.registry, cin))

    def _theirs(self, cin: str) -> list[dict]:
        """The member's plan MIF rows that assign it to the sending partner (current or past:
        as :func:`~gateway.pipeline.registries.plans_of_members` with ``provider``)."""
        return [row for row in self._member_rows(cin)
                if self.partner.assigned(row.get("provider_npi"), row.get("provider_tin"))]

    def _plan(self, cin: str, payer_id: str | None) -> Partner | None:
        """The member's plan: among the plans whose MIF assigns the member to the sending
        provider when there are any (as an uploaded RTF is routed), else any that knows it."""
        from gateway.pipeline.delivery import resolve_plan
        from gateway.pipeline.registries import plan_of_source

        plans: list[str] = []
        rows = (self._theirs(cin) if self.partner.role == "provider" else None) \
            or self._member_rows(cin)
        for row in rows:  # as plans_of_members answers
            plan = plan_of_source(row["source"])
            if plan and plan not in plans:
                plans.append(plan)
        return resolve_plan(self.partners, self.partner, ROUTE_KIND, cin, payer_id or "",
                            {cin: plans} if plans else {})

    def _assignment(self, cin: str, plan_id: str | None) -> dict | None:
        """As member_assignment answers: the newest row (of ``plan_id``'s MIFs)."""
        from gateway.pipeline.registries import plan_of_source

        return next((row for row in self._member_rows(cin)
                     if plan_id is None or plan_of_source(row["source"]) == plan_id), None)

    def _fill(self, cin: str | None, target: Partner | None) -> dict:
        """RTF values the gateway knows when the resource leaves them empty: the sending
        provider, the member's name from the plan's MIF, the plan."""
        from gateway.x12.writer import envelope_settings

        fill: dict = {}
        if self.partner.role == "provider":
            fill.update(ecm_provider_name=self.partner.name,
                        ecm_provider_npi=self.partner.npis[0] if self.partner.npis else None,
                        ecm_provider_tin=self.partner.tins[0] if self.partner.tins else None)
        if target is not None:
            receiver = envelope_settings(target.envelope).receiver
            fill.update(mcp_identifier=receiver.id, mcp_name=receiver.name)
            assigned = self._assignment(cin, target.id) if cin else None
            if assigned:
                fill.update(member_last_name=assigned.get("last_name"),
                            member_first_name=assigned.get("first_name"))
        return fill

    def _claim_fill(self, cin: str | None, target: Partner | None) -> dict:
        """837P values the gateway knows when a CarePlan names its member or billing provider
        by identifier only: the member's name and birth date from the plan's MIF; the sending
        provider's name, NPI, TIN (when it has exactly one of each) and billing address from its
        partner entry (its name as the plan's roster has it, when it does)."""
        fill: dict = {}
        partner = self.partner
        if partner.role == "provider":
            npi = partner.npis[0] if len(partner.npis) == 1 else None
            fill.update(billing_name=self._roster_name(npi) or partner.name, billing_npi=npi,
                        billing_tin=partner.tins[0] if len(partner.tins) == 1 else None)
            if partner.address:
                line1, city, state, postal = partner.address
                fill.update(billing_address_line1=line1, billing_city=city,
                            billing_state=state, billing_zip=postal)
        assigned = self._assignment(cin, target.id if target else None) if cin else None
        if assigned:
            fill.update(member_last_name=assigned.get("last_name"),
                        member_first_name=assigned.get("first_name"),
                        member_birth_date=assigned.get("birth_date"))
        return fill

    def _roster_name(self, npi: str | None) -> str | None:
        if not npi:
            return None

        def look():
            with self.registry.engine.connect() as conn:
                return conn.execute(_roster_query(), {"npi": npi}).scalar()

        return self._once(("roster", npi), look)

    def _cin(self, resource: dict) -> str | None:
        """The member's CIN: the resource's own member identifiers, else those of the Patient
        its subject / for reference names (in this submission or stored before)."""
        for system, value in sorted(member_identifiers(resource), key=str):
            if system == CIN_SYSTEM:
                return value
        for key in ("subject", "for"):
            ref = resource.get(key)
            if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/"):
                patient = self._lookup(ref["reference"])
                if patient is not None:
                    return next((v for s, v in sorted(member_identifiers(patient), key=str)
                                 if s == CIN_SYSTEM), None)
        return None

    def _focus_request(self, task: dict) -> dict | None:
        ref = task.get("focus")
        reference = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(reference, str) and reference.startswith("ServiceRequest/"):
            return self._lookup(reference)
        return None

    def _lookup(self, reference: str) -> dict | None:
        """A resource by ``Type/id``: one of this submission's, else one the partner stored
        before (never another partner's)."""
        if self._own is None:
            self._own = {d["name"]: json.loads(d["content"]) for d in self.result.documents
                         if d["role"] == ROLE}
        if reference in self._own:
            return self._own[reference]
        rtype, _, rid = reference.partition("/")
        return read_resource(self.store, self.partner, rtype, rid) if rid else None

    def _finding(self, rule: str, location: str, **values) -> None:
        found = self.catalogue.finding(rule, location, None, **values)
        if found:
            self.findings.append(found)

    def _note(self, rule: str, label: str, **values) -> None:
        """A routing finding located at the resource (its type, as FHIRPath), naming it."""
        self._finding(rule, label.split("/")[0], resource=label, **values)


@lru_cache(maxsize=1)
def _roster_query():
    """A provider's name in the plans' roster, by NPI (the statement built once)."""
    from sqlalchemy import bindparam, select

    from gateway.registry.store import providers

    return select(providers.c.name).where(providers.c.npi == bindparam("npi")).limit(1)


def routing_problems(store, partners: Partners, partner: Partner, resources: list[dict],
                     sent_ids: list, now: datetime | None = None,
                     entries: list[int | None] | None = None) -> list[Finding]:
    """THE definition of a routable ECM CarePlan / Task / ServiceRequest: what the FHIR
    profiles accept AND the mappings can route once the gateway filled in what it knows (the
    member's name from the plan's MIF, the billing provider from the sender's partner entry).
    Returns the findings that keep one from being routed — a mapping error (``FHIR-MAP-*``),
    no member or no plan (``FHIR-ROUTE-003``/``-001``), another provider's data
    (``GATEWAY-AUTH-*``) — empty when every resource routes. A dry run of :class:`Router`:
    nothing is written. The API answers a create, and a transaction Bundle, with these as a
    422 OperationOutcome (a batch Bundle: per entry); the step rejects such a submission the
    same way. ``entries``: each resource's entry in the Bundle it came in (a transaction),
    where its findings are then located (``Bundle.entry[i].resource...``)."""
    # the ECM rules give verdicts on claims, not on routability (CLAIM_VERDICT is not a
    # problem): the dry run checks the code sets only, sparing the registries' look-ups
    router = Router(store, partners, partner, StepResult("check"), now, rules=False)
    # the resources see each other as the run will see them stored (a transaction's CarePlan
    # naming its Patient entry)
    router._own = {f"{r.get('resourceType')}/{r.get('id')}": r for r in resources}
    problems: list[Finding] = []
    for position, (resource, sent_id) in enumerate(zip(resources, sent_ids)):
        if resource.get("resourceType") not in ROUTED_TYPES:
            continue
        before = len(router.findings)
        router.add(resource, sent_id)
        found = _problems(router.findings[before:])
        entry = entries[position] if entries is not None else None
        if entry is not None:
            found = [_in_entry(f, str(resource["resourceType"]), entry) for f in found]
        problems.extend(found)
    return problems


def _in_entry(finding: Finding, resource_type: str, entry: int) -> Finding:
    """A finding located in a resource, located in its Bundle entry instead."""
    head, dot, rest = finding.location.partition(".")
    if head != resource_type:
        return finding
    return finding.model_copy(update={"location": f"Bundle.entry[{entry}].resource{dot}{rest}"})


def _problems(findings: list[Finding]) -> list[Finding]:
    """Of a routing run's findings, those that keep a resource from being routed."""
    return [f for f in findings if f.rule.startswith(UNROUTABLE)
            and f.rule != CLAIM_VERDICT and (f.is_error or f.rule.startswith("FHIR-ROUTE-"))]


def process_fhir(store, partners: Partners, partner: Partner, submission_id: str,
                 now: datetime | None = None) -> StepResult:
    """Validate a stored FHIR payload; when it has no error, store its resources (a resource,
    or every entry of a transaction Bundle) with gateway-assigned ids and route them
    (:class:`Router`). Status ``routed`` when something went to a plan, else ``validated``;
    ``rejected`` when the payload has errors."""
    result = StepResult(submission_id)
    created = created_check(submission_id)  # a create this process's API received
    checked = created or check_stored_payload(store, submission_id)
    result.add_findings(checked.findings)
    if not checked.valid or not checked.entries:
        result.summary = {"kind": "fhir", "valid": False,
                          "resource_type": checked.resource_type}
        return result.reject("the FHIR payload has errors")
    resources, sent_ids = accepted_resources(checked, submission_id)
    update = store.version_of_submission(submission_id) if created is None else None
    if update is not None:  # an update (PUT): the new version of the resource it names
        resources = [json.loads(update["content"])]
    stored = []
    for resource in resources:
        result.add_document(role=ROLE, name=f"{resource['resourceType']}/{resource['id']}",
                            content=to_json_bytes(resource), media_type=JSON_MEDIA,
                            recipient=partner.id)
        stored.append(f"{resource['resourceType']}/{resource['id']}")
    router = Router(store, partners, partner, result, now)
    for resource, sent_id in zip(resources, sent_ids):
        router.add(resource, sent_id)
    # a create, an update or a transaction Bundle that cannot be routed is refused (the API
    # answered 422). ONE routing run answers both questions (running the dry run of
    # routing_problems first cost as much as the routing itself): its problems are the dry
    # run's, unless the ECM rules denied a claim -- the dry run, which has no registries,
    # then still sees that claim's billing provider, so only the dry run itself says for sure.
    if checked.resource_type in ROUTED_TYPES and len(resources) == 1 \
            or checked.resource_type == "Bundle":
        problems = _problems(router.findings)
        if problems or any(f.rule == CLAIM_VERDICT for f in router.findings):
            problems = routing_problems(
                store, partners, partner, resources, sent_ids, now,
                [e.index for e in checked.entries] if checked.resource_type == "Bundle"
                else None)
        if problems:
            result.documents.clear()  # nothing stored, nothing routed
            result.status, result.converted = Status.VALIDATED, False
            result.summary = {"kind": "fhir", "valid": False,
                              "resource_type": checked.resource_type}
            return result.reject("the resource cannot be routed", problems, read=True)
    router.finish()  # the routing records of an earlier run (crash recovery) replaced too
    result.add_findings(router.findings)
    summary = {"kind": "fhir", "valid": True, "resource_type": checked.resource_type,
               "resources": stored}
    if router.entries:
        summary["routing"] = router.entries
    if router.routed:
        summary["routed"] = router.routed
    result.summary = summary
    return result
