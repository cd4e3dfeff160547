"""FHIR submissions in the pipeline (kind ``fhir``): the processing step and the stored
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
lookup of :func:`gateway.pipeline.registries.route_to_members_plan`):

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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from gateway.fhir import CIN_SYSTEM, JSON_MEDIA
from gateway.fhir.parse import to_json_bytes
from gateway.fhir.validate import Checked, check_payload
from gateway.findings import Finding
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.steps import X12_MEDIA, Outcome
from gateway.pipeline.store import Store
from gateway.rules import default_catalogue

ROLE = "fhir-resource"
ROUTE_KIND = "fhir"  # the partner file's route for documents made from FHIR submissions
REFERRAL_ROLE, RTF_ROLE, X12_ROLE = "routed-referral", "routed-rtf", "routed-837p"
REFERRAL_MEDIA, CSV_MEDIA = "application/json", "text/csv"


def submission_name(expected: str, fmt: str) -> str:
    return f"{expected}.{fmt}"


def _expected_and_format(filename: str | None) -> tuple[str, str]:
    name, _, fmt = (filename or "Resource.json").rpartition(".")
    return name or "Resource", fmt if fmt in ("json", "xml") else "json"


def route_resource(store: Store, partners: Partners, partner: Partner, submission_id: str,
                   resource: dict, now: datetime | None = None, sent_id: str | None = None
                   ) -> str | None:
    """Route one stored resource of a submission on its own (see :class:`Router`; the step
    routes all of a submission's resources with one router). Its findings are added to the
    submission and its routing entry to the summary's ``routing``. Returns ``routed`` when
    something was routed, else None."""
    router = Router(store, partners, partner, submission_id, now)
    router.add(resource, sent_id)
    status = router.finish()
    store.add_findings(submission_id, router.findings)
    summary = dict((store.submission(submission_id) or {}).get("summary") or {})
    summary["routing"] = [*summary.get("routing", []), *router.entries]
    if router.routed:
        routed = dict(summary.get("routed") or {})
        for recipient, count in router.routed.items():
            routed[recipient] = routed.get(recipient, 0) + count
        summary["routed"] = routed
    store.set_summary(submission_id, summary)
    return status


@dataclass
class _PlanOutput:
    """What one plan receives from a submission: RTF rows and encounters (one file each)."""
    rtf_rows: list[dict] = field(default_factory=list)
    encounters: list = field(default_factory=list)
    consent_rows: list[dict] = field(default_factory=list)  # data-sharing layout


class Router:
    """Routes the resources of one FHIR submission to the members' plans. :meth:`add` each
    resource (a referral is written at once; RTF rows and encounters are gathered per plan),
    then :meth:`finish` writes one RTF CSV and one 837P per plan. ``findings`` and
    ``entries`` (one per routed-or-not resource, for the summary) are the caller's to
    store."""

    def __init__(self, store: Store, partners: Partners, partner: Partner,
                 submission_id: str, now: datetime | None = None) -> None:
        from gateway.pipeline.registries import server_registry, server_rules

        self.store, self.partners, self.partner = store, partners, partner
        self.submission_id = submission_id
        self.now = now or datetime.now(UTC)
        self.today: date = self.now.date()
        self.registry = server_registry(store)
        self.rules = server_rules(self.registry)
        self.catalogue = default_catalogue()
        self.findings: list[Finding] = []
        self.entries: list[dict] = []
        self.routed: dict[str, int] = {}  # recipient -> documents
        self.status: str | None = None
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
        row = rows[0] if rows else None
        if row is None or any(f.is_error for f in found):
            return self._note("FHIR-ROUTE-002", label, what="data-sharing RTF row")
        npi = row.get("ECM Provider NPI", "")
        if self.partner.role == "provider" and npi and npi not in self.partner.npis:
            self._finding("GATEWAY-AUTH-002", "Consent.organization", npi=npi,
                          partner=self.partner.id)
            return
        if target is None:
            return self._note("FHIR-ROUTE-001", label, what="data-sharing RTF row")
        self._output(target.id).consent_rows.append(row)
        entry.setdefault("documents", {})["rtf"] = target.id

    def _careplan(self, resource: dict, label: str) -> None:
        from gateway.fhir.mapping.careplan import careplan_to_encounters
        from gateway.fhir.mapping.rtf import careplans_to_rtf
        from gateway.x12.writer import envelope_settings

        entry: dict = {"resource": label}
        self.entries.append(entry)
        cin = self._cin(resource)
        target = self._plan(cin, None) if cin else None
        entry["plan"] = target.id if target else None
        settings = envelope_settings(target.envelope if target else "plan-default")
        rows, found = careplans_to_rtf(resource, today=self.today, settings=settings,
                                       catalogue=self.catalogue,
                                       fill=self._fill(cin, target))
        self.findings.extend(found)
        encounters, made = careplan_to_encounters(resource, settings=settings, rules=self.rules,
                                                  catalogue=self.catalogue)
        self.findings.extend(made)
        if cin is None:
            return self._note("FHIR-ROUTE-003", label)
        self._rtf_row(rows[0] if rows else None, found, target, label, "CarePlan.author",
                      entry)
        mine = []
        for encounter in encounters:
            billing = encounter.billing_provider
            if self.partner.role == "provider" and billing.npi not in self.partner.npis \
                    and billing.tin not in self.partner.tins:
                self._finding("GATEWAY-AUTH-001", "CarePlan.author", npi=billing.npi,
                              partner=self.partner.id)
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
                 label: str, where: str, entry: dict) -> None:
        if row is None or any(f.is_error for f in found):
            return self._note("FHIR-ROUTE-002", label, what="RTF row")
        npi = row.get("ECM Provider NPI", "")
        if self.partner.role == "provider" and npi and npi not in self.partner.npis:
            self._finding("GATEWAY-AUTH-002", where, npi=npi, partner=self.partner.id)
            return
        if target is None:
            return self._note("FHIR-ROUTE-001", label, what="RTF row")
        self._output(target.id).rtf_rows.append(row)
        entry.setdefault("documents", {})["rtf"] = target.id

    # -- per submission ----------------------------------------------------------------------
    def finish(self) -> str | None:
        """Write each plan's RTF CSV and 837P; returns ``routed`` when anything was routed."""
        from gateway.conversion import canonical_to_837p
        from gateway.fhir.mapping.rtf import write_rtf_csv
        from gateway.pipeline.registries import record_routed
        from gateway.pipeline.steps import envelope_numbers
        from gateway.x12.writer import envelope_settings

        several = len(self._outputs) > 1
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
                record_routed(self.registry, submission_id=self.submission_id,
                              sender=self.partner.id, recipient=plan_id, document_id=document,
                              x12=content)
        return self.status

    # -- helpers -----------------------------------------------------------------------------
    def _deliver(self, recipient: str, role: str, name: str, content: bytes,
                 media_type: str) -> str:
        if self.status is None:
            self.store.set_status(self.submission_id, "converted")
        document = self.store.add_document(self.submission_id, role=role, name=name,
                                           content=content, media_type=media_type,
                                           recipient=recipient)
        self.routed[recipient] = self.routed.get(recipient, 0) + 1
        self.status = "routed"
        return document

    def _output(self, plan_id: str) -> _PlanOutput:
        return self._outputs.setdefault(plan_id, _PlanOutput())

    def _plan(self, cin: str, payer_id: str | None) -> Partner | None:
        from gateway.pipeline.registries import plans_of_members, route_to_members_plan

        return route_to_members_plan(self.partners, self.partner, ROUTE_KIND, cin,
                                     payer_id or "", plans_of_members(self.registry, [cin]))

    def _fill(self, cin: str | None, target: Partner | None) -> dict:
        """RTF values the gateway knows when the resource leaves them empty: the sending
        provider, the member's name from the plan's MIF, the plan."""
        from gateway.pipeline.registries import member_assignment
        from gateway.x12.writer import envelope_settings

        fill: dict = {}
        if self.partner.role == "provider":
            fill.update(ecm_provider_name=self.partner.name,
                        ecm_provider_npi=self.partner.npis[0] if self.partner.npis else None,
                        ecm_provider_tin=self.partner.tins[0] if self.partner.tins else None)
        if target is not None:
            receiver = envelope_settings(target.envelope).receiver
            fill.update(mcp_identifier=receiver.id, mcp_name=receiver.name)
            assigned = member_assignment(self.registry, cin, target.id) if cin else None
            if assigned:
                fill.update(member_last_name=assigned.get("last_name"),
                            member_first_name=assigned.get("first_name"))
        return fill

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
            self._own = {f"{r['resourceType']}/{r['id']}": r
                         for r in submission_resources(self.store, self.submission_id)}
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


def _resolve_references(resources: list[dict], full_urls: dict[str, str]) -> None:
    """Replace ``urn:uuid:`` references between the entries of a transaction by the ids the
    gateway assigned."""
    stack = list(resources)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref in full_urls:
                node["reference"] = full_urls[ref]
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def resource_id(submission_id: str, index: int) -> str:
    """The gateway's id of the ``index``-th accepted resource of a submission: made from the
    submission id, so the API answers a create with it before the queued run stores the
    resource, a re-run stores it under the same id, and a read finds its submission."""
    return f"{submission_id}-{index}"


def submission_of(resource_id_: str) -> str | None:
    """The submission id a gateway resource id was made from (None: not one of ours)."""
    sid, dash, index = resource_id_.rpartition("-")
    return sid if dash and sid and index.isdigit() else None


def accepted_resources(checked: Checked, submission_id: str
                       ) -> tuple[list[dict], list[str | None]]:
    """The resources of a valid payload as the gateway keeps them — each with its gateway id
    (:func:`resource_id`), ``urn:uuid`` references between transaction entries resolved — and
    the ids the sender gave them. The same for the same payload and submission, so the API's
    answer and the queued run agree."""
    resources, full_urls, sent_ids = [], {}, []
    bundle_entries = (checked.data or {}).get("entry") or []
    for index, entry in enumerate(checked.entries):
        resource = dict(entry.data)
        sent = resource.get("id")
        sent_ids.append(sent if isinstance(sent, str) and sent else None)
        resource["id"] = resource_id(submission_id, index)
        resources.append(resource)
        if entry.index is not None and isinstance(bundle_entries[entry.index], dict):
            full_url = bundle_entries[entry.index].get("fullUrl")
            if isinstance(full_url, str):
                full_urls[full_url] = f"{resource['resourceType']}/{resource['id']}"
    _resolve_references(resources, full_urls)
    return resources, sent_ids


def check_stored_payload(store: Store, submission_id: str, found: dict | None = None
                         ) -> Checked:
    """Validate a FHIR submission's raw payload again, as its run does."""
    found = found or store.submission(submission_id)
    expected, fmt = _expected_and_format(found.get("filename"))
    return check_payload(store.raw_payload(submission_id), fmt,
                         expected=None if expected == "Resource" else expected)


def process_fhir(store: Store, partners: Partners, partner: Partner, submission_id: str,
                 now: datetime | None = None) -> Outcome:
    """Validate a stored FHIR payload; when it has no error, store its resources (a resource,
    or every entry of a transaction Bundle) with gateway-assigned ids and route them
    (:class:`Router`). Status ``routed`` when something went to a plan, else ``validated``;
    ``rejected`` when the payload has errors."""
    from gateway.pipeline.registries import forget_routed

    store.attempt(submission_id)
    checked = check_stored_payload(store, submission_id)
    if checked.findings:
        store.add_findings(submission_id, checked.findings)
    if not checked.valid or not checked.entries:
        store.set_summary(submission_id, {"kind": "fhir", "valid": False,
                                          "resource_type": checked.resource_type})
        store.set_status(submission_id, "rejected", error="the FHIR payload has errors")
        return Outcome(submission_id, "rejected", False, None, len(checked.findings))
    resources, sent_ids = accepted_resources(checked, submission_id)
    stored = []
    for resource in resources:
        store.add_document(
            submission_id, role=ROLE, name=f"{resource['resourceType']}/{resource['id']}",
            content=to_json_bytes(resource), media_type=JSON_MEDIA, recipient=partner.id)
        stored.append(f"{resource['resourceType']}/{resource['id']}")
    store.set_status(submission_id, "validated")
    # a re-run (crash recovery) indexes its own 837P claims afresh
    router = Router(store, partners, partner, submission_id, now)
    forget_routed(router.registry, submission_id)
    for resource, sent_id in zip(resources, sent_ids):
        router.add(resource, sent_id)
    status = router.finish() or "validated"
    store.add_findings(submission_id, router.findings)
    summary = {"kind": "fhir", "valid": True, "resource_type": checked.resource_type,
               "resources": stored}
    if router.entries:
        summary["routing"] = router.entries
    if router.routed:
        summary["routed"] = router.routed
    store.set_summary(submission_id, summary)
    if status == "routed":
        store.set_status(submission_id, status)
    return Outcome(submission_id, status, True, None,
                   len(checked.findings) + len(router.findings))


def referral_routing(store: Store, partner: Partner, resource_type: str, resource_id: str
                     ) -> dict | None:
    """How one of the partner's stored resources was routed: its submission (id, status) and
    its routing entry (for a ServiceRequest: priority, authorization deadline and rule, the
    plan and the documents; only ``resource`` while its routing has not run). None for an
    unknown resource or another partner's."""
    found = find_resource(store, partner, resource_type, resource_id)
    if found is None:
        return None
    return routing_of(found[1], f"{resource_type}/{resource_id}")


def routing_of(submission: dict, name: str) -> dict:
    """The submission (id, status) and its routing entry for the resource ``name``."""
    routing = (submission.get("summary") or {}).get("routing", []) \
        if submission.get("run_state") == "done" else []
    entry = next((e for e in routing if e.get("resource") == name), {"resource": name})
    return {"submission_id": submission["id"], "status": submission.get("status"), **entry}




def stored_resources(store: Store, partner: Partner, resource_type: str | None = None
                     ) -> list[dict]:
    """The partner's stored FHIR resources (documents, newest first, without content)."""
    prefix = f"{resource_type}/" if resource_type else ""
    return [d for d in store.mailbox(partner.id)
            if d["role"] == ROLE and d["name"].startswith(prefix)]


def pending_resources(store: Store, partner: Partner, resource_type: str,
                      latest: int = 100) -> list[dict]:
    """The partner's accepted resources of ``resource_type`` that their queued run has not
    stored yet (read from the kept payloads; among its ``latest`` submissions, newest
    first), so a search right after a create finds what was created."""
    found = []
    for submission in store.submissions_for(partner.id, limit=latest):
        if submission["kind"] != "fhir" or submission["run_state"] == "done":
            continue
        checked = check_stored_payload(store, submission["id"], submission)
        if checked.valid:
            found.extend(r for r in accepted_resources(checked, submission["id"])[0]
                         if r["resourceType"] == resource_type)
    return found


def read_resource(store: Store, partner: Partner, resource_type: str, resource_id: str
                  ) -> dict | None:
    """One of the partner's resources, or None (also for another partner's)."""
    found = find_resource(store, partner, resource_type, resource_id)
    return found[0] if found is not None else None


def find_resource(store: Store, partner: Partner, resource_type: str, resource_id: str
                  ) -> tuple[dict, dict] | None:
    """One of the partner's resources and its submission, or None (also for another
    partner's). A resource accepted by the API whose submission's run has not stored it yet
    (queued, running, or dead-lettered) is read from the submission's raw payload, so a read
    right after a create finds it."""
    name = f"{resource_type}/{resource_id}"
    sid = submission_of(resource_id)
    submission = store.submission(sid) if sid else None
    if submission is None:  # an id from before ids named their submission: look them up
        for doc in stored_resources(store, partner, resource_type):
            if doc["name"] == name:
                found = store.document(doc["id"])
                return (json.loads(found["content"]), store.submission(doc["submission_id"])
                        ) if found else None
        return None
    if submission["partner"] != partner.id or submission["kind"] != "fhir" \
            or submission["status"] == "rejected":
        return None
    if submission["run_state"] == "done":
        for doc in store.documents(sid):
            if doc["role"] == ROLE and doc["name"] == name and doc["recipient"] == partner.id:
                found = store.document(doc["id"])
                return (json.loads(found["content"]), submission) if found else None
        if submission["status"] != "dead_letter":  # stored by its run: not this one
            return None
    checked = check_stored_payload(store, sid, submission)
    if not checked.valid:
        return None
    resources, _ = accepted_resources(checked, sid)
    return next(((r, submission) for r in resources
                 if f"{r['resourceType']}/{r['id']}" == name), None)


def submission_resources(store: Store, submission_id: str) -> list[dict]:
    return [json.loads(store.document(d["id"])["content"])
            for d in store.documents(submission_id) if d["role"] == ROLE]


def member_identifiers(resource: dict) -> set[tuple[str | None, str]]:
    """(system, value) of the member a resource is about: Patient.identifier, the subject /
    for / beneficiary / patient reference's identifier, contained Patients' identifiers,
    Coverage.subscriberId (as a CIN)."""
    from gateway.fhir import CIN_SYSTEM

    found: set = set()

    def add(identifiers) -> None:
        if isinstance(identifiers, dict):
            identifiers = [identifiers]
        for ident in identifiers or ():
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                found.add((ident.get("system"), ident["value"]))

    if resource.get("resourceType") == "Patient":
        add(resource.get("identifier"))
    for key in ("subject", "for", "beneficiary", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict):
            add(ref.get("identifier"))
    for contained in resource.get("contained") or ():
        if isinstance(contained, dict) and contained.get("resourceType") == "Patient":
            add(contained.get("identifier"))
    if isinstance(resource.get("subscriberId"), str):
        found.add((CIN_SYSTEM, resource["subscriberId"]))
    return found


def own_identifiers(resource: dict) -> set[tuple[str | None, str]]:
    return {(i.get("system"), i["value"]) for i in resource.get("identifier") or ()
            if isinstance(i, dict) and isinstance(i.get("value"), str)}


def token_matches(token: str, identifiers: set[tuple[str | None, str]]) -> bool:
    """FHIR token search: ``system|value``, ``|value`` (no system), ``system|`` or ``value``."""
    if "|" not in token:
        return any(v == token for _, v in identifiers)
    system, _, value = token.partition("|")
    if not system and not value:
        return False
    return any((s == system if system else not s) and (not value or v == value)
               for s, v in identifiers)


def search_resources(store: Store, partner: Partner, resource_type: str, params: dict[str, str],
                     limit: int) -> list[dict]:
    """The partner's resources of ``resource_type`` whose identifiers match every search
    parameter (``identifier``: the resource's own; the others: its member's), at most
    ``limit``. Resources not yet stored by their runs are read from the kept payload first: one
    whose run finishes meanwhile is then among the stored ones (and skipped), never in neither."""

    def candidates():
        yield from pending_resources(store, partner, resource_type)
        for doc in stored_resources(store, partner, resource_type):
            found = store.document(doc["id"])
            if found is not None:
                yield json.loads(found["content"])

    matches, seen = [], set()
    for resource in candidates():
        if resource["id"] in seen:
            continue
        seen.add(resource["id"])
        if all(token_matches(token, own_identifiers(resource) if key == "identifier"
                             else member_identifiers(resource))
               for key, token in params.items()):
            matches.append(resource)
            if len(matches) >= limit:
                break
    return matches
