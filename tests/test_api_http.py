"""The HTTP protocol ``serve`` runs (gateway/api/http.py): every accepted TCP connection has
``TCP_NODELAY``, also on a listening socket bound the way uvicorn binds the one ``serve
--api-workers N`` shares (``proto == 0``, which asyncio's own no-delay skips). Without it a
response's body waits for the client's delayed ACK of its head (~40 ms per answer)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

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

    def run(config, sockets):  # several processes: nothing is served here
        used["http"] = config.http
        used["sockets"] = len(sockets)
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1

    def serve_one(server, *args, **kwargs):  # uvicorn.Server.run (one process)
        used["http"] = server.config.http

    monkeypatch.setattr("gateway.api.http.run_balanced", run)
    monkeypatch.setattr("uvicorn.Server.run", serve_one)
    for name in ("STORE", "PARTNERS", "QUEUE", "DROP", "WORKERS", "API_WORKERS"):
        # serve hands its settings to its processes through the environment: undone after
        monkeypatch.setenv(f"ECM_GATEWAY_{name}", "")
        monkeypatch.delenv(f"ECM_GATEWAY_{name}")
    assert main(["serve", "--store", f"sqlite:///{tmp_path / 'g.sqlite'}", "--partners",
                 str(partners), "--api-workers", workers]) == 0
    assert used["http"] is NoDelayH11Protocol
    assert used.get("sockets", 1) == int(workers)  # one listening socket per API process


def _established_by_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections on local ``port`` each process holds (from
    /proc: the process's socket inodes against /proc/net/tcp)."""
    states = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                states[inode] = True
    counts = {}
    for pid in pids:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        counts[pid] = sum(1 for inode in inodes if inode in states)
    return counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_api_processes_share_a_burst_of_connections(tmp_path):
    """`serve --api-workers 2`: 40 keep-alive clients connecting at once are spread over both
    API processes (each listens on a SO_REUSEPORT socket of its own). With uvicorn's one
    shared socket, the process that woke first accepted the whole burst (19 of 20)."""
    from gateway.pipeline.partners import issue_demo_tokens
    from tests.conftest import ROOT

    partners = tmp_path / "partners.yaml"
    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", partners)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECM_GATEWAY_")}
    env["ECM_GATEWAY_VAR"] = str(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--store",
         f"sqlite:///{tmp_path / 'g.sqlite'}", "--partners", str(partners), "--port",
         str(port), "--api-workers", "2"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connections = []
    try:
        deadline = time.monotonic() + 90
        children: list[int] = []
        while time.monotonic() < deadline:
            children = [int(p) for p in open(
                f"/proc/{server.pid}/task/{server.pid}/children").read().split()]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as check:
                    check.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    if check.recv(64).startswith(b"HTTP/1.1 200") and len(children) >= 2:
                        # both processes up: every one of them answers
                        break
            except OSError:
                pass
            time.sleep(0.2)
        time.sleep(1.0)
        for _ in range(40):
            connections.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for conn in connections:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for conn in connections:
            assert conn.recv(64).startswith(b"HTTP/1.1 200")
        apis = [int(p) for p in open(
            f"/proc/{server.pid}/task/{server.pid}/children").read().split()]
        counts = _established_by_process(apis, port)
        held = sorted(n for n in counts.values() if n)
        assert sum(held) == 40, counts
        assert len(held) == 2 and held[0] >= 8, counts  # binomial(40, 1/2) < 8: ~1e-5
    finally:
        for conn in connections:
            conn.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_a_port_in_use_is_refused_not_shared():
    """SO_REUSEPORT would let a second server (another gateway started by mistake) take half
    the connections of a port: the API processes' sockets are bound only where a plain bind
    would succeed."""
    from gateway.api.http import reuse_port_sockets

    first = reuse_port_sockets("127.0.0.1", 0, 2)
    try:
        port = first[0].getsockname()[1]
        assert {s.getsockname()[1] for s in first} == {port}
        with pytest.raises(OSError):
            reuse_port_sockets("127.0.0.1", port, 2)  # a second gateway on the same port
    finally:
        for sock in first:
            sock.close()
    with socket.socket() as other:  # any other server listening there
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            reuse_port_sockets("127.0.0.1", other.getsockname()[1], 2)
