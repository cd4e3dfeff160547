"""The HTTP API. This version serves health and metrics; the submission, mailbox and FHIR
endpoints of contract.md arrive with the gateway and FHIR issues."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from gateway import __version__


def create_app(store: str | None = None) -> FastAPI:
    app = FastAPI(title="ECM Gateway", version=__version__,
                  description="Data exchange for Medi-Cal Enhanced Care Management")
    app.state.store_url = store
    registry = CollectorRegistry()
    info = Gauge("ecm_gateway_info", "Gateway version", ["version"], registry=registry)
    info.labels(version=__version__).set(1)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
