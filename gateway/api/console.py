"""The operator console at /console: server-rendered pages (Jinja2, autoescaped) over the same
views as the API (:mod:`gateway.api.views`), for plan operations staff (the ``operator`` role
sees every partner) and for partners (each sees only its own).

Security, in one place:

* sign-in with a partner's or operator's bearer token gives a session: a random cookie
  (``HttpOnly``, ``SameSite=Strict``, ``Path=/console``, ``Secure`` over HTTPS) whose SHA-256 is
  kept in the store with the partner, the SHA-256 of the token it was opened with (a rotated or
  removed token ends the session) and its CSRF token; it expires after
  :data:`SESSION_SECONDS`, and sign-out ends it;
* every form that changes something (sign-in, sign-out, replay) carries a CSRF token: the
  session's, or before sign-in a double-submit cookie;
* sign-in attempts are limited per client address (:class:`_Attempts`, 429 past the limit);
* every page has a Content-Security-Policy without inline scripts or styles (the one script
  and the style sheet are served from /console/static), ``frame-ancestors 'none'``, no
  referrer, ``nosniff`` and ``no-store``;
* what partners supply (file names, findings, identifiers) is escaped by the templates;
  nothing is marked safe except the server-made chart;
* another partner's submission or document answers 404, as the API does.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.api import views
from gateway.pipeline.partners import Partner, Partners, token_hash
from gateway.pipeline.status import STATUSES
from gateway.pipeline.store import Store
from gateway.x12.ackview import view as ack_view

HERE = Path(__file__).parent
COOKIE = "ecm_console"
PRE_COOKIE = "ecm_console_signin"
SESSION_SECONDS = 8 * 3600
SIGNIN_ATTEMPTS = 10  # per client address ...
SIGNIN_WINDOW = 300.0  # ... in this many seconds
KINDS = ("x12", "file", "fhir")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
ACK_ROLES = ("ack-999", "ack-277ca", "ack-ta1", "ta1")


class _Attempts:
    """Sign-in attempts per client address in a sliding window (this process's count)."""

    def __init__(self, limit: int = SIGNIN_ATTEMPTS, window: float = SIGNIN_WINDOW) -> None:
        self.limit, self.window = limit, window
        self._lock = threading.Lock()
        self._seen: dict[str, deque] = {}

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:  # forget quiet addresses
                self._seen = {k: v for k, v in self._seen.items()
                              if v and v[-1] > now - self.window}
            seen = self._seen.setdefault(client, deque())
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if len(seen) >= self.limit:
                return False
            seen.append(now)
            return True

    def reset(self, client: str) -> None:
        with self._lock:
            self._seen.pop(client, None)


class _NotSignedIn(Exception):
    pass


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _when(value) -> str:
    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(value) -> str:
    if value is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _attachment_name(name: str | None, fallback: str) -> str:
    """A Content-Disposition file name that cannot break the header."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "").name).strip("._")
    return cleaned[:120] or fallback


def install_console(app: FastAPI) -> None:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["when"] = _when
    env.filters["size"] = _size
    attempts = _Attempts()

    def store() -> Store:
        return app.state.store

    def partners() -> Partners:
        return app.state.partners

    app.add_middleware(ConsoleHeaders)

    @app.exception_handler(_NotSignedIn)
    async def not_signed_in(request: Request, exc: _NotSignedIn) -> Response:
        target = "/console/signin"
        if request.method == "GET" and request.url.path != "/console/":
            target += "?" + urlencode({"next": request.url.path})
        return RedirectResponse(target, status_code=303)

    # -- sessions ---------------------------------------------------------------------------
    def session_of(request: Request) -> tuple[Partner, dict]:
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > 200:
            raise _NotSignedIn()
        found = store().session(_sha(cookie))
        partner = partners().partners.get(found["partner"]) if found else None
        if partner is None or partner.disabled or not partner.token_sha256 or \
                not hmac.compare_digest(
                partner.token_sha256, found["token_sha256"]):
            raise _NotSignedIn()  # expired, signed out, or the token was rotated or removed
        return partner, found

    def check_csrf(session: dict, sent: str) -> None:
        if not sent or not hmac.compare_digest(session["csrf"], sent):
            raise HTTPException(403, "the form has expired: reload the page and try again")

    def page(request: Request, template: str, viewer: Partner | None, session: dict | None,
             status_code: int = 200, **context) -> HTMLResponse:
        html = env.get_template(template).render(
            viewer=viewer, csrf=session["csrf"] if session else "", version=__version__,
            path=request.url.path, partner_names={p.id: p.name for p in
                                                  partners().partners.values()},
            **context)
        return HTMLResponse(html, status_code=status_code)

    @app.get("/console/signin", include_in_schema=False)
    def signin_form(request: Request, next: str = "") -> HTMLResponse:  # noqa: A002
        pre = secrets.token_urlsafe(24)
        response = page(request, "signin.html", None, None, pre=pre, next=_local(next),
                        error=None)
        _set_cookie(request, response, PRE_COOKIE, pre, 600)
        return response

    @app.post("/console/signin", include_in_schema=False)
    def signin(request: Request, token: str = Form(""), csrf: str = Form(""),
               next: str = Form("")) -> Response:  # noqa: A002
        client = request.client.host if request.client else "?"
        pre = request.cookies.get(PRE_COOKIE, "")
        if not pre or not csrf or not hmac.compare_digest(pre, csrf):
            raise HTTPException(403, "the sign-in form has expired: reload it and try again")
        if not attempts.allow(client):
            fresh = secrets.token_urlsafe(24)
            response = page(request, "signin.html", None, None, status_code=429, pre=fresh,
                            next=_local(next), error="Too many sign-in attempts. Wait a few "
                                                     "minutes and try again.")
            response.headers["Retry-After"] = str(int(SIGNIN_WINDOW))
            _set_cookie(request, response, PRE_COOKIE, fresh, 600)
            return response
        partner = partners().authenticate(token.strip()) if token.strip() else None
        if partner is None:
            fresh = secrets.token_urlsafe(24)
            response = page(request, "signin.html", None, None, status_code=401, pre=fresh,
                            next=_local(next), error="That token is not valid.")
            _set_cookie(request, response, PRE_COOKIE, fresh, 600)
            return response
        attempts.reset(client)
        cookie = secrets.token_urlsafe(32)
        store().create_session(session_sha256=_sha(cookie), partner=partner.id,
                               token_sha256=token_hash(token.strip()),
                               csrf=secrets.token_urlsafe(32),
                               expires_at=datetime.now(UTC) + timedelta(seconds=SESSION_SECONDS))
        store().audit(actor=partner.id, action="console-signin", target=partner.id)
        response = RedirectResponse(_local(next) or "/console/", status_code=303)
        _set_cookie(request, response, COOKIE, cookie, SESSION_SECONDS)
        response.delete_cookie(PRE_COOKIE, path="/console")
        return response

    @app.post("/console/signout", include_in_schema=False)
    def signout(request: Request, csrf: str = Form("")) -> Response:
        partner, session = session_of(request)
        check_csrf(session, csrf)
        store().end_session(session["id_sha256"])
        store().audit(actor=partner.id, action="console-signout", target=partner.id)
        response = RedirectResponse("/console/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # -- pages ------------------------------------------------------------------------------
    @app.get("/console/", include_in_schema=False)
    def dashboard(request: Request) -> HTMLResponse:
        viewer, session = session_of(request)
        now = datetime.now(UTC)
        scope = viewer.sees_partner
        day = store().counts_since(now - timedelta(hours=24), scope)
        week = store().counts_since(now - timedelta(days=7), scope)
        daily = store().daily_counts(7, scope, now)
        depth = store().queue_depth() if viewer.operator else None
        dead = store().list_submissions(partner=scope, status="dead_letter", limit=10)
        return page(request, "dashboard.html", viewer, session,
                    day=_table(day), week=_table(week), chart=Markup(_chart(daily)),
                    daily=daily, depth=depth, dead=dead)

    @app.get("/console/submissions", include_in_schema=False)
    def submissions(request: Request, partner: str = "", kind: str = "", status: str = "",
                    since: str = "", until: str = "", q: str = "", cursor: str = "",
                    limit: int = views.DEFAULT_PAGE) -> HTMLResponse:
        viewer, session = session_of(request)
        filters = views.Filters(partner=partner, kind=kind, status=status, since=since,
                                until=until, q=q)
        error = None
        try:
            result = views.list_submissions(store(), viewer, filters, cursor or None, limit)
        except HTTPException as exc:
            result, error = views.Page([]), exc.detail
        query = filters.query()
        next_href = ("/console/submissions?" + urlencode({**query, "cursor":
                                                          result.next_cursor})
                     if result.next_cursor else None)
        first_href = ("/console/submissions?" + urlencode(query)) if cursor else None
        return page(request, "submissions.html", viewer, session, rows=result.items,
                    filters=filters, error=error, next_href=next_href, first_href=first_href,
                    kinds=KINDS, statuses=STATUSES,
                    partner_ids=sorted(p.id for p in partners().partners.values()
                                       if not p.operator))

    @app.get("/console/submissions/{submission_id}", include_in_schema=False)
    def submission(request: Request, submission_id: str, rule: str = "", cursor: str = ""
                   ) -> HTMLResponse:
        viewer, session = session_of(request)
        found = views.visible_submission(store(), viewer, submission_id)
        store().audit(actor=viewer.id, action="console-read", target=submission_id)
        view = views.finding_view(viewer)
        findings = views.findings(store(), submission_id, cursor or None, 100, rule or None,
                                  view=view)
        counts = store().finding_counts(submission_id, view=view)
        documents = [d for d in store().documents(submission_id)
                     if found["run_state"] == "done"
                     and (viewer.operator or d.get("recipient") == viewer.id)]
        acks = []
        for document in documents:
            if document["role"] in ACK_ROLES and document["size"] <= 5 * 1024 * 1024:
                content = store().document(document["id"])["content"]
                acks.append({"document": document, "view": ack_view(content)})
        parent = store().submission(found["parent_id"]) if found.get("parent_id") else None
        if parent is not None and not viewer.sees(parent["partner"]):
            parent = None
        query = {"rule": rule} if rule else {}
        next_href = (f"/console/submissions/{submission_id}?" + urlencode(
            {**query, "cursor": findings.next_cursor}) + "#findings") \
            if findings.next_cursor else None
        return page(request, "submission.html", viewer, session, s=found,
                    history=store().history(submission_id), findings=findings.items,
                    counts=counts, total=sum(c["count"] for c in counts), rule=rule,
                    next_href=next_href, documents=documents, acks=acks, parent=parent,
                    replays=store().replays_of(submission_id),
                    keys=store().search_keys_of(submission_id))

    @app.get("/console/submissions/{submission_id}/raw", include_in_schema=False)
    def raw(request: Request, submission_id: str) -> Response:
        viewer, _ = session_of(request)
        found = views.visible_submission(store(), viewer, submission_id)
        if found.get("payload_purged_at"):
            raise HTTPException(404, "the raw input was removed under the retention period")
        store().audit(actor=viewer.id, action="console-download-raw", target=submission_id)
        name = _attachment_name(found.get("filename"), f"{submission_id}.x12"
                                if found["kind"] == "x12" else f"{submission_id}.dat")
        return Response(store().raw_payload(submission_id),
                        media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/console/submissions/{submission_id}/replay", include_in_schema=False)
    def replay_confirm(request: Request, submission_id: str) -> HTMLResponse:
        viewer, session = session_of(request)
        found = views.visible_submission(store(), viewer, submission_id)
        return page(request, "replay.html", viewer, session, s=found,
                    replays=store().replays_of(submission_id))

    @app.post("/console/submissions/{submission_id}/replay", include_in_schema=False)
    def replay_submission(request: Request, submission_id: str, csrf: str = Form("")
                          ) -> Response:
        from gateway.pipeline.process import replay

        viewer, session = session_of(request)
        check_csrf(session, csrf)
        found = views.visible_submission(store(), viewer, submission_id)
        if found.get("payload_purged_at"):
            raise HTTPException(400, "the raw input was removed under the retention period; "
                                     "it cannot be replayed")
        try:
            new_id = replay(store(), partners(), submission_id, actor=viewer.id,
                            queue=app.state.queue, force=True)  # the console's explicit
            # action; documents identical to ones delivered before are still not re-sent
        except (ValueError, PermissionError) as exc:  # the replay rules refuse it: say why
            raise HTTPException(409, str(exc)) from None
        new_id = new_id if isinstance(new_id, str) else new_id.submission_id
        return RedirectResponse(f"/console/submissions/{new_id}", status_code=303)

    @app.get("/console/documents/{document_id}", include_in_schema=False)
    def document(request: Request, document_id: str) -> Response:
        viewer, _ = session_of(request)
        found = store().document(document_id) if document_id.isalnum() else None
        owner = store().submission(found["submission_id"]) if found else None
        if found is None or owner is None or owner["run_state"] != "done" or \
                found.get("purged_at") or not (viewer.operator
                                               or found.get("recipient") == viewer.id):
            raise HTTPException(404, "no such document")
        if found.get("recipient") == viewer.id:
            store().mark_delivered(document_id)
        store().audit(actor=viewer.id, action="download", target=document_id)
        name = _attachment_name(found["name"], f"{document_id}.dat")
        return Response(found["content"], media_type=found["media_type"],
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/console/mailbox", include_in_schema=False)
    def mailbox(request: Request, cursor: str = "") -> HTMLResponse:
        viewer, session = session_of(request)
        error = None
        try:
            result = views.mailbox(store(), viewer, cursor or None, views.DEFAULT_PAGE)
        except HTTPException as exc:
            result, error = views.Page([]), exc.detail
        next_href = ("/console/mailbox?" + urlencode({"cursor": result.next_cursor})
                     if result.next_cursor else None)
        return page(request, "mailbox.html", viewer, session, documents=result.items,
                    next_href=next_href, first_href="/console/mailbox" if cursor else None,
                    error=error)

    earlier = app.exception_handlers.get(StarletteHTTPException)  # e.g. the FHIR one

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/console") and exc.status_code in (400, 403, 404, 405, 409, 410):
            html = env.get_template("error.html").render(
                viewer=None, csrf="", version=__version__, path=request.url.path,
                status=exc.status_code, detail=exc.detail, partner_names={})
            return HTMLResponse(html, status_code=exc.status_code)
        if earlier is not None:
            return await earlier(request, exc)
        return await http_exception_handler(request, exc)

    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)


class ConsoleHeaders:
    """Pure ASGI middleware: the console's security headers on every /console answer; every
    other request passes through untouched (a BaseHTTPMiddleware would wrap the exceptions the
    body guard raises while a request body is read)."""

    HEADERS = ((b"content-security-policy", CSP.encode()),
               (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"no-referrer"))

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/console"):
            await self.app(scope, receive, send)
            return
        static = path.startswith("/console/static")

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {b"content-security-policy", b"x-content-type-options",
                         b"x-frame-options", b"referrer-policy", b"cache-control"}
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in names or (static and k.lower() ==
                                                         b"cache-control")]
                headers += list(self.HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _set_cookie(request: Request, response: Response, name: str, value: str,
                max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def _local(target: str) -> str:
    """Only a path inside the console (no open redirect)."""
    if target.startswith("/console/") and not target.startswith("/console//") and \
            re.fullmatch(r"[A-Za-z0-9/_.-]*", target):
        return target
    return ""


def _table(counts: dict[tuple[str, str], int]) -> dict:
    """``{"kinds": [...], "statuses": [...], "cells": {(kind, status): n}, "total": n}``."""
    kinds = sorted({k for k, _ in counts})
    statuses = [s for s in STATUSES if any(st == s for _, st in counts)]
    return {"kinds": kinds, "statuses": statuses, "cells": counts,
            "total": sum(counts.values()),
            "by_kind": {k: sum(n for (kk, _), n in counts.items() if kk == k) for k in kinds}}


def _chart(daily: list[tuple[str, int, int]]) -> str:
    """A bar chart of the last days (received, of which rejected) as SVG, drawn here: only
    numbers and dates go in, so nothing needs escaping."""
    width, height, pad, label = 560, 180, 28, 20
    top = max([n for _, n, _ in daily] + [1])
    slot = (width - pad) / max(len(daily), 1)
    bar = slot * 0.6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-labelledby="chart-title">',
             '<title id="chart-title">Submissions per day, last 7 days (received; of which '
             'rejected in red)</title>',
             f'<line x1="{pad}" y1="{height - label}" x2="{width}" y2="{height - label}" '
             'stroke="#555" stroke-width="1"/>']
    usable = height - label - 16
    for i, (day, received, rejected) in enumerate(daily):
        x = pad + i * slot + (slot - bar) / 2
        h = usable * received / top
        hr = usable * rejected / top
        y = height - label - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'fill="#2b6cb0"><title>{day}: {received} received</title></rect>')
        if rejected:
            parts.append(f'<rect x="{x:.1f}" y="{height - label - hr:.1f}" width="{bar:.1f}" '
                         f'height="{hr:.1f}" fill="#c53030"><title>{day}: {rejected} '
                         'rejected</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" font-size="11" '
                     f'text-anchor="middle" fill="#1a202c">{received}</text>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - 5}" font-size="11" '
                     f'text-anchor="middle" fill="#1a202c">{day[5:]}</text>')
    parts.append("</svg>")
    return "".join(parts)
