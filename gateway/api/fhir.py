"""The FHIR R4 API under ``/fhir`` (contract.md).

* ``GET /fhir/metadata`` — the CapabilityStatement (no token);
* ``POST /fhir/{type}`` — create a ServiceRequest, CarePlan, Task, Patient or Coverage: the
  payload is validated in the request (structure, ECM profile, ECM rules) and kept as a
  submission of kind ``fhir`` (one transaction), handed to the queue, and answered 201 with
  the resource under its gateway id (:func:`gateway.fhir.intake.resource_id`), its
  ``Location`` and ``X-Submission-Id``; or 400 (unreadable) / 422 (invalid) with an
  OperationOutcome (the submission recorded as rejected). The queued run
  (:func:`gateway.pipeline.steps.fhir.process_fhir`) stores the resource and routes it; until then a
  read or search finds it from the kept payload;
* ``POST /fhir`` — a Bundle of type ``batch`` (each entry on its own: batch-response) or
  ``transaction`` (all or nothing: transaction-response, or 422 with every entry's issues);
* ``POST /fhir/{type}/$validate`` — 200 with the OperationOutcome; nothing is stored;
* ``GET /fhir/{type}/{id}`` and ``GET /fhir/{type}?identifier=`` / ``?patient.identifier=`` —
  the calling partner's own resources only (another partner's answer 404 / are not found); a
  read carries ``X-Submission-Id`` and, once a referral is routed, ``X-Authorization-Deadline``
  and ``X-Referral-Priority``.

JSON and XML both ways: the request format from Content-Type (or the first byte), the answer
format from ``_format`` or ``Accept``. Every error under ``/fhir`` — authentication, unknown
URL, method, size, media type, FastAPI's own validation — is an OperationOutcome with a 4xx;
the rest of the API keeps its JSON errors.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.utils import format_datetime
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.fhir import ECM_PROFILES, FHIR_VERSION, JSON_MEDIA, RULE_SYSTEM, XML_MEDIA
from gateway.fhir.intake import accepted_resources, submission_name
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.parse import (
    MAX_BODY_BYTES,
    format_of,
    is_resource_type,
    serialise,
)
from gateway.fhir.validate import ACCEPTED, check_payload
from gateway.findings import Finding
from gateway.api.smart import TOKEN_PATH, Client, needed, public_base
from gateway.pipeline import fhir_store
from gateway.pipeline.fhir_resources import (
    check_stored_payload,
    remember_checked,
    remember_created,
    routing_of,
    submission_resources,
)
from gateway.pipeline.fhir_store import UPDATABLE, Refused, Version
from gateway.pipeline.partners import Partner
from gateway.pipeline.steps.fhir import routing_problems
from gateway.pipeline.process import submit
from gateway.pipeline.queue import API_LOAD
from gateway.rules import default_catalogue
from gateway.settings import current as settings
from gateway.pipeline.status import Status

log = logging.getLogger("gateway.api.fhir")
PREFIX = "/fhir"
MAX_SEARCH_RESULTS = 1000  # the largest page (_count)
DEFAULT_PAGE = 50  # search results per page without _count


class FhirError(Exception):
    """An error answered with an OperationOutcome."""

    def __init__(self, status: int, findings: list[Finding], headers: dict | None = None):
        super().__init__(status)
        self.status = status
        self.findings = findings
        self.headers = headers or {}


def _finding(rule: str, location: str = "", **values) -> list[Finding]:
    found = default_catalogue().finding(rule, location, None, **values)
    return [found] if found is not None else []


def answer_format(request: Request) -> str:
    """``json`` or ``xml`` from ``_format`` (wins) or ``Accept``; JSON by default."""
    wanted = request.query_params.get("_format")
    if wanted:
        fmt = format_of(wanted)
        if fmt is None:
            raise FhirError(406, _finding("FHIR-API-005", "", found=_safe(wanted)))
        return fmt
    accept = request.headers.get("accept", "").lower()
    if "xml" in accept and "json" not in accept:
        return "xml"
    return "json"


def _safe(text: str) -> str:
    return "".join(c for c in text if c.isalnum() or c in "+/-.;=")[:80] or "(empty)"


def fhir_response(resource: dict, status: int, fmt: str, headers: dict | None = None
                  ) -> Response:
    media = XML_MEDIA if fmt == "xml" else JSON_MEDIA
    return Response(serialise(resource, fmt), status_code=status, headers=headers,
                    media_type=f"{media}; charset=utf-8")


def outcome_response(request: Request, status: int, findings: list[Finding],
                     headers: dict | None = None) -> Response:
    try:
        fmt = answer_format(request)
    except FhirError:
        fmt = "json"
    return fhir_response(operation_outcome(findings), status, fmt, headers)


async def read_body(request: Request) -> tuple[bytes, str]:
    """The body (at most :data:`MAX_BODY_BYTES`) and its format; 413 / 415 otherwise."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise FhirError(413, _finding("FHIR-PARSE-007", "", size=int(declared),
                                      limit=MAX_BODY_BYTES))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise FhirError(413, _finding("FHIR-PARSE-007", "", size=f"more than {size}",
                                          limit=MAX_BODY_BYTES))
        chunks.append(chunk)
    payload = b"".join(chunks)
    media = request.headers.get("content-type")
    fmt = format_of(media, payload)
    if fmt is None:
        if media:
            raise FhirError(415, _finding("FHIR-PARSE-012", "", found=_safe(media)))
        fmt = "json"  # nothing to go by: the JSON reader explains what is wrong
    return payload, fmt


