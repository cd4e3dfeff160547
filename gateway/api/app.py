"""The HTTP API (contract.md): health, metrics, X12 submissions, submission status and the
partner mailbox. Every call but /healthz, /metrics and the OpenAPI pages needs the bearer token
of a configured trading partner, and a partner sees only its own submissions and mailbox
(someone else's id answers 404, as if it did not exist).

Processing runs off the request path (:mod:`gateway.pipeline.queue`: worker threads on the
store by default, Celery workers with ``queue="redis://…"``). A request stores the raw payload,
queues it, and for a submission up to :data:`SYNC_BYTES` waits up to :data:`SYNC_WAIT_SECONDS`
for its run to end, so a small X12 still gets its 999 in the response (200); otherwise, or
with ``Prefer: respond-async``, the answer is 202 with the submission id and its status link.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from gateway import __version__
from gateway.api import models, views
from gateway.api.console import install_console
from gateway.api.fhir import install_fhir
from gateway.api.smart import fhir_token_partner, install_smart
from gateway.api.guard import AccessLog, BodyGuard
from gateway.findings import without_paths
from gateway.fhir.parse import MAX_BODY_BYTES as MAX_FHIR_BYTES
from gateway.pipeline.directory import DirectoryError, DirectorySchedule, monthly_274
from gateway.pipeline.history_extracts import HistorySchedule, extract_history, interval_seconds
from gateway.pipeline.retention import PurgeSchedule, Retention
from gateway.pipeline.steps.directory import is_274
from gateway.settings import current as gateway_settings
from gateway.pipeline.steps.extract import ExtractError
from gateway.pipeline.filedrop import DropFolders, watch
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.process import ReplayRefused, current_outcome, replay, submit
from gateway.pipeline.queue import make_queue, wait_until_done
from gateway.pipeline.referral_deadlines import OverdueMetric, overdue_referrals, watch_overdue
from gateway.pipeline.status import Status
from gateway.pipeline.store import LATENCY_BUCKETS, IdempotencyConflict, Store

log = logging.getLogger("gateway.api")
MAX_X12_BYTES = 50 * 1024 * 1024
MAX_FILE_BYTES = 200 * 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # the multipart envelope around the file
UPLOAD_SUFFIXES = (".csv", ".xlsx", ".txt", ".xml", ".json")
DIRECTORY_X12_SUFFIXES = (".x12", ".274", ".edi")  # a plan's 274 may come as an upload too
SYNC_ACK_BYTES = 1024 * 1024  # a 999 up to this size is returned in the response
SYNC_BYTES = 1024 * 1024  # a submission up to this size is waited for ...
SYNC_WAIT_SECONDS = 10.0  # ... this long before the answer is 202 (still processing)


def app_from_settings() -> FastAPI:
    """The app of one of ``serve --api-workers N``'s processes, from the settings (the
    environment ``serve`` set for them: store, partners, queue, drop, workers)."""
    from gateway.settings import current

    from gateway.api.http import prepare_process

    settings = current()
    app = create_app(store=settings.store_url(), partners=settings.partners,
                     drop=settings.drop, queue=settings.queue, workers=settings.workers)
    prepare_process()  # before its first request (gateway/api/http.py)
    return app


def _leader(store_url: str):
    """Of several API processes (``serve --api-workers N``), the one holding the leader lock
    runs the file-drop watcher and the schedules (so no file is taken twice, no extract sent
    twice); returns the open lock file (kept for the process's life) or None. A single
    process is always the leader."""
    from gateway.settings import current

    if current().api_workers <= 1:
        return True
    import fcntl
    import hashlib

    from gateway.paths import var_dir
    from gateway.pipeline.queue import API_LOAD

    folder = var_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(store_url.encode()).hexdigest()[:16]
    # the embedded workers of every API process defer to the FHIR requests of them all
    try:
        API_LOAD.share(folder / f"api-load-{name}.bin")
    except OSError as exc:  # then each process defers to its own requests only
        log.warning("the API processes' shared load file is not usable: %s",
                    exc.__class__.__name__)
    handle = open(folder / f"leader-{name}.lock", "w")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _close_store(store: Store) -> None:
    """At shutdown: the app's store and its registries let go of their pooled connections and
    the write-lock file (an in-memory database is kept: closing it would lose it)."""
    if not store.memory:
        from gateway.pipeline.registries import forget_registry

        forget_registry(store)
        store.close()


def create_app(store: str | None = None, partners: Path | Partners | None = None,
               drop: Path | None = None, queue: str | None = None, workers: int = 1
               ) -> FastAPI:
    """``drop``: the root of the partners' file-drop folders, watched while the app runs.
    ``queue``: ``None`` for the embedded engine (``workers`` threads in this process) or a
    ``redis://`` broker URL for Celery workers (``ecm-gateway worker``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        watcher = None
        app.state.queue.start()  # resumes whatever a previous run left unfinished
        app.state.leader = _leader(app.state.store.url)
        if not app.state.leader:  # another API process watches the drop and schedules
            yield
            app.state.queue.stop()
            app.state.fhir_threads.shutdown()
            _close_store(app.state.store)
            return
        if drop is not None:
            watcher = threading.Thread(target=watch, name="file-drop", daemon=True,
                                       args=(app.state.drop, app.state.store,
                                             app.state.partners,
                                             stop),
                                       kwargs={"queue": app.state.queue})
            watcher.start()
        purge_every = gateway_settings().purge_schedule
        if purge_every not in ("never", "off"):  # retention: the purge, on a schedule
            threading.Thread(target=PurgeSchedule(
                app.state.store, Retention.from_settings(), interval_seconds(purge_every)).run,
                name="retention", daemon=True, args=(stop,)).start()
        if partners_file is not None:  # `ecm-gateway partners …` takes effect in seconds
            threading.Thread(target=_follow_partners, name="partners-file", daemon=True,
                             args=(partners_file, app.state.partners, stop)).start()
        schedule = HistorySchedule.from_partners(app.state.store, app.state.partners)
        if schedule is not None:  # the partner file's schedules.history_extract
            threading.Thread(target=schedule.run, name="history-extracts", daemon=True,
                             args=(stop,)).start()
        monthly = DirectorySchedule.from_partners(app.state.store, app.state.partners)
        if monthly is not None:  # the partner file's schedules.directory_274
            threading.Thread(target=monthly.run, name="directory-274", daemon=True,
                             args=(stop,)).start()
        # overdue referrals: each plan is sent one notice per referral past its deadline
        threading.Thread(target=watch_overdue, name="overdue-referrals", daemon=True,
                         args=(app.state.store, app.state.partners, stop)).start()
        yield
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)
        app.state.queue.stop()
        app.state.fhir_threads.shutdown()
        _close_store(app.state.store)

    app = FastAPI(title="ECM Gateway", version=__version__, lifespan=lifespan,
                  description="Data exchange for Medi-Cal Enhanced Care Management. Every "
                              "call but /healthz, /metrics and these pages needs a partner's "
                              "bearer token; the operator console is at /console.",
                  docs_url=None, redoc_url=None)
    app.state.store = Store(store)
    partners_file = Path(partners) if partners is not None and \
        not isinstance(partners, Partners) else None
    if isinstance(partners, Partners):
        app.state.partners = partners
    elif partners is not None:
        app.state.partners = Partners.load(Path(partners))
    else:
        app.state.partners = Partners(partners={}, routes=[])
    app.state.drop = None
    if drop is not None:  # refused at start-up when a drop folder is a symbolic link
        app.state.drop = DropFolders(Path(drop))
        app.state.drop.check(app.state.partners)
    app.state.queue = make_queue(queue, app.state.store, app.state.partners, workers=workers)
    registry = CollectorRegistry()
    registry.register(_StoreMetrics(app.state.store))
    registry.register(OverdueMetric(app.state.store, app.state.partners))
    received = Counter("ecm_gateway_submissions_received", "Submissions received by this "
                       "API process", ["channel"], registry=registry)
    bearer = HTTPBearer(auto_error=False)

    async def partner_of(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
                         ) -> Partner:
        # async: a hash and a look-up, so no hop to the thread pool on every request
        partner = app.state.partners.authenticate(credentials.credentials) \
            if credentials else None
        if partner is None:
            raise HTTPException(401, "a valid bearer token of a trading partner is required",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.partner_id = partner.id  # for the access log
        return partner

    install_fhir(app, install_smart(app))  # FHIR: static tokens or SMART access tokens
    install_docs(app)
    install_console(app)

    def sender(partner: Partner) -> Partner:
        if partner.operator:
            raise HTTPException(403, "an operator reads and replays submissions; it does not "
                                     "submit them")
        return partner
    # outermost: the token and the size of a body are checked before it is read, and every
    # request is logged by its route template (no query string, no ids)
    app.add_middleware(BodyGuard, partners=lambda: app.state.partners, limits=(
        ("/x12", MAX_X12_BYTES), ("/files", MAX_FILE_BYTES + MULTIPART_SLACK),
        ("/fhir", MAX_FHIR_BYTES)), access_token=lambda token: fhir_token_partner(
            app.state.store, app.state.partners, token) is not None)
    app.add_middleware(AccessLog)

    @app.exception_handler(IdempotencyConflict)
    async def idempotency_conflict(request: Request, exc: IdempotencyConflict) -> Response:
        path = request.url.path
        if path == "/fhir" or path.startswith("/fhir/"):
            from gateway.api.fhir import outcome_response
            from gateway.rules import default_catalogue

            finding = default_catalogue().finding("GATEWAY-IDEM-001", "Idempotency-Key",
                                                  problem=str(exc))
            return outcome_response(request, 422, [finding])
        return JSONResponse({"detail": str(exc)}, status_code=422)

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
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/x12", tags=["submissions"], response_model=models.SubmitAnswer,
              responses={202: {"model": models.SubmitAnswer,
                               "description": "stored and queued: follow links.self"},
                         400: models.ERRORS[400], 401: models.ERRORS[401],
                         413: {"model": models.Problem, "description": "body too large"}},
              openapi_extra={"requestBody": {"required": True, "description": "One X12 "
                             "interchange (ISA…IEA), e.g. an 837P, as sent.", "content": {
                                 "application/edi-x12": {"schema": {"type": "string"}},
                                 "text/plain": {"schema": {"type": "string"}}}}})
    async def submit_x12(request: Request, partner: Partner = Depends(partner_of),
                         idempotency_key: str | None = Header(
                             None, alias="Idempotency-Key", max_length=255,
                             description="the same key again answers with the first "
                                         "submission (duplicate: true)"),
                         prefer: str | None = Header(
                             None, description="respond-async: answer 202 at once, do not "
                                               "wait for the run (RFC 7240)")
                         ) -> JSONResponse:
        """Submit an X12 interchange: stored, then processed; a small one is answered with
        its 999 when its run ends within a few seconds."""
        sender(partner)
        payload = await _read_limited(request, MAX_X12_BYTES)
        if not payload.strip():
            raise HTTPException(400, "the body is empty: send an X12 interchange")
        return await answer(request, partner, "x12", None, payload,
                            request.headers.get("Idempotency-Key"))

    async def answer(request: Request, partner: Partner, kind: str, filename: str | None,
                     payload: bytes, idempotency_key: str | None = None) -> JSONResponse:
        done = await asyncio.to_thread(
            submit, app.state.store, app.state.partners, partner, channel="api", kind=kind,
            filename=filename, payload=payload, idempotency_key=idempotency_key,
            queue=app.state.queue)
        received.labels(channel="api").inc()
        if done.duplicate:
            return JSONResponse(_body(done.submission_id, done.status, duplicate=True))
        wait = len(payload) <= SYNC_BYTES and not _respond_async(request)
        return await finished_or_accepted(done.submission_id, wait)

    async def finished_or_accepted(submission_id: str, wait: bool, **extra) -> JSONResponse:
        """200 with the result once the run is done, else 202 with the status link."""
        store: Store = app.state.store
        if wait and await wait_until_done(store, submission_id, SYNC_WAIT_SECONDS):
            outcome = await asyncio.to_thread(current_outcome, store, submission_id)
            body = _body(submission_id, outcome.status, **extra)
            body.update(valid=outcome.valid, findings=outcome.findings)
            if outcome.ack999 and len(outcome.ack999) <= SYNC_ACK_BYTES:
                body["ack_999"] = outcome.ack999
            if outcome.ack_ta1:  # a rejected interchange: the TA1 and why (TA105 025: which
                body["ack_ta1"] = outcome.ack_ta1  # earlier submission used its ISA13, when)
            if outcome.status == Status.REJECTED and outcome.error:
                body["error"] = outcome.error
            return JSONResponse(body)
        found = await asyncio.to_thread(store.submission, submission_id)
        return JSONResponse(_body(submission_id, found["status"], **extra), status_code=202)

    @app.post("/files", tags=["submissions"], response_model=models.SubmitAnswer,
              responses={202: {"model": models.SubmitAnswer}, 400: models.ERRORS[400],
                         401: models.ERRORS[401], 413: {"model": models.Problem},
                         415: {"model": models.Problem}})
    async def submit_file(request: Request, file: UploadFile = File(...),
                          partner: Partner = Depends(partner_of),
                          prefer: str | None = Header(
                              None, description="respond-async: answer 202 at once")
                          ) -> JSONResponse:
        """An invoice, MIF, RTF, OTF or roster (CSV or XLSX), or a plan's provider directory
        (directory roster, X12 274 or FHIR Plan-Net Bundle), as multipart/form-data."""
        sender(partner)
        name = Path(file.filename or "upload").name  # never a path from the client
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES + DIRECTORY_X12_SUFFIXES:
            raise HTTPException(415, f"upload a CSV or XLSX file (got {suffix or 'no suffix'});"
                                     " X12 goes to /x12")
        payload = await file.read(MAX_FILE_BYTES + 1)
        if suffix in DIRECTORY_X12_SUFFIXES and not is_274(payload):
            raise HTTPException(415, "X12 goes to /x12 (only a 274 provider directory is "
                                     "uploaded here)")
        if len(payload) > MAX_FILE_BYTES:
            raise HTTPException(413, f"the file is larger than {MAX_FILE_BYTES} bytes")
        if not payload.strip():
            raise HTTPException(400, "the file is empty")
        return await answer(request, partner, "file", name, payload)

    @app.post("/submissions/{submission_id}/replay", tags=["submissions"],
              response_model=models.SubmitAnswer,
              responses={202: {"model": models.SubmitAnswer}, **models.ERRORS})
    async def replay_submission(submission_id: str, request: Request,
                                partner: Partner = Depends(partner_of),
                                prefer: str | None = Header(
                                    None, description="respond-async: answer 202 at once")
                                ) -> JSONResponse:
        """Process a submission's stored raw payload again, as a new linked submission. A
        submission already routed or delivered needs ``?force=true`` (409 without); documents
        identical to ones delivered before are not delivered again."""
        found = await asyncio.to_thread(views.visible_submission, app.state.store, partner,
                                        submission_id)
        if found.get("payload_purged_at"):
            raise HTTPException(410, "the submission's payload was removed under the retention "
                                     "period; it cannot be replayed")
        force = request.query_params.get("force", "").lower() in ("1", "true", "yes")
        try:
            new_id = await asyncio.to_thread(replay, app.state.store, app.state.partners,
                                             submission_id, actor=partner.id,
                                             queue=app.state.queue, force=force)
        except ReplayRefused as exc:
            raise HTTPException(409, str(exc)) from exc
        return await finished_or_accepted(new_id, found["size"] <= SYNC_BYTES
                                          and not _respond_async(request),
                                          replay_of=submission_id)

    @app.get("/submissions", tags=["submissions"], response_model=models.SubmissionList,
             responses={400: models.ERRORS[400], 401: models.ERRORS[401]})
    def list_submissions(
            partner: Partner = Depends(partner_of),
            partner_id: str | None = Query(None, alias="partner",
                                           description="(operators) one partner's only"),
            kind: str | None = Query(None, description="x12, file, fhir, …"),
            status: str | None = Query(None, description="e.g. rejected"),
            since: str | None = Query(None, description="received on or after (YYYY-MM-DD "
                                                        "or ISO date-time)"),
            until: str | None = Query(None, description="received before the end of this "
                                                        "day (or before this date-time)"),
            q: str | None = Query(None, description="a submission id, file name (or its "
                                                    "start), ISA13, GS06 or claim id"),
            cursor: str | None = Query(None, description="next_cursor of the previous page"),
            limit: int = Query(views.DEFAULT_PAGE, ge=1, le=views.MAX_PAGE)) -> JSONResponse:
        """The caller's submissions (an operator's: everyone's), newest first, one page."""
        page = views.list_submissions(app.state.store, partner, views.Filters(
            partner=partner_id, kind=kind, status=status, since=since, until=until, q=q),
            cursor, limit)
        body: dict = {"submissions": [
            {**{k: views.plain(r)[k] for k in models.SubmissionSummary.model_fields
                if k != "href"}, "href": f"/submissions/{r['id']}"} for r in page.items]}
        if page.next_cursor:
            body["next_cursor"] = page.next_cursor
        return JSONResponse(body)

    @app.get("/submissions/{submission_id}", tags=["submissions"],
             response_model=models.SubmissionDetail, responses=models.ERRORS)
    def submission(submission_id: str, partner: Partner = Depends(partner_of),
                   cursor: str | None = Query(None, description="findings_next_cursor of "
                                                                "the previous page"),
                   limit: int = Query(views.DEFAULT_FINDINGS_PAGE, ge=1,
                                      le=views.MAX_FINDINGS_PAGE,
                                      description="findings per page"),
                   rule: str | None = Query(None, description="only this rule's findings")
                   ) -> JSONResponse:
        found = views.visible_submission(app.state.store, partner, submission_id)
        store: Store = app.state.store
        store.audit(actor=partner.id, action="read", target=submission_id)
        documents = [{**{k: d[k] for k in ("id", "role", "name", "media_type", "size")},
                      "href": f"/mailbox/{d['id']}"}
                     for d in store.documents(submission_id)
                     if (d.get("recipient") == partner.id or partner.operator)
                     and found["run_state"] == "done"]  # an unfinished run may be redone
        page = views.findings(store, submission_id, cursor, limit, rule,
                              view=views.finding_view(partner))
        body = {**{k: (v.isoformat() if hasattr(v, "isoformat") else
                       without_paths(v) if k == "error" and v else v)
                   for k, v in found.items()}, "findings": page.items}
        if page.next_cursor:
            body["findings_next_cursor"] = page.next_cursor
        body["finding_counts"] = store.finding_counts(submission_id,
                                                      view=views.finding_view(partner))
        body["documents"] = documents
        return JSONResponse(body)

    @app.post("/extracts/history", tags=["mailbox"], status_code=201)
    def history_extract(format: Literal["csv", "fhir"] = "csv",  # noqa: A002 - the API word
                        partner: Partner = Depends(partner_of)) -> dict:
        """A provider asks for the encounter history of its own assigned members, now (the
        partner file may also schedule it); the extract lands in its mailbox."""
        try:
            document_id = extract_history(app.state.store, app.state.partners, partner.id,
                                          format=format)
        except ExtractError as exc:
            raise HTTPException(403, f"history extracts are for providers: {exc}") from None
        if document_id is None:
            raise HTTPException(404, "no history route leads to this partner")
        return {"document_id": document_id, "href": f"/mailbox/{document_id}"}

    @app.post("/directory/274", tags=["mailbox"], status_code=201)
    def directory_274(month: str | None = None, plan: str | None = None,
                      partner: Partner = Depends(partner_of)) -> dict:
        """The monthly 274 provider files to the state, one per county, made now from the
        plan's newest uploaded directory (a plan asks for its own; an operator names
        ``plan``). The files go to the state on its ``274`` route."""
        plan_id = plan or partner.id
        if partner.role != "operator" and plan_id != partner.id:
            raise HTTPException(403, "a plan asks for its own 274 only")
        try:
            documents = monthly_274(app.state.store, app.state.partners, plan_id, month)
        except DirectoryError as exc:
            raise HTTPException(422, str(exc)) from None
        if not documents:
            raise HTTPException(404, "no 274 was made: the plan has sent no directory, or no "
                                     "274 route leads to the state")
        return {"documents": documents}
    @app.get("/referrals/overdue", tags=["mailbox"])
    def referrals_overdue(partner: Partner = Depends(partner_of)) -> dict:
        """ECM referrals past their authorization deadline without a decision (a Task of
        the referral in a deciding status): a provider's own, those routed to a plan, every
        one for an operator."""
        found = overdue_referrals(app.state.store, app.state.partners,
                                  viewer=None if partner.operator else partner)
        return {"overdue": [vars(o) for o in found]}

    @app.get("/reports/outreach", tags=["reports"])
    def outreach_report(quarter: list[str] = Query(..., description="e.g. 2026Q3; repeat"),
                        format: Literal["csv", "xlsx"] = "csv",  # noqa: A002 - the API word
                        partner: Partner = Depends(partner_of)) -> Response:
        """A plan's quarterly ECM outreach tracking report (ECM Policy Guide 002:1885-1912)
        from the OTF rows its providers sent and its MIF assignments."""
        from gateway.ecm.outreach import Quarter, QuarterError, report_csv, report_xlsx
        from gateway.pipeline.reports import ReportError, outreach_for_plan

        try:
            quarters = [Quarter.parse(q) for q in quarter]
        except QuarterError as exc:
            raise HTTPException(422, f"quarter: {exc}") from None
        try:
            rows = outreach_for_plan(app.state.store, partner, quarters)
        except ReportError as exc:
            raise HTTPException(403, str(exc)) from None
        app.state.store.audit(actor=partner.id, action="report-outreach",
                              target=",".join(str(q) for q in quarters))
        name = f"outreach-{partner.id}-{'-'.join(str(q) for q in quarters)}.{format}"
        if format == "xlsx":
            return Response(report_xlsx(rows), media_type="application/vnd.openxmlformats-"
                            "officedocument.spreadsheetml.sheet",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return Response(report_csv(rows), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/registries/data-sharing", tags=["reports"])
    def data_sharing(cin: list[str] | None = Query(None, description="member CIN; repeat"),
                     as_of: date | None = Query(None, description="status on this day "
                                                                    "(default: today)"),
                     plan: str | None = Query(None, description="operator: one plan's"),
                     format: Literal["json", "csv"] = "json",  # noqa: A002 - the API word
                     partner: Partner = Depends(partner_of)) -> Response:
        """Members' data-sharing authorizations providers reported back to the plan (ECM
        Policy Guide 002:1589-1599; RTF data-sharing columns and FHIR Consent): per member,
        provider and scope the decision that stands on ``as_of``, with its status
        (:func:`gateway.ecm.data_sharing.in_effect`), newest first per member. A plan reads
        its own, an operator any plan's (``plan``), a provider those it reported."""
        from gateway.ecm.data_sharing import authorization_rows, report_csv
        from gateway.pipeline.registries import plan_data_sharing, server_registry

        if partner.operator:
            plan_id = plan
        elif partner.role == "plan":
            if plan not in (None, partner.id):
                raise HTTPException(403, "a plan reads its own data-sharing authorizations")
            plan_id = partner.id
        elif partner.role == "provider":
            plan_id = plan
        else:
            raise HTTPException(403, "data-sharing authorizations are for plans, providers "
                                     "and operators")
        found = plan_data_sharing(server_registry(app.state.store), plan_id, cin)
        if partner.role == "provider" and not partner.operator:
            from gateway.pipeline.delivery import authorise_sender

            # those it reported: rows it could have sent (gateway.pipeline.delivery)
            found = [a for a in found if (a.provider_npi or a.provider_tin) and
                     authorise_sender(partner, a.provider_npi, a.provider_tin,
                                      npi_required=False)]
        rows = authorization_rows(found, as_of or datetime.now(UTC).date())
        app.state.store.audit(actor=partner.id, action="read-data-sharing",
                              target=plan_id or "all", detail=f"{len(rows)} authorizations")
        if format == "csv":
            return Response(report_csv(rows), media_type="text/csv")
        return JSONResponse({"authorizations": rows})

    @app.get("/mailbox", tags=["mailbox"], response_model=models.Mailbox,
             responses={400: models.ERRORS[400], 401: models.ERRORS[401]})
    def mailbox(partner: Partner = Depends(partner_of),
                cursor: str | None = Query(None, description="next_cursor of the previous "
                                                             "page"),
                limit: int = Query(views.DEFAULT_MAILBOX_PAGE, ge=1, le=views.MAX_PAGE)
                ) -> JSONResponse:
        """Documents addressed to the caller, newest first, one page."""
        page = views.mailbox(app.state.store, partner, cursor, limit)
        body: dict = {"documents": [{**views.plain(d), "href": f"/mailbox/{d['id']}"}
                                    for d in page.items]}
        if page.next_cursor:
            body["next_cursor"] = page.next_cursor
        return JSONResponse(body)

    @app.get("/mailbox/{document_id}", tags=["mailbox"],
             responses={200: {"description": "the document, as an attachment",
                              "content": {"application/edi-x12": {}, "text/csv": {},
                                          "application/json": {}}}, **models.ERRORS})
    def mailbox_document(document_id: str, partner: Partner = Depends(partner_of)) -> Response:
        """Download a document addressed to the caller (it then counts as delivered). An
        operator may download any finished run's document; that is not a delivery."""
        store: Store = app.state.store
        found = store.document(document_id) if document_id.isalnum() else None
        if found is None or not (found.get("recipient") == partner.id or partner.operator) \
                or store.submission(found["submission_id"])["run_state"] != "done":
            raise HTTPException(404, "no such document")
        if found.get("purged_at"):
            raise HTTPException(410, "the document was removed under the retention period")
        if found.get("recipient") == partner.id:
            store.mark_delivered(document_id)
        store.audit(actor=partner.id, action="download", target=document_id)
        return Response(found["content"], media_type=found["media_type"],
                        headers={"Content-Disposition": f'attachment; filename="{found["name"]}"'})

    return app


DOCS_STATIC = "/static/docs"


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc with their scripts and styles served by the
    gateway itself (the pinned ``fastapi-offline`` package ships them), so the pages work on a
    closed network."""
    import fastapi_offline

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=static), name="docs-static")

    # the pages' own inline start-up scripts need 'unsafe-inline'; nothing may come from
    # elsewhere (ReDoc's bundle would fetch its logo from its CDN)
    csp = {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline' "
           "blob:; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
           "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"}

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return _with_headers(csp, get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png"))

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _with_headers(csp, get_redoc_html(
            openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png", with_google_fonts=False))


def _with_headers(headers: dict[str, str], response: HTMLResponse) -> HTMLResponse:
    response.headers.update(headers)
    return response


def _follow_partners(path: Path, partners: Partners, stop: threading.Event,
                     every: float = 2.0) -> None:
    """Re-read the partners file when it changes (a token rotated, a partner added or
    disabled) and update ``partners`` in place; a broken file is logged and ignored."""
    from gateway.pipeline.partners import PartnerConfigError

    def stamp():
        try:
            info = path.stat()
            return info.st_mtime_ns, info.st_size, info.st_ino
        except OSError:
            return None

    seen = stamp()
    while not stop.wait(every):
        now = stamp()
        if now is None or now == seen:
            continue
        seen = now
        try:
            partners.refresh_from(Partners.load(path))
            log.info("partners file re-read")
        except PartnerConfigError as exc:
            log.error("partners file not re-read: %s", exc.__class__.__name__)


def _body(submission_id: str, status: str, duplicate: bool = False, **extra) -> dict:
    return {"submission_id": submission_id, **extra, "duplicate": duplicate, "status": status,
            "links": {"self": f"/submissions/{submission_id}"}}


def _respond_async(request: Request) -> bool:
    """RFC 7240 ``Prefer: respond-async``: answer 202 at once, do not wait for the run."""
    return "respond-async" in request.headers.get("prefer", "").lower()


class _StoreMetrics:
    """Gauges and histograms read from the store at scrape time, so they are right whichever
    process (API, embedded threads, Celery workers on other machines) did the work."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self):
        info = GaugeMetricFamily("ecm_gateway_info", "Gateway version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        by_status = GaugeMetricFamily("ecm_gateway_submissions",
                                      "Submissions by kind and status", labels=["kind", "status"])
        dead = 0
        for (kind, status), count in sorted(self.store.counts_by_status().items()):
            by_status.add_metric([kind, status], count)
            dead += count if status == Status.DEAD_LETTER else 0
        yield by_status
        depth = GaugeMetricFamily("ecm_gateway_queue_depth",
                                  "Submissions waiting (queued) or being processed (running)",
                                  labels=["state"])
        for state, count in self.store.queue_depth().items():
            if state != "done":
                depth.add_metric([state], count)
        yield depth
        yield GaugeMetricFamily("ecm_gateway_dead_letters",
                                "Submissions in dead_letter (replay them)", value=dead)
        for column, name, text in (
                ("latency_ms", "ecm_gateway_latency_seconds",
                 "Time from receipt to the end of processing, by kind"),
                ("run_ms", "ecm_gateway_processing_seconds",
                 "Time of the final processing run, by kind")):
            histogram = HistogramMetricFamily(name, text, labels=["kind"])
            for kind, (counts, total, count) in sorted(
                    self.store.latency_histogram(LATENCY_BUCKETS, column).items()):
                buckets = [(str(b), n) for b, n in zip(LATENCY_BUCKETS, counts)]
                histogram.add_metric([kind], buckets + [("+Inf", count)], total)
            yield histogram


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
