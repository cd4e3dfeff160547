"""FHIR intake helpers that are pure (no store, no routing): the gateway's resource ids, the
resources of a valid payload as the gateway keeps them, and the identifiers a search matches.
The store side (reading, searching stored resources) is :mod:`gateway.pipeline.fhir_resources`;
the processing step (validation, storage, routing) is :mod:`gateway.pipeline.steps.fhir`."""

from __future__ import annotations

import copy

from gateway.fhir import CIN_SYSTEM
from gateway.fhir.validate import Checked

ROLE = "fhir-resource"  # the role of a stored resource document
ROUTE_KIND = "fhir"  # the partner file's route for documents made from FHIR submissions


def submission_name(expected: str, fmt: str) -> str:
    return f"{expected}.{fmt}"


def _expected_and_format(filename: str | None) -> tuple[str, str]:
    name, _, fmt = (filename or "Resource.json").rpartition(".")
    return name or "Resource", fmt if fmt in ("json", "xml") else "json"


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
    if full_urls:  # rewritten in copies: the checked payload stays as sent
        resources = copy.deepcopy(resources)
        _resolve_references(resources, full_urls)
    return resources, sent_ids


def member_identifiers(resource: dict) -> set[tuple[str | None, str]]:
    """(system, value) of the member a resource is about: Patient.identifier, the subject /
    for / beneficiary / patient reference's identifier, contained Patients' identifiers,
    Coverage.subscriberId (as a CIN)."""
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
