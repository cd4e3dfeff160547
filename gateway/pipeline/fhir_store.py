"""FHIR resources as a server keeps them: versions, updates and search (the pipeline part;
the API only parses and answers).

* **Versions.** Version 1 of a resource is its create (the submission its gateway id names);
  each accepted update (``PUT``) is a submission of its own (the raw body kept, the audit entry
  written) and a row of the store's ``fhir_versions`` table, in the same transaction
  (:meth:`Store.receive` ``version``), only while the version it replaces is still the latest
  (else :class:`VersionConflict`: 412). Every answer carries the server's ``meta.versionId``
  and ``meta.lastUpdated`` (:func:`stamped`).
* **Updates** (:func:`update`): Task, CarePlan and ServiceRequest; the body is validated as a
  create is; a Task's status change must follow the closed loop
  (``mappings/fhir/task-closed-loop.yaml``); an update that changes nothing makes no version.
  The update's queued run stores the new version under the resource's id and routes it like a
  create: a Task's change becomes one RTF row (Referral Status, Date of Referral Status
  Update, Reason for Referral (Loop) Closure) for the member's plan.
* **Search** (:func:`search`): the partner's own resources, latest versions, filtered by
  ``_id``, ``identifier``, ``patient``/``subject`` (a reference, or the member's identifier
  chained as ``patient.identifier``), ``status`` and ``_lastUpdated``, in a stable order (of
  creation) for paging.

Nothing here is reachable for another partner's resources: they are "not found".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.fhir.closed_loop import closed_loop
from gateway.fhir.intake import (
    ROLE,
    member_identifiers,
    own_identifiers,
    submission_name,
    submission_of,
    token_matches,
)
from gateway.fhir.parse import to_json_bytes
from gateway.fhir.validate import check_payload
from gateway.findings import Finding
from gateway.pipeline.fhir_resources import find_resource, pending_resources
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.process import submit
from gateway.pipeline.steps.fhir import routing_problems
from gateway.pipeline.store import Store, VersionConflict
from gateway.rules import default_catalogue

UPDATABLE = ("ServiceRequest", "CarePlan", "Task")
# the search parameters of each type (besides _id, _lastUpdated, identifier and the paging
# and summary ones): FHIR R4's names and what they look at
MEMBER_REFERENCES = {"ServiceRequest": ("subject",), "CarePlan": ("subject",),
                     "Task": ("for",), "Coverage": ("beneficiary",), "Patient": (),
                     "Consent": ("patient",)}
HAS_STATUS = ("ServiceRequest", "CarePlan", "Task", "Coverage", "Consent")


class Refused(Exception):
    """An update or search refused: HTTP status and findings (nothing stored, nothing
    routed)."""

    def __init__(self, status: int, findings: list[Finding], headers: dict | None = None):
        super().__init__(status)
        self.status, self.findings, self.headers = status, findings, headers or {}


def _finding(rule: str, location: str = "", **values) -> list[Finding]:
    found = default_catalogue().finding(rule, location, None, **values)
    return [found] if found is not None else []


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def with_meta(resource: dict, version: int, last_updated: datetime) -> dict:
    """The resource with the server's ``meta.versionId`` and ``meta.lastUpdated`` (whatever
    the client sent there is replaced; its profiles and tags stay)."""
    meta = dict(resource.get("meta") or {})
    meta.update(versionId=str(version), lastUpdated=_iso(last_updated))
    return {**{k: v for k, v in resource.items() if k != "meta"}, "meta": meta}


@dataclass
class Version:
    """One version of a resource as answered: the resource (with meta), its number, when it was
    made and the submission that made it."""

    resource: dict
    version: int
    last_updated: datetime
    submission: dict

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


def stamped(store: Store, resource: dict, submission: dict) -> Version:
    """A resource as found (:func:`find_resource`) with its version: an update's row, else
    version 1 made when its create was received."""
    row = store.version_of_submission(submission["id"])
    if row is not None:
        return Version(with_meta(resource, row["version"], row["last_updated"]), row["version"],
                       row["last_updated"], submission)
    return created_version(resource, submission)


def created_version(resource: dict, submission: dict) -> Version:
    """Version 1 of a resource its create made (received with its submission)."""
    return Version(with_meta(resource, 1, submission["created_at"]), 1,
                   submission["created_at"], submission)


def current(store: Store, partner: Partner, resource_type: str, resource_id: str
            ) -> Version | None:
    """The latest version of one of the partner's resources (None: unknown, or another
    partner's)."""
    found = find_resource(store, partner, resource_type, resource_id)
    return stamped(store, *found) if found is not None else None


