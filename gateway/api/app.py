"""The HTTP API (contract.md): health, metrics, X12 submissions, submission status and the
partner mailbox. Every call but /healthz, /metrics and the OpenAPI pages needs the bearer token
of a configured trading partner, and a partner sees only its own submissions and mailbox
(someone else's id answers 404, as if it did not exist).

This version processes a submission inside the request (after the raw payload is stored), so a
small X12 gets its 999 in the response; the worker queue (Celery) arrives with the scale-out
work and will take the same ``process_x12`` off the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
)

from gateway import __version__
from gateway.api.fhir import install_fhir
from gateway.pipeline.filedrop import DropFolders, watch
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.process import replay, submit
from gateway.pipeline.store import Store

log = logging.getLogger("gateway.api")
MAX_X12_BYTES = 50 * 1024 * 1024
MAX_FILE_BYTES = 200 * 1024 * 1024
UPLOAD_SUFFIXES = (".csv", ".xlsx", ".txt")
SYNC_ACK_BYTES = 1024 * 1024  # a 999 up to this size is returned in the response


def create_app(store: str | None = None, partners: Path | Partners | None = None,
               drop: Path | None = None) -> FastAPI:
    """``drop``: the root of the partners' file-drop folders, watched while the app runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        watcher = None
        if drop is not None:
            folders = DropFolders(Path(drop))
            watcher = threading.Thread(target=watch, name="file-drop", daemon=True,
                                       args=(folders, app.state.store, app.state.partners,
                                             stop))
            watcher.start()
        yield
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)

    app = FastAPI(title="ECM Gateway", version=__version__, lifespan=lifespan,
                  description="Data exchange for Medi-Cal Enhanced Care Management")
    app.state.store = Store(store)
    if isinstance(partners, Partners):
        app.state.partners = partners
    elif partners is not None:
        app.state.partners = Partners.load(Path(partners))
    else:
        app.state.partners = Partners(partners={}, routes=[])
    registry = CollectorRegistry()
    Gauge("ecm_gateway_info", "Gateway version", ["version"],
          registry=registry).labels(version=__version__).set(1)
    submissions = Gauge("ecm_gateway_submissions", "Submissions by kind and status",
                        ["kind", "status"], registry=registry)
    received = Counter("ecm_gateway_submissions_received", "Submissions received",
                       ["channel"], registry=registry)
    latency = Histogram("ecm_gateway_processing_seconds", "Time to process a submission",
                        ["kind"], registry=registry)
    bearer = HTTPBearer(auto_error=False)

    def partner_of(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
                   ) -> Partner:
        partner = app.state.partners.authenticate(credentials.credentials) \
            if credentials else None
        if partner is None:
            raise HTTPException(401, "a valid bearer token of a trading partner is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return partner

    install_fhir(app, partner_of)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s", request.method, request.url.path,
                  exc.__class__.__name__)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        submissions.clear()
        for (kind, status), count in app.state.store.counts_by_status().items():
            submissions.labels(kind=kind, status=status).set(count)
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/x12", tags=["submissions"])
    async def submit_x12(request: Request, partner: Partner = Depends(partner_of)) -> dict:
        payload = await _read_limited(request, MAX_X12_BYTES)
        if not payload.strip():
            raise HTTPException(400, "the body is empty: send an X12 interchange")
        return answer(partner, "x12", None, payload, request.headers.get("Idempotency-Key"))

    def answer(partner: Partner, kind: str, filename: str | None, payload: bytes,
               idempotency_key: str | None = None) -> dict:
        started = time.perf_counter()
        done = submit(app.state.store, app.state.partners, partner, channel="api", kind=kind,
                      filename=filename, payload=payload, idempotency_key=idempotency_key)
        received.labels(channel="api").inc()
        body = {"submission_id": done.submission_id, "duplicate": done.duplicate,
                "status": done.status,
                "links": {"self": f"/submissions/{done.submission_id}"}}
        if done.outcome is not None:
            latency.labels(kind=kind).observe(time.perf_counter() - started)
            body.update(valid=done.outcome.valid, findings=done.outcome.findings)
            ack = done.outcome.ack999
            if ack and len(ack) <= SYNC_ACK_BYTES:
                body["ack_999"] = ack
        return body

    @app.post("/files", tags=["submissions"])
    async def submit_file(file: UploadFile = File(...),
                          partner: Partner = Depends(partner_of)) -> dict:
        """An invoice, MIF, RTF, OTF or roster (CSV or XLSX), as multipart/form-data."""
        name = Path(file.filename or "upload").name  # never a path from the client
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise HTTPException(415, f"upload a CSV or XLSX file (got {suffix or 'no suffix'});"
                                     " X12 goes to /x12")
        payload = await file.read(MAX_FILE_BYTES + 1)
        if len(payload) > MAX_FILE_BYTES:
            raise HTTPException(413, f"the file is larger than {MAX_FILE_BYTES} bytes")
        if not payload.strip():
            raise HTTPException(400, "the file is empty")
        return answer(partner, "file", name, payload)

    @app.post("/submissions/{submission_id}/replay", tags=["submissions"])
    def replay_submission(submission_id: str, partner: Partner = Depends(partner_of)) -> dict:
        """Process a submission's stored raw payload again, as a new linked submission."""
        own_submission(submission_id, partner)
        outcome = replay(app.state.store, app.state.partners, submission_id, actor=partner.id)
        return {"submission_id": outcome.submission_id, "replay_of": submission_id,
                "status": outcome.status,
                "links": {"self": f"/submissions/{outcome.submission_id}"}}

    def own_submission(submission_id: str, partner: Partner) -> dict:
        found = app.state.store.submission(submission_id)
        if found is None or found["partner"] != partner.id:
            raise HTTPException(404, "no such submission")
        return found

    @app.get("/submissions/{submission_id}", tags=["submissions"])
    def submission(submission_id: str, partner: Partner = Depends(partner_of)) -> dict:
        found = own_submission(submission_id, partner)
        store: Store = app.state.store
        store.audit(actor=partner.id, action="read", target=submission_id)
        documents = [{**{k: d[k] for k in ("id", "role", "name", "media_type", "size")},
                      "href": f"/mailbox/{d['id']}"}
                     for d in store.documents(submission_id) if d.get("recipient") == partner.id]
        return {**{k: (v.isoformat() if hasattr(v, "isoformat") else v)
                   for k, v in found.items()},
                "findings": store.findings(submission_id), "documents": documents}

    @app.get("/mailbox", tags=["mailbox"])
    def mailbox(partner: Partner = Depends(partner_of)) -> dict:
        items = app.state.store.mailbox(partner.id)
        return {"documents": [{**{k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                  for k, v in d.items()}, "href": f"/mailbox/{d['id']}"}
                              for d in items]}

    @app.get("/mailbox/{document_id}", tags=["mailbox"])
    def mailbox_document(document_id: str, partner: Partner = Depends(partner_of)) -> Response:
        store: Store = app.state.store
        found = store.document(document_id)
        if found is None or found.get("recipient") != partner.id:
            raise HTTPException(404, "no such document")
        store.mark_delivered(document_id)
        store.audit(actor=partner.id, action="download", target=document_id)
        return Response(found["content"], media_type=found["media_type"],
                        headers={"Content-Disposition": f'attachment; filename="{found["name"]}"'})

    return app


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
