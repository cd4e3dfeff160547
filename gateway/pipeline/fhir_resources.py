"""Stored FHIR resources (the store side of FHIR intake): a FHIR create (``POST /fhir/{type}``)
or transaction Bundle is one submission: the raw payload is the submission (kept by
:meth:`Store.receive`), its findings are the submission's findings, and every accepted resource
is a document of the submission with role ``fhir-resource``, name ``{type}/{id}``, the
resource's JSON as content and the submitting partner as recipient (so only that partner can
read or search it). The submission's filename is ``{expected type}.{json|xml}``: what the step
needs to run the payload again (replay).

A resource's gateway id is made from its submission's id and its position
(:func:`gateway.fhir.intake.resource_id`), so the API answers with it before the run, a re-run
stores the same ids, and a read or search before the run finds the resource from the kept
payload (:func:`find_resource`, :func:`pending_resources`)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

from gateway.fhir.intake import (
    ROLE,
    _expected_and_format,
    accepted_resources,
    submission_of,
)
from gateway.fhir.validate import Checked, check_payload
from gateway.pipeline.partners import Partner
from gateway.pipeline.store import Store
from gateway.pipeline.status import Status


# what the API's request found checking a payload, for its queued run in the same process
# (embedded workers): the check is a pure function of the payload, its format and the expected
# type, so the run takes the request's answer instead of parsing the payload again (the
# fhir.resources models are the costly part of a create); a run in another process, or
# later, checks again. Small payloads only; the latest few.
_CHECKED: OrderedDict[tuple, Checked] = OrderedDict()
_CHECKED_LOCK = threading.Lock()
CHECKED_KEPT = 256
CHECKED_MAX_BYTES = 256 * 1024


def _checked_key(digest: str, fmt: str, expected: str | None) -> tuple:
    return digest, fmt, expected or "Resource"


def remember_checked(payload: bytes, fmt: str, expected: str | None, checked: Checked) -> None:
    """Keep the request's check of ``payload`` for its run (:func:`check_stored_payload`)."""
    if len(payload) > CHECKED_MAX_BYTES or not checked.entries:
        return
    key = _checked_key(hashlib.sha256(payload).hexdigest(), fmt, expected)
    with _CHECKED_LOCK:
        _CHECKED[key] = checked
        _CHECKED.move_to_end(key)
        while len(_CHECKED) > CHECKED_KEPT:
            _CHECKED.popitem(last=False)


# the same, by submission id, for the creates this process received: their run here needs
# neither the submission's row (to find the check by its hash) nor a look for an update's
# version (a create is no update)
_CREATED: OrderedDict[str, Checked] = OrderedDict()


def remember_created(submission_id: str, checked: Checked) -> None:
    """The check of a create (``POST /fhir/{type}``) the API just stored as ``submission_id``,
    for its run in this process (:func:`created_check`)."""
    if not checked.entries:
        return
    with _CHECKED_LOCK:
        _CREATED[submission_id] = checked
        while len(_CREATED) > CHECKED_KEPT:
            _CREATED.popitem(last=False)


def created_check(submission_id: str) -> Checked | None:
    """The check of a create received by this process (:func:`remember_created`), or None
    (another process received it, long ago, or it is no create: validate it again)."""
    with _CHECKED_LOCK:
        return _CREATED.get(submission_id)


def check_stored_payload(store: Store, submission_id: str, found: dict | None = None
                         ) -> Checked:
    """Validate a FHIR submission's raw payload again, as its run does (or take the answer
    the request that received it found, :func:`remember_checked`)."""
    found = found or store.submission(submission_id)
    expected, fmt = _expected_and_format(found.get("filename"))
    expected = None if expected == "Resource" else expected
    if found.get("sha256"):
        with _CHECKED_LOCK:
            kept = _CHECKED.get(_checked_key(found["sha256"], fmt, expected))
        if kept is not None:
            return kept
    return check_payload(store.raw_payload(submission_id), fmt, expected=expected)


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
        if submission["kind"] != "fhir" or submission["run_state"] == "done" \
                or store.version_of_submission(submission["id"]) is not None:
            continue  # stored by its run, or an update (a version of another resource)
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


def find_resource(store: Store, partner: Partner, resource_type: str, resource_id: str,
                  original: bool = False) -> tuple[dict, dict] | None:
    """One of the partner's resources (its latest version: an update's, see
    :mod:`gateway.pipeline.fhir_store`; ``original``: its create) and the submission that made
    it, or None (also for another partner's). A resource accepted by the API whose submission's
    run has not stored it yet (queued, running, or dead-lettered) is read from the submission's
    raw payload, so a read right after a create finds it."""
    name = f"{resource_type}/{resource_id}"
    if not original:
        versions = store.resource_versions(resource_type, resource_id)
        if versions:
            if versions[0]["partner"] != partner.id:
                return None
            resource = loaded(versions[0]["content"])
            return (resource, store.submission(versions[0]["submission_id"])) \
                if resource is not None else None
    sid = submission_of(resource_id)
    submission = store.submission(sid) if sid else None
    if submission is not None and store.version_of_submission(sid) is not None:
        return None  # an update's submission names no resource of its own
    if submission is None:  # an id from before ids named their submission: look them up
        for doc in stored_resources(store, partner, resource_type):
            if doc["name"] == name:
                found = store.document(doc["id"])
                resource = loaded(found["content"]) if found else None
                return (resource, store.submission(doc["submission_id"])) \
                    if resource is not None else None
        return None
    if submission["partner"] != partner.id or submission["kind"] != "fhir" \
            or submission["status"] == Status.REJECTED:
        return None
    if submission["run_state"] == "done":
        for doc in store.documents(sid):
            if doc["role"] == ROLE and doc["name"] == name and doc["recipient"] == partner.id:
                found = store.document(doc["id"])
                resource = loaded(found["content"]) if found else None
                return (resource, submission) if resource is not None else None
        if submission["status"] != Status.DEAD_LETTER:  # stored by its run: not this one
            return None
    try:
        checked = check_stored_payload(store, sid, submission)
    except KeyError:  # its payload was purged (retention)
        return None
    if not checked.valid:
        return None
    resources, _ = accepted_resources(checked, sid)
    return next(((r, submission) for r in resources
                 if f"{r['resourceType']}/{r['id']}" == name), None)


def submission_resources(store: Store, submission_id: str) -> list[dict]:
    found = (loaded(store.document(d["id"])["content"])
             for d in store.documents(submission_id) if d["role"] == ROLE)
    return [r for r in found if r is not None]


def loaded(content: bytes) -> dict | None:
    """A stored resource's JSON; None once retention purged it (its content emptied)."""
    return json.loads(content) if content else None