def latest_update(store: Store, partner: Partner, resource_type: str, resource_id: str
                  ) -> tuple[dict, dict] | None:
    """The latest version an update made of a resource, as :func:`find_resource` answers
    (resource, submission); None when it was never updated or is another partner's."""
    rows = store.resource_versions(resource_type, resource_id)
    if not rows or rows[0]["partner"] != partner.id or not rows[0]["content"]:
        return None
    row = rows[0]
    return json.loads(row["content"]), store.submission(row["submission_id"])


def history(store: Store, partner: Partner, resource_type: str, resource_id: str
            ) -> list[Version] | None:
    """Every version of one of the partner's resources, newest first."""
    latest = current(store, partner, resource_type, resource_id)
    if latest is None:
        return None
    versions = [Version(json.loads(r["content"]), r["version"], r["last_updated"],
                        store.submission(r["submission_id"]))
                for r in store.resource_versions(resource_type, resource_id)
                if r["content"]]  # retention empties the content of old versions
    sid = submission_of(resource_id)
    first = find_resource(store, partner, resource_type, resource_id, original=True) \
        if sid else None
    if first is not None:
        versions.append(stamped(store, *first))
    return versions


def vread(store: Store, partner: Partner, resource_type: str, resource_id: str,
          version: str) -> Version | None:
    found = history(store, partner, resource_type, resource_id) or []
    return next((v for v in found if str(v.version) == version), None)


# -- updates -------------------------------------------------------------------------------------
def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header names (``W/"3"``, ``"3"``); None without one."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise Refused(400, _finding("FHIR-API-004", "", problem="If-Match must be a version "
                                    'ETag such as W/"1" (as answered in ETag)'))
    return int(text)


def _same_content(a: dict, b: dict) -> bool:
    strip = lambda r: {k: v for k, v in r.items() if k not in ("meta", "id")}  # noqa: E731
    profiles = lambda r: (r.get("meta") or {}).get("profile")  # noqa: E731
    return strip(a) == strip(b) and profiles(a) == profiles(b)


@dataclass
class Updated:
    version: Version
    changed: bool  # False: the body equals the latest version (no new version)
    findings: list[Finding]


