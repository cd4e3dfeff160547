"""The HTTP protocol ``serve`` runs (gateway/api/http.py): every accepted TCP connection has
``TCP_NODELAY``, also on a listening socket bound the way uvicorn binds the one ``serve
--api-workers N`` shares (``proto == 0``, which asyncio's own no-delay skips). Without it a
response's body waits for the client's delayed ACK of its head (~40 ms per answer)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.api.http import NoDelayH11Protocol
from gateway.cli import main


def _accepted_no_delay(protocol_class) -> int:
    """Serve one connection on a socket bound like uvicorn's ``Config.bind_socket``; the
    TCP_NODELAY of the server's side of the accepted connection."""
    seen: list[int] = []

    class Probe(protocol_class):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            seen.append(transport.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def app(scope, receive, send):  # pragma: no cover - never called
        pass

    listening = socket.socket(family=socket.AF_INET)  # proto 0, as uvicorn binds it
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(app, http=Probe, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listening])),
                              daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            threading.Event().wait(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            for _ in range(100):
                if seen:
                    break
                threading.Event().wait(0.02)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listening.close()
    assert seen, "no connection was accepted"
    return seen[0]


def test_uvicorns_own_protocol_leaves_nagle_on_for_a_shared_socket():
    # the cause: what `serve --api-workers 2` answered with before (a 40 ms floor)
    assert _accepted_no_delay(H11Protocol) == 0


def test_the_gateways_protocol_turns_nagle_off_on_every_connection():
    assert _accepted_no_delay(NoDelayH11Protocol) != 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_runs_the_no_delay_protocol(workers, tmp_path, monkeypatch):
    from gateway.pipeline.partners import issue_demo_tokens
    from tests.conftest import ROOT

    partners = tmp_path / "partners.yaml"
    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", partners)
    monkeypatch.setenv("ECM_GATEWAY_VAR", str(tmp_path))
    used = {}

    def run(*args, **kwargs):  # uvicorn.run (several processes): nothing is served here
        used["http"] = kwargs.get("http")

    def serve_one(server, *args, **kwargs):  # uvicorn.Server.run (one process)
        used["http"] = server.config.http

    monkeypatch.setattr("uvicorn.run", run)
    monkeypatch.setattr("uvicorn.Server.run", serve_one)
    for name in ("STORE", "PARTNERS", "QUEUE", "DROP", "WORKERS", "API_WORKERS"):
        # serve hands its settings to its processes through the environment: undone after
        monkeypatch.setenv(f"ECM_GATEWAY_{name}", "")
        monkeypatch.delenv(f"ECM_GATEWAY_{name}")
    assert main(["serve", "--store", f"sqlite:///{tmp_path / 'g.sqlite'}", "--partners",
                 str(partners), "--api-workers", workers]) == 0
    assert used["http"] is NoDelayH11Protocol
