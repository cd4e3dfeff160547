"""Two ASGI middlewares at the edge of the HTTP API (trust boundaries, issue 12).

:class:`BodyGuard` — a request body is checked before a byte of it is read: on every path
that takes one from a partner (``/x12``, ``/files``, ``/fhir``, ``/submissions``,
``/extracts``) the bearer token is checked first (401 without reading the body), then a
declared ``Content-Length`` against the path's limit (413 without reading it); a body without a
length (chunked) is counted while the app reads it and refused (413) the moment it passes the
limit, so nothing beyond the limit is ever read or spooled to disk, and an unauthenticated
upload is never spooled at all. The answer under ``/fhir`` is an OperationOutcome, elsewhere
JSON (the app's own handlers write both).

:class:`AccessLog` — one structured JSON line per request on the ``gateway.access`` logger:
method, the route template (``/fhir/{resource_type}/{resource_id}``, never the concrete path
nor the query string, so a CIN in ``patient.identifier`` or in a URL never reaches a log),
status, duration, body size and the partner id (never its token).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException

from gateway.pipeline.partners import Partners

access_log = logging.getLogger("gateway.access")
GUARDED = ("/x12", "/files", "/fhir", "/submissions", "/extracts")
OTHER_BODY_LIMIT = 1024 * 1024  # any other path that takes a body (none carries a file)
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# when no route matched: each path segment that is not a plain word becomes {…}
_PLAIN = re.compile(r"^[A-Za-z_$][A-Za-z_$.-]{0,40}$")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit (the app's HTTP error
    handlers answer 413: an OperationOutcome under /fhir)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is larger than {limit} bytes")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class BodyGuard:
    """See the module docstring. ``limits``: ``(path prefix, bytes)``, first match wins;
    ``partners``: returns the app's :class:`Partners` (read per request, so a reloaded file
    counts)."""

    def __init__(self, app, partners: Callable[[], Partners],
                 limits: tuple[tuple[str, int], ...],
                 access_token: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.partners = partners
        self.limits = limits
        # under /fhir a SMART access token opens too (gateway/api/smart.py): a store look-up
        self.access_token = access_token

    def limit_of(self, path: str) -> int:
        for prefix, limit in self.limits:
            if _under(path, prefix):
                return limit
        return OTHER_BODY_LIMIT

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limit_of(path)
        headers = {k.lower(): v for k, v in scope.get("headers") or ()}
        if any(_under(path, p) for p in GUARDED) and \
                not await self._authorised(headers.get(b"authorization", b""), path):
            await self._refuse(scope, send, 401)
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            text = declared.decode("latin-1").strip()
            if not text.isdigit():
                await self._refuse(scope, send, 400)
                return
            if int(text) > limit:
                await self._refuse(scope, send, 413)
                return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    async def _authorised(self, header: bytes, path: str) -> bool:
        if self._partner(header) is not None:
            return True
        if self.access_token is None or not _under(path, "/fhir"):
            return False
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return await asyncio.to_thread(self.access_token, token.strip())

    def _partner(self, header: bytes):
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.partners().authenticate(token.strip())

    async def _refuse(self, scope, send, status: int) -> None:
        """The app's own error answer for ``status`` (OperationOutcome under /fhir), through
        the app's HTTP error handler, without reading the body."""
        from starlette.requests import Request

        app = scope.get("app")
        handler = None
        if app is not None:
            handler = app.exception_handlers.get(HTTPException) or \
                app.exception_handlers.get(status)
        detail = {401: "a valid bearer token of a trading partner is required",
                  413: "the body is larger than the limit of this endpoint",
                  400: "Content-Length is not a number"}[status]
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        exc = HTTPException(status, detail, headers=headers)

        async def nothing():
            return {"type": "http.request", "body": b"", "more_body": False}

        if handler is not None:
            response = await handler(Request(scope, nothing), exc)
        else:
            from starlette.responses import JSONResponse

            response = JSONResponse({"detail": detail}, status, headers=headers)
        response.headers["Connection"] = "close"  # the unread body is not drained
        await response(scope, nothing, send)


class AccessLog:
    """See the module docstring."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        size = 0

        async def sizing_receive():
            nonlocal size
            message = await receive()
            if message.get("type") == "http.request":
                size += len(message.get("body", b""))
            return message

        async def status_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, sizing_receive, status_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or redacted_path(scope.get("path", ""))
            state = scope.get("state") or {}
            partner = state.get("partner_id") if isinstance(state, dict) else None
            extra = {"method": scope.get("method"), "route": template, "status": status,
                     "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                     "size": size}
            if partner:
                extra["partner"] = partner
            access_log.info("request", extra=extra)


def redacted_path(path: str) -> str:
    """A path with every segment that is not a plain word (an id, a CIN, anything with
    digits) replaced by ``{…}``; no query string."""
    parts = path.split("/")
    return "/".join(p if not p or _PLAIN.match(p) else "{…}" for p in parts)