def update(store: Store, partners: Partners, partner: Partner, resource_type: str,
           resource_id: str, payload: bytes, fmt: str, if_match: str | None, queue=None,
           conditional: bool = False) -> Updated:
    """Update one of the partner's resources (see the module's doc). Refused (nothing stored,
    nothing routed): an unreadable or invalid body (400 / 422), a body whose id is not the
    URL's (400), an unknown resource or another partner's (404), a stale ``If-Match`` (412), a
    Task status change the closed loop does not allow (422), a version that could not be
    routed (422, the routing findings, as a create)."""
    version_wanted = parse_if_match(if_match)
    checked = check_payload(payload, fmt, expected=resource_type)
    if not checked.valid or not checked.entries:
        fatal = checked.data is None
        raise Refused(400 if fatal else 422, checked.findings)
    new = dict(checked.entries[0].data)
    sent_id = new.get("id")
    if sent_id is None and conditional:
        new["id"] = sent_id = resource_id
    if sent_id != resource_id:
        raise Refused(400, _finding("FHIR-API-011", "id", problem="the body has "
                                    + ("no id" if sent_id is None else "another id")))
    latest = current(store, partner, resource_type, resource_id)
    if latest is None:
        raise Refused(404, _finding("FHIR-API-002", "", what=f"{resource_type}/"
                                    f"{_safe(resource_id)}"))
    if version_wanted is not None and version_wanted != latest.version:
        raise Refused(412, _finding("FHIR-API-010", "", latest=latest.version,
                                    found=version_wanted), {"ETag": latest.etag})
    if resource_type == "Task":
        before, after = latest.resource.get("status"), new.get("status")
        allowed = closed_loop().refusal(before, after)
        if allowed is not None:
            raise Refused(422, _finding("FHIR-LOOP-001", "Task.status", current=before,
                                        new=after, allowed=", ".join(allowed) or
                                        "nothing (the loop is closed)"))
    if _same_content(latest.resource, new):
        return Updated(latest, False, checked.findings + _finding(
            "FHIR-API-014", "", version=latest.version))
    # what a create must be, an update must stay: routable (one definition, as for a create:
    # routing_problems); a version that could not be routed is refused, nothing stored
    problems = routing_problems(store, partners, partner, [new], [sent_id])
    if problems:
        raise Refused(422, problems)
    number = latest.version + 1

    def content(now: datetime) -> bytes:
        return to_json_bytes(with_meta(new, number, now))

    try:
        done = submit(store, partners, partner, channel="api", kind="fhir",
                      filename=submission_name(resource_type, fmt), payload=payload,
                      queue=queue, version={"resource_type": resource_type,
                                            "resource_id": resource_id, "version": number,
                                            "status": new.get("status"), "content": content})
    except VersionConflict as conflict:  # another update came first
        raise Refused(412, _finding("FHIR-API-010", "", latest=conflict.latest,
                                    found=latest.version)) from None
    store.audit(actor=partner.id, action="update",
                target=f"{resource_type}/{resource_id}/_history/{number}",
                detail=f"submission {done.submission_id}")
    made = current(store, partner, resource_type, resource_id)
    return Updated(made, True, checked.findings)


def _safe(text: str) -> str:
    return "".join(c for c in text if c.isalnum() or c in "-.")[:64] or "(empty)"


# -- search ---------------------------------------------------------------------------------------
# paging and answer-shaping parameters (the API's); _total / _totalMethod (sent by clients
# such as fhirpy's count()) change nothing: the total is always counted
PAGING = ("_count", "_offset", "_summary", "_format", "_total", "_totalMethod")


def search_parameters(resource_type: str) -> list[tuple[str, str, str]]:
    """(name, type, documentation) of the search parameters of a type: what search accepts
    and the CapabilityStatement lists."""
    params = [("_id", "token", "the resource's id (several: comma-separated)"),
              ("_lastUpdated", "date", "when the latest version was made (prefixes eq, ne, "
                                       "gt, ge, lt, le; may be repeated)"),
              ("identifier", "token", "the resource's own identifier (system|value)")]
    if MEMBER_REFERENCES.get(resource_type):
        params.append(("patient", "reference", "the member: Patient/<id> as referenced"))
    params.append(("patient.identifier", "token", "the member's identifier, e.g. the "
                                                  "Medi-Cal CIN (system|value)"))
    if MEMBER_REFERENCES.get(resource_type):
        if resource_type not in ("Coverage", "Consent"):
            params += [("subject", "reference", "the member (as patient)"),
                       ("subject.identifier", "token", "the member's identifier (as "
                                                       "patient.identifier)")]
    if resource_type in HAS_STATUS:
        params.append(("status", "token", "the resource's status (several: comma-separated)"))
    return params


def _date_matches(value: str, moment: datetime) -> bool:
    prefix = value[:2] if value[:2] in ("eq", "ne", "gt", "ge", "lt", "le") else "eq"
    text = value[2:] if value[:2] == prefix else value
    try:
        bound = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, _finding("FHIR-API-004", "", problem="_lastUpdated must be a "
                                    "date or dateTime with an optional prefix (ge2026-01-01)"
                                    )) from None
    date_only = len(text) == 10
    if bound.tzinfo is None:
        bound = bound.replace(tzinfo=UTC)
    if date_only:  # a day: the whole day, compared by date
        day, other = moment.astimezone(bound.tzinfo).date(), bound.date()
        return {"eq": day == other, "ne": day != other, "gt": day > other,
                "ge": day >= other, "lt": day < other, "le": day <= other}[prefix]
    return {"eq": moment == bound, "ne": moment != bound, "gt": moment > bound,
            "ge": moment >= bound, "lt": moment < bound, "le": moment <= bound}[prefix]