def resource_headers(submission: dict, name: str) -> dict[str, str]:
    """``X-Submission-Id`` of a resource's submission and, once its routing has run, a
    referral's ``X-Authorization-Deadline`` and ``X-Referral-Priority`` (expedited or
    routine)."""
    headers = {"X-Submission-Id": submission["id"]}
    if submission.get("run_state") == "done":
        entry = routing_of(submission, name)
        if entry.get("authorization_deadline"):
            headers["X-Authorization-Deadline"] = str(entry["authorization_deadline"])
            headers["X-Referral-Priority"] = str(entry.get("priority") or "")
    return headers


def created_outcome(findings: list[Finding], location: str, submission_id: str) -> dict:
    """The OperationOutcome of a successful create: the validation issues (warnings,
    information; a valid resource has no error), then one ``information`` issue saying it
    was created and where its routing, which runs queued, will be shown."""
    issues = operation_outcome(findings)["issue"] if findings else []
    issues.append({"severity": "information", "code": "informational", "details": {
        "coding": [{"system": RULE_SYSTEM, "code": "FHIR-API-009"}],
        "text": f"created {location}; routed to the member's plan next: see "
                f"/submissions/{submission_id}"}})
    return {"resourceType": "OperationOutcome", "issue": issues}


def _number(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise FhirError(400, _finding("FHIR-API-004", "", problem=f"{name} must be a number "
                                      "(0 or more)"))
    return int(value)


def search_links(base: str, request: Request, resource_type: str,
                 params: list[tuple[str, str]], offset: int, count: int, total: int
                 ) -> list[dict]:
    """``self``, ``first``, ``previous`` and ``next`` of a search page (absolute URLs with the
    same parameters, ``_count`` and ``_offset``)."""
    kept = [(k, v) for k, v in params if k not in ("_count", "_offset")]
    fmt = request.query_params.get("_format")
    if fmt:
        kept.append(("_format", fmt))

    def url(at: int) -> str:
        query = urlencode(kept + [("_count", str(count)), ("_offset", str(at))])
        return f"{base}{PREFIX}/{resource_type}?{query}"

    links = [{"relation": "self", "url": url(offset)}, {"relation": "first", "url": url(0)}]
    if offset > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    if offset + count < total:
        links.append({"relation": "next", "url": url(offset + count)})
    return links


def _entry_of(location: str) -> int | None:
    """The Bundle entry a finding's location is in (``Bundle.entry[3]...`` → 3)."""
    if not location.startswith("Bundle.entry["):
        return None
    number = location[len("Bundle.entry["):].partition("]")[0]
    return int(number) if number.isdigit() else None


def _fatal(findings: list[Finding]) -> bool:
    catalogue = default_catalogue()
    return any(catalogue.rule(f.rule).ack.get("fhir_severity") == "fatal"
               for f in findings if f.rule in catalogue)


def _accepted_type(resource_type: str) -> None:
    if resource_type not in ACCEPTED:
        raise FhirError(404, _finding("FHIR-PROFILE-010", resource_type
                                      if is_resource_type(resource_type) else "",
                                      found=_safe(resource_type), accepted=", ".join(ACCEPTED)))


def capability_statement(base: str = "") -> dict:
    """What the API supports, exactly: per type its interactions, versioning, conditional
    update and search parameters (:func:`gateway.pipeline.fhir_store.search_parameters`, plus
    ``_count``, ``_offset`` and ``_summary=count``), and SMART Backend Services security."""
    resources = []
    for rtype in ACCEPTED:
        updatable = rtype in UPDATABLE
        codes = ["create", "read", "vread", "history-instance", "search-type"] \
            + (["update"] if updatable else [])
        resources.append({
            "type": rtype,
            "profile": ECM_PROFILES.get(rtype, f"http://hl7.org/fhir/StructureDefinition/{rtype}"),
            "interaction": [{"code": c} for c in codes],
            "versioning": "versioned-update" if updatable else "versioned",
            "readHistory": True, "updateCreate": False,
            "conditionalCreate": False, "conditionalUpdate": updatable,
            "conditionalDelete": "not-supported",
            "searchParam": [{"name": name, "type": kind, "documentation": text}
                            for name, kind, text in fhir_store.search_parameters(rtype)],
            "operation": [{"name": "validate",
                           "definition": "http://hl7.org/fhir/OperationDefinition/"
                                         "Resource-validate"}]})
    security = {"cors": False, "service": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR"}]}],
        "description": "SMART Backend Services (client_credentials with a private_key_jwt "
                       "assertion, RS384 or ES384; system/ scopes; see "
                       ".well-known/smart-configuration), or a partner's static bearer token"}
    if base:
        security["extension"] = [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "token", "valueUri": base + TOKEN_PATH}]}]
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-12-04",
        "publisher": "ECM Gateway", "kind": "instance",
        "software": {"name": "ECM Gateway", "version": __version__},
        "implementation": {"description": "ECM Gateway FHIR API (ECM referrals, care plans, "
                                          "referral status)",
                           **({"url": base + PREFIX} if base else {})},
        "fhirVersion": FHIR_VERSION, "format": [JSON_MEDIA, XML_MEDIA, "json", "xml"],
        "rest": [{
            "mode": "server",
            "documentation": "Every interaction but metadata needs an access token (SMART "
                             "Backend Services) or the static bearer token of a trading "
                             "partner; a partner reads, updates and searches only what it "
                             "submitted. Search pages with _count (default "
                             f"{DEFAULT_PAGE}, at most {MAX_SEARCH_RESULTS}) and Bundle.link "
                             "next/previous; _summary=count answers the total only "
                             "(Bundle.total is always counted, so _total and _totalMethod "
                             "change nothing). Bodies are "
                             f"limited to {MAX_BODY_BYTES} bytes.",
            "security": security,
            "resource": resources,
            "interaction": [{"code": "batch"}, {"code": "transaction"}]}]}


