"""FHIR submissions in the pipeline (kind ``fhir``): the processing step and the stored
resources.

A FHIR create (``POST /fhir/{type}``) or transaction Bundle is one submission: the raw payload
is the submission (kept by :meth:`Store.receive` before anything else), its findings are the
submission's findings, and every accepted resource is a document of the submission with role
``fhir-resource``, name ``{type}/{id}``, the resource's JSON as content and the submitting
partner as recipient (so only that partner can read or search it). The submission's filename
is ``{expected type}.{json|xml}``: what the step needs to run the payload again (replay).
"""

from __future__ import annotations

import json
import uuid

from gateway.fhir import JSON_MEDIA
from gateway.fhir.parse import to_json_bytes
from gateway.fhir.validate import check_payload
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.steps import STEPS, Outcome
from gateway.pipeline.store import Store

ROLE = "fhir-resource"


def submission_name(expected: str, fmt: str) -> str:
    return f"{expected}.{fmt}"


def _expected_and_format(filename: str | None) -> tuple[str, str]:
    name, _, fmt = (filename or "Resource.json").rpartition(".")
    return name or "Resource", fmt if fmt in ("json", "xml") else "json"


def route_resource(store: Store, partners: Partners, partner: Partner, submission_id: str,
                   resource: dict) -> str | None:
    """INTEGRATION POINT for the FHIR mappings (gateway.fhir.mapping): called once for every
    accepted resource of a submission, after it is stored. A ServiceRequest becomes a referral
    routed to the member's plan (authorization deadline in the submission summary), a Task or
    CarePlan becomes RTF fields / 837P lines for the plan. Returns the new submission status
    (``routed``) when something was routed, else None. Nothing is routed yet."""
    return None


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


def process_fhir(store: Store, partners: Partners, partner: Partner, submission_id: str
                 ) -> Outcome:
    """Validate a stored FHIR payload; when it has no error, store its resources (a resource,
    or every entry of a transaction Bundle) with gateway-assigned ids. Status ``validated``
    (or what routing made of it), else ``rejected``."""
    found = store.submission(submission_id)
    expected, fmt = _expected_and_format(found.get("filename"))
    store.attempt(submission_id)
    checked = check_payload(store.raw_payload(submission_id), fmt,
                            expected=None if expected == "Resource" else expected)
    if checked.findings:
        store.add_findings(submission_id, checked.findings)
    if not checked.valid or not checked.entries:
        store.set_summary(submission_id, {"kind": "fhir", "valid": False,
                                          "resource_type": checked.resource_type})
        store.set_status(submission_id, "rejected", error="the FHIR payload has errors")
        return Outcome(submission_id, "rejected", False, None, len(checked.findings))
    resources, full_urls = [], {}
    bundle_entries = (checked.data or {}).get("entry") or []
    for entry in checked.entries:
        resource = dict(entry.data)
        resource["id"] = uuid.uuid4().hex
        resources.append(resource)
        if entry.index is not None and isinstance(bundle_entries[entry.index], dict):
            full_url = bundle_entries[entry.index].get("fullUrl")
            if isinstance(full_url, str):
                full_urls[full_url] = f"{resource['resourceType']}/{resource['id']}"
    _resolve_references(resources, full_urls)
    stored = []
    for resource in resources:
        store.add_document(
            submission_id, role=ROLE, name=f"{resource['resourceType']}/{resource['id']}",
            content=to_json_bytes(resource), media_type=JSON_MEDIA, recipient=partner.id)
        stored.append(f"{resource['resourceType']}/{resource['id']}")
    store.set_summary(submission_id, {"kind": "fhir", "valid": True,
                                      "resource_type": checked.resource_type,
                                      "resources": stored})
    store.set_status(submission_id, "validated")
    status = "validated"
    for resource in resources:
        status = route_resource(store, partners, partner, submission_id, resource) or status
    return Outcome(submission_id, status, True, None, len(checked.findings))


# the pipeline runs kind "fhir" with this step (integrator: add it to STEPS in steps.py)
STEPS.setdefault("fhir", process_fhir)


def stored_resources(store: Store, partner: Partner, resource_type: str | None = None
                     ) -> list[dict]:
    """The partner's stored FHIR resources (documents, newest first, without content)."""
    prefix = f"{resource_type}/" if resource_type else ""
    return [d for d in store.mailbox(partner.id)
            if d["role"] == ROLE and d["name"].startswith(prefix)]


def read_resource(store: Store, partner: Partner, resource_type: str, resource_id: str
                  ) -> dict | None:
    """One of the partner's resources, or None (also for another partner's)."""
    name = f"{resource_type}/{resource_id}"
    for doc in stored_resources(store, partner, resource_type):
        if doc["name"] == name:
            found = store.document(doc["id"])
            return json.loads(found["content"]) if found else None
    return None


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