def _reference_matches(value: str, resource: dict, keys: tuple[str, ...]) -> bool:
    wanted = {value, f"Patient/{value}"} if "/" not in value else {value}
    for key in keys:
        ref = resource.get(key)
        reference = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(reference, str) and (reference in wanted or
                                           any(reference.endswith("/" + w) for w in wanted)):
            return True
    return False


def _matches(resource: dict, last_updated: datetime, params: list[tuple[str, str]]) -> bool:
    rtype = resource["resourceType"]
    for key, value in params:
        values = [v for v in value.split(",") if v]
        if key == "_id":
            ok = resource["id"] in values
        elif key == "_lastUpdated":
            ok = _date_matches(value, last_updated)
        elif key == "identifier":
            ok = any(token_matches(v, own_identifiers(resource)) for v in values)
        elif key in ("patient", "subject"):
            ok = any(_reference_matches(v, resource, MEMBER_REFERENCES[rtype]) for v in values)
        elif key == "status":
            ok = resource.get("status") in values
        else:  # the member's identifier, chained
            ok = any(token_matches(v, member_identifiers(resource)) for v in values)
        if not ok:
            return False
    return True


ALIASES = {"patient:identifier": "patient.identifier", "subject:identifier": "subject.identifier"}


def check_search_params(resource_type: str, params: list[tuple[str, str]]
                        ) -> list[tuple[str, str]]:
    """The filtering parameters (names normalised); 400 for one the type does not support."""
    known = {name for name, _, _ in search_parameters(resource_type)} | {"patient:identifier",
                                                                        "subject:identifier"}
    unknown = [k for k, _ in params if k not in known and k not in PAGING]
    if unknown:
        raise Refused(400, _finding("FHIR-API-004", "", problem="unknown search parameter "
                                    f"{_safe(unknown[0])} for {resource_type}; supported: "
                                    + ", ".join(sorted(known | set(PAGING)))))
    return [(ALIASES.get(k, k), v) for k, v in params if k not in PAGING]


def search(store: Store, partner: Partner, resource_type: str,
           params: list[tuple[str, str]], limit: int | None = None) -> list[Version]:
    """The partner's resources of ``resource_type`` (their latest versions) matching every
    parameter (:func:`check_search_params`), oldest first (the order of their creates, so a
    client paging through sees each once), at most ``limit`` (None: all). Resources whose queued run has
    not stored them yet are read from the kept payload."""
    filters = check_search_params(resource_type, params)
    updated = store.latest_versions(partner.id, resource_type)
    seen: dict[str, Version] = {}
    for resource in pending_resources(store, partner, resource_type):
        if resource["id"] not in seen:
            submission = store.submission(submission_of(resource["id"]))
            seen[resource["id"]] = stamped(store, resource, submission)
    for row in store.stored_resources(partner.id, ROLE, resource_type):
        rid = row["name"].partition("/")[2]
        if rid in seen or not row["content"]:
            continue
        # as stored by its create: version 1, made when the create was received
        submission = {"id": row["submission_id"], "created_at": row["created_at"]}
        seen[rid] = Version(with_meta(json.loads(row["content"]), 1, row["created_at"]), 1,
                            row["created_at"], submission)
    matches = []
    for rid, version in seen.items():
        row = updated.get(rid)
        if row is not None and row["content"]:
            version = Version(json.loads(row["content"]), row["version"], row["last_updated"],
                              version.submission)
        if _matches(version.resource, version.last_updated, filters):
            matches.append(version)
    matches.sort(key=lambda v: (v.submission["created_at"], v.resource["id"]))
    return matches if limit is None else matches[:limit]