class FhirInternalErrors:
    """ASGI middleware: an unexpected exception under /fhir (a bug, never bad input: that is
    answered by the handlers) becomes an OperationOutcome with code ``exception`` and status
    500, logged by class name only; other paths are left to the app's own handler."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if scope.get("method") == "POST":
                # meanwhile an embedded worker defers routing (it would take the GIL from
                # the answers; see gateway/pipeline/queue.py)
                with API_LOAD.request():
                    await self.app(scope, receive, tracking_send)
            else:
                await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("internal error on %s %s: %s", scope.get("method"), path,
                      exc.__class__.__name__)
            if started:
                raise
            body = json.dumps({"resourceType": "OperationOutcome", "issue": [
                {"severity": "fatal", "code": "exception",
                 "diagnostics": "internal error; the request was logged"}]}).encode()
            await send({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", f"{JSON_MEDIA}; charset=utf-8".encode()),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def allowed(client: Client, resource_type: str, interaction: str) -> Partner:
    """The calling partner, when the client's scopes allow ``interaction`` on the type (403
    with the scope it needs otherwise)."""
    if not client.allows(resource_type, interaction):
        raise FhirError(403, _finding("FHIR-API-012", "", interaction=interaction,
                                      resource_type=resource_type,
                                      needed=needed(resource_type, interaction)))
    return client.partner


def version_headers(version: Version, base: str, submission: dict | None = None) -> dict:
    """ETag, Last-Modified and the absolute Location of a resource version."""
    resource = version.resource
    return {"ETag": version.etag,
            "Last-Modified": format_datetime(version.last_updated, usegmt=True),
            "Location": f"{base}{PREFIX}/{resource['resourceType']}/{resource['id']}"
                        f"/_history/{version.version}",
            **resource_headers(submission or version.submission,
                               f"{resource['resourceType']}/{resource['id']}")}


class _FhirThreads:
    """The FHIR API's own threads: started at the first request, ended when the app shuts
    down (an app started again starts them again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=settings().fhir_threads,
                                                thread_name_prefix="fhir")
            return self._pool

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def install_fhir(app: FastAPI, client_of: Callable) -> None:
    """Add the ``/fhir`` routes and their OperationOutcome error handling to ``app``;
    ``client_of`` is the dependency that yields the calling :class:`Client` (partner and
    scopes: :mod:`gateway.api.smart`)."""

    app.add_middleware(FhirInternalErrors)

    def under_fhir(request: Request) -> bool:
        path = request.url.path
        return path == PREFIX or path.startswith(PREFIX + "/")

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        return outcome_response(request, exc.status, exc.findings, exc.headers)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return outcome_response(request, exc.status, exc.findings, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not under_fhir(request):
            return await http_exception_handler(request, exc)
        status = exc.status_code if 400 <= exc.status_code < 500 else 400
        headers = dict(exc.headers or {})
        if status == 401:
            findings = _finding("FHIR-API-001")
        elif status == 404:
            findings = _finding("FHIR-API-002", "", what="the URL " + _safe(request.url.path))
        elif status == 405:
            findings = _finding("FHIR-API-003", "", method=_safe(request.method))
        elif status == 413:
            findings = _finding("FHIR-PARSE-007", "", size="too many",
                                limit=MAX_BODY_BYTES)
        elif status == 415:
            findings = _finding("FHIR-PARSE-012", "",
                                found=_safe(request.headers.get("content-type", "")))
        else:
            findings = _finding("FHIR-API-007", "", problem=_safe(str(exc.detail)))
        return outcome_response(request, status, findings, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if not under_fhir(request):
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(".".join(str(p) for p in e.get("loc", ())) + ": " +
                             str(e.get("msg", "")) for e in exc.errors())[:300]
        return outcome_response(request, 400, _finding("FHIR-API-004", "", problem=problems))

    store_of = lambda: app.state.store
    # the CPU work of creates and validations runs on a few threads of its own, first come
    # first served: many threads taking turns at the GIL leave some requests waiting far
    # longer than others (see bench/bench_fhir.py)
    app.state.fhir_threads = executor = _FhirThreads()  # shut down with the app (app.py)

    async def in_fhir_threads(function, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            executor.pool(), functools.partial(function, *args, **kwargs))

    @app.get(PREFIX + "/metadata", tags=["fhir"])
    def metadata(request: Request) -> Response:
        return fhir_response(capability_statement(public_base(request)), 200,
                             answer_format(request))

    @app.post(PREFIX + "/{resource_type}/$validate", tags=["fhir"])
    async def validate(resource_type: str, request: Request,
                       client: Client = Depends(client_of)) -> Response:
        """Validate a resource against its ECM profile; nothing is stored."""
        fmt_out = answer_format(request)
        _accepted_type(resource_type)
        allowed(client, resource_type, "validate")
        payload, fmt = await read_body(request)
        checked = await in_fhir_threads(check_payload, payload, fmt,
                                        expected=resource_type, keep=False)
        status = 400 if _fatal(checked.findings) else 200
        return fhir_response(operation_outcome(checked.findings), status, fmt_out)

    def create(partner: Partner, resource_type: str, payload: bytes, fmt: str,
               fmt_out: str, idempotency_key: str | None, prefer: str = "", base: str = ""
               ) -> Response:
        """Validate, then keep the payload as a submission and answer: 201 with the resource
        (its gateway id is known before its run, see :func:`resource_id`), or 200 with the
        original for a resubmission; with ``Prefer: return=OperationOutcome`` the validation
        issues instead. Routing runs queued (``app.state.queue``); an invalid payload is
        recorded as rejected here, at once."""
        store = store_of()
        checked = check_payload(payload, fmt, expected=resource_type)
        valid = checked.valid and bool(checked.entries)
        # what the profiles accept must also route (one definition: routing_problems); one
        # that cannot is kept, rejected by its run here at once, and answered 422
        routable = valid and not routing_problems(
            store, app.state.partners, partner, *accepted_resources(checked, "check"))
        if routable:  # its queued run takes this check instead of parsing the payload again
            remember_checked(payload, fmt, resource_type, checked)
        done = submit(store, app.state.partners, partner, channel="api", kind="fhir",
                      filename=submission_name(resource_type, fmt), payload=payload,
                      idempotency_key=idempotency_key,
                      queue=app.state.queue if routable else None)
        if done.duplicate:
            return resubmission(done.submission_id, fmt_out, prefer, base)
        if routable:  # and by its id: its run here skips the look-ups (fhir_resources)
            remember_created(done.submission_id, checked)
        if not valid:
            status = 400 if _fatal(checked.findings) else 422
            return fhir_response(operation_outcome(checked.findings), status, fmt_out,
                                 {"X-Submission-Id": done.submission_id})
        if not routable:
            findings = [Finding(**f) for f in store.findings(done.submission_id)]
            return fhir_response(operation_outcome(findings), 422, fmt_out,
                                 {"X-Submission-Id": done.submission_id})
        resources, _ = accepted_resources(checked, done.submission_id)
        # as just stored and queued (the answer never waits for, nor looks at, its run)
        return created(resources[0], done.submission or store.submission(done.submission_id),
                       checked.findings, 201, fmt_out, prefer, base, new=True)

    def resubmission(submission_id: str, fmt_out: str, prefer: str, base: str = ""
                     ) -> Response:
        """The answer for a resubmission: the original's resource and routing (once run)."""
        store = store_of()
        found = store.submission(submission_id)
        checked = check_stored_payload(store, submission_id, found)
        if found["status"] == Status.REJECTED or not checked.valid or not checked.entries:
            findings = [Finding(**f) for f in store.findings(submission_id)] \
                or checked.findings
            status = 400 if _fatal(findings) else 422
            return fhir_response(operation_outcome(findings), status, fmt_out,
                                 {"X-Submission-Id": submission_id})
        # as its run stored them (a submission from before ids named their submission has
        # other ids), else as the run will
        resources = (submission_resources(store, submission_id)
                     if found["run_state"] == "done" else []) \
            or accepted_resources(checked, submission_id)[0]
        return created(resources[0], found, checked.findings, 200, fmt_out, prefer, base)

    def created(resource: dict, submission: dict, findings: list[Finding], status: int,
                fmt_out: str, prefer: str, base: str = "", new: bool = False) -> Response:
        # a create just received is version 1 (no look for the version an update made)
        version = fhir_store.created_version(resource, submission) if new \
            else fhir_store.stamped(store_of(), resource, submission)
        headers = version_headers(version, base)
        location = f"{PREFIX}/{resource['resourceType']}/{resource['id']}"
        return answer_version(version, headers, findings, status, fmt_out, prefer,
                              created_outcome(findings, location, submission["id"]))

    def answer_version(version: Version, headers: dict, findings: list[Finding],
                       status: int, fmt_out: str, prefer: str, outcome: dict | None = None
                       ) -> Response:
        """A resource version as ``Prefer`` asks: the resource (default), nothing
        (``return=minimal``) or the OperationOutcome (``return=OperationOutcome``)."""
        if prefer == "return=OperationOutcome":
            return fhir_response(outcome or operation_outcome(findings), status, fmt_out,
                                 headers)
        if prefer == "return=minimal":
            return Response(status_code=status, headers=headers)
        return fhir_response(version.resource, status, fmt_out, headers)

    @app.post(PREFIX + "/{resource_type}", tags=["fhir"])
    async def create_resource(resource_type: str, request: Request,
                              client: Client = Depends(client_of)) -> Response:
        """Create an ECM resource (validated, kept as a submission of kind fhir)."""
        fmt_out = answer_format(request)
        _accepted_type(resource_type)
        partner = allowed(client, resource_type, "create")
        payload, fmt = await read_body(request)
        return await in_fhir_threads(create, partner, resource_type, payload, fmt, fmt_out,
                                       request.headers.get("Idempotency-Key"),
                                       request.headers.get("Prefer", "").replace(" ", ""),
                                       public_base(request))

    def updatable(resource_type: str) -> None:
        _accepted_type(resource_type)
        if resource_type not in UPDATABLE:
            raise FhirError(405, _finding("FHIR-API-003", "", method="PUT"))

    def update(partner: Partner, resource_type: str, resource_id: str, payload: bytes,
               fmt: str, fmt_out: str, if_match: str | None, prefer: str, base: str,
               conditional: bool = False) -> Response:
        done = fhir_store.update(store_of(), app.state.partners, partner, resource_type,
                                 resource_id, payload, fmt, if_match, app.state.queue,
                                 conditional=conditional)
        headers = version_headers(done.version, base)
        return answer_version(done.version, headers, done.findings, 200, fmt_out, prefer)

    @app.put(PREFIX + "/{resource_type}/{resource_id}", tags=["fhir"])
    async def update_resource(resource_type: str, resource_id: str, request: Request,
                              client: Client = Depends(client_of)) -> Response:
        """Update a Task, CarePlan or ServiceRequest: a new version (If-Match: its ETag)."""
        fmt_out = answer_format(request)
        updatable(resource_type)
        partner = allowed(client, resource_type, "update")
        payload, fmt = await read_body(request)
        return await in_fhir_threads(update, partner, resource_type, resource_id, payload,
                                       fmt, fmt_out, request.headers.get("If-Match"),
                                       request.headers.get("Prefer", "").replace(" ", ""),
                                       public_base(request))

    @app.put(PREFIX + "/{resource_type}", tags=["fhir"])
    async def conditional_update(resource_type: str, request: Request,
                                 client: Client = Depends(client_of)) -> Response:
        """Conditional update by search (``?identifier=system|value``): one match is
        updated, none is a create, several are 412."""
        fmt_out = answer_format(request)
        updatable(resource_type)
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]
        if not params:
            raise FhirError(400, _finding("FHIR-API-004", "", problem="a conditional update "
                                          "needs search parameters, e.g. ?identifier="))
        partner = allowed(client, resource_type, "update")
        allowed(client, resource_type, "search")
        payload, fmt = await read_body(request)
        prefer = request.headers.get("Prefer", "").replace(" ", "")
        base = public_base(request)
        store = store_of()
        matches = await in_fhir_threads(fhir_store.search, store, partner, resource_type,
                                          params, 2)
        if len(matches) > 1:
            raise FhirError(412, _finding("FHIR-API-013", "", count="several"))
        if not matches:
            allowed(client, resource_type, "create")
            return await in_fhir_threads(create, partner, resource_type, payload, fmt,
                                           fmt_out, request.headers.get("Idempotency-Key"),
                                           prefer, base)
        return await in_fhir_threads(update, partner, resource_type,
                                       matches[0].resource["id"], payload, fmt, fmt_out,
                                       request.headers.get("If-Match"), prefer, base, True)

    @app.get(PREFIX + "/{resource_type}/{resource_id}/_history", tags=["fhir"])
    def instance_history(resource_type: str, resource_id: str, request: Request,
                         client: Client = Depends(client_of)) -> Response:
        """Every version of a resource, newest first (a Bundle of type history)."""
        fmt_out = answer_format(request)
        _accepted_type(resource_type)
        partner = allowed(client, resource_type, "history")
        store = store_of()
        versions = fhir_store.history(store, partner, resource_type, resource_id)
        if versions is None:
            raise FhirError(404, _finding("FHIR-API-002", "",
                                          what=f"{resource_type}/{_safe(resource_id)}"))
        store.audit(actor=partner.id, action="history",
                    target=f"{resource_type}/{resource_id}", detail=f"{len(versions)} versions")
        base = public_base(request)
        bundle = {"resourceType": "Bundle", "type": "history", "total": len(versions),
                  "link": [{"relation": "self", "url": str(request.url)}],
                  "entry": [{"fullUrl": f"{base}{PREFIX}/{resource_type}/{resource_id}",
                             "resource": v.resource,
                             "request": {"method": "POST" if v.version == 1 else "PUT",
                                         "url": resource_type if v.version == 1
                                         else f"{resource_type}/{resource_id}"},
                             "response": {"status": "201 Created" if v.version == 1
                                          else "200 OK", "etag": v.etag,
                                          "lastModified": v.resource["meta"]["lastUpdated"]}}
                            for v in versions]}
        return fhir_response(bundle, 200, fmt_out)

    @app.get(PREFIX + "/{resource_type}/{resource_id}/_history/{version_id}", tags=["fhir"])
    def vread(resource_type: str, resource_id: str, version_id: str, request: Request,
              client: Client = Depends(client_of)) -> Response:
        """One version of a resource."""
        fmt_out = answer_format(request)
        _accepted_type(resource_type)
        partner = allowed(client, resource_type, "vread")
        store = store_of()
        found = fhir_store.vread(store, partner, resource_type, resource_id, version_id)
        if found is None:
            raise FhirError(404, _finding("FHIR-API-002", "", what=f"{resource_type}/"
                                          f"{_safe(resource_id)}/_history/{_safe(version_id)}"))
        store.audit(actor=partner.id, action="read",
                    target=f"{resource_type}/{resource_id}/_history/{found.version}")
        return fhir_response(found.resource, 200, fmt_out,
                             version_headers(found, public_base(request)))

    @app.get(PREFIX + "/{resource_type}/{resource_id}", tags=["fhir"])
    def read(resource_type: str, resource_id: str, request: Request,
             client: Client = Depends(client_of)) -> Response:
        fmt_out = answer_format(request)
        _accepted_type(resource_type)
        partner = allowed(client, resource_type, "read")
        store = store_of()
        found = fhir_store.current(store, partner, resource_type, resource_id)
        if found is None:
            raise FhirError(404, _finding("FHIR-API-002", "",
                                          what=f"{resource_type}/{_safe(resource_id)}"))
        store.audit(actor=partner.id, action="read", target=f"{resource_type}/{resource_id}")
        headers = version_headers(found, public_base(request), referral_submission(
            store, partner, found, resource_type, resource_id))
        return fhir_response(found.resource, 200, fmt_out, headers)

    def referral_submission(store, partner, found: Version, resource_type: str,
                            resource_id: str) -> dict:
        """The submission whose routing answers for a referral's deadline: the create's (an
        update of a referral is routed again, but the deadline is the first one's)."""
        if found.version == 1 or resource_type != "ServiceRequest":
            return found.submission
        first = fhir_store.find_resource(store, partner, resource_type, resource_id,
                                         original=True)
        return first[1] if first else found.submission

    @app.get(PREFIX + "/{resource_type}", tags=["fhir"])
    def search(resource_type: str, request: Request,
               client: Client = Depends(client_of)) -> Response:
        """Search the partner's resources (latest versions); pages of ``_count`` with
        ``Bundle.link`` next/previous (``_offset``); ``_summary=count``: the total only."""
        fmt_out = answer_format(request)
        _accepted_type(resource_type)
        partner = allowed(client, resource_type, "search")
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]
        paging = dict(p for p in params if p[0] in ("_count", "_offset", "_summary"))
        count = _number(paging.get("_count"), "_count", DEFAULT_PAGE)
        count = min(count, MAX_SEARCH_RESULTS)
        offset = _number(paging.get("_offset"), "_offset", 0)
        summary = paging.get("_summary")
        if summary not in (None, "count", "false"):
            raise FhirError(400, _finding("FHIR-API-004", "", problem="_summary may be count "
                                          "or false"))
        store = store_of()
        matches = fhir_store.search(store, partner, resource_type, params)  # all: the total
        store.audit(actor=partner.id, action="search", target=resource_type,
                    detail=f"{len(matches)} found")
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(matches)}
        if summary == "count" or count == 0:
            return fhir_response(bundle, 200, fmt_out)
        base = public_base(request)
        page = matches[offset:offset + count]
        bundle["link"] = search_links(base, request, resource_type, params, offset, count,
                                      len(matches))
        if page:
            bundle["entry"] = [{"fullUrl": f"{base}{PREFIX}/{v.resource['resourceType']}/"
                                           f"{v.resource['id']}",
                                "resource": v.resource, "search": {"mode": "match"}}
                               for v in page]
        return fhir_response(bundle, 200, fmt_out)

    @app.post(PREFIX, tags=["fhir"])
    async def bundle(request: Request, client: Client = Depends(client_of)) -> Response:
        """A batch or transaction Bundle of creates (POST entries)."""
        fmt_out = answer_format(request)
        payload, fmt = await read_body(request)
        return await in_fhir_threads(bundle_answer, client, payload, fmt, fmt_out,
                                       request.headers.get("Idempotency-Key"))

    def bundle_answer(client: Client, payload: bytes, fmt: str, fmt_out: str,
                      idempotency_key: str | None) -> Response:
        partner = client.partner
        checked = check_payload(payload, fmt, expected="Bundle")
        data = checked.data
        if data is None or _fatal(checked.findings) or data.get("resourceType") != "Bundle":
            raise FhirError(400, checked.findings)
        kind = data.get("type")
        if kind not in ("batch", "transaction"):
            raise FhirError(422, checked.findings + _finding(
                "FHIR-API-004", "Bundle.type", problem="POST /fhir takes a Bundle of type "
                "batch or transaction"))
        entries = data.get("entry") or []
        by_index = {e.index: e for e in checked.entries}
        entry_problems: dict[int, list[Finding]] = {}
        for i, entry in enumerate(entries):
            problems = [f for f in (by_index[i].findings if i in by_index else [])
                        if f.is_error]
            request_part = entry.get("request") if isinstance(entry, dict) else None
            resource = entry.get("resource") if isinstance(entry, dict) else None
            rtype = resource.get("resourceType") if isinstance(resource, dict) else None
            method = (request_part or {}).get("method")
            url = str((request_part or {}).get("url") or "").split("?")[0].strip("/")
            if method != "POST" or url != rtype or rtype not in ACCEPTED:
                problems += _finding("FHIR-API-008", f"Bundle.entry[{i}].request", entry=i,
                                     problem="only POST (create) of " + ", ".join(ACCEPTED)
                                     + " with request.url = the resource type")
            elif not client.allows(rtype, "create"):
                problems += _finding("FHIR-API-012", f"Bundle.entry[{i}]",
                                     interaction="create", resource_type=rtype,
                                     needed=needed(rtype, "create"))
            if problems:
                entry_problems[i] = problems
        if kind == "transaction":
            if entry_problems or not checked.valid:
                first = min(entry_problems) if entry_problems else 0
                shell = [f for f in checked.findings if f.is_error
                         and not any(f in p for p in entry_problems.values())]
                all_problems = shell + [f for i in sorted(entry_problems)
                                        for f in entry_problems[i]]
                raise FhirError(422, _finding("FHIR-API-006", "Bundle", entry=first)
                                + all_problems)
            store = store_of()
            # gated like a create (routing_problems): a transaction with an entry that cannot
            # be routed is kept, rejected by its run here at once, and answered 422 -- all or
            # nothing, with every such entry's findings located in it
            problems = routing_problems(store, app.state.partners, partner,
                                        *accepted_resources(checked, "check"),
                                        entries=[e.index for e in checked.entries])
            done = submit(store, app.state.partners, partner, channel="api", kind="fhir",
                          filename=submission_name("Bundle", fmt), payload=payload,
                          idempotency_key=idempotency_key,
                          queue=None if problems else app.state.queue)
            if done.duplicate:  # the original's payload (the same, unless only the key is)
                checked = check_stored_payload(store, done.submission_id)
            stored, _ = accepted_resources(checked, done.submission_id) \
                if checked.valid else ([], [])
            found = store.submission(done.submission_id)
            if len(stored) != len(entries) or found["status"] == Status.REJECTED:
                # as a refused create: every finding of the run; the first entry named is
                # the first one that could not be routed (or that has an error)
                findings = [Finding(**f) for f in store.findings(done.submission_id)]
                first = min((_entry_of(f.location) for f in problems or findings
                             if (problems or f.is_error) and _entry_of(f.location) is not None),
                            default=0)
                raise FhirError(422, _finding("FHIR-API-006", "Bundle", entry=first)
                                + findings, {"X-Submission-Id": done.submission_id})
            response = {"resourceType": "Bundle", "type": "transaction-response",
                        "entry": [{"response": {
                            "status": "200 OK" if done.duplicate else "201 Created",
                            "location": f"{PREFIX}/{r['resourceType']}/{r['id']}"}}
                            for r in stored]}
            return fhir_response(response, 200, fmt_out,
                                 {"X-Submission-Id": done.submission_id})
        # batch: every entry on its own
        out = []
        for i, entry in enumerate(entries):
            if i in entry_problems:
                out.append({"response": {"status": "422 Unprocessable Entity",
                                         "outcome": operation_outcome(entry_problems[i])}})
                continue
            resource = by_index[i].data
            response = create(partner, resource["resourceType"],
                              serialise(resource, "json"), "json", "json", None,
                              "return=OperationOutcome")
            outcome = json.loads(response.body)
            if response.status_code in (200, 201):
                out.append({"response": {
                    "status": "201 Created" if response.status_code == 201 else "200 OK",
                    "location": response.headers["Location"], "outcome": outcome}})
            else:
                out.append({"response": {"status": f"{response.status_code} Unprocessable "
                                                   "Entity", "outcome": outcome}})
        return fhir_response({"resourceType": "Bundle", "type": "batch-response",
                              "entry": out}, 200, fmt_out)

    @app.api_route(PREFIX + "/{rest:path}", include_in_schema=False,
                   methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    def unsupported(rest: str, request: Request) -> Response:
        """Any other URL or method under /fhir: an OperationOutcome, not FastAPI's JSON."""
        if request.method in ("GET", "POST", "HEAD"):
            raise FhirError(404, _finding("FHIR-API-002", "",
                                          what="the URL " + _safe(request.url.path)))
        raise FhirError(405, _finding("FHIR-API-003", "", method=_safe(request.method)))
