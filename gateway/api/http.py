"""The HTTP/1.1 protocol ``serve`` runs: uvicorn's h11 protocol with ``TCP_NODELAY`` set on
every accepted connection.

Why: asyncio sets ``TCP_NODELAY`` on a connection only when its socket says ``proto ==
IPPROTO_TCP`` (``asyncio.base_events._set_nodelay``). A server that binds its own listening
socket with ``socket.socket(family=...)`` -- as uvicorn does for ``workers > 1`` (``Config.
bind_socket``, the socket the API processes of ``serve --api-workers N`` share) -- has
``proto == 0``, and so have the connections it accepts: Nagle's algorithm stays on. A response
goes out in two writes (the head, then the body); the body waits for the client's ACK of the
head, which a client with delayed ACKs sends ~40 ms later. Every answer then took >= 40 ms,
even ``GET /healthz`` with one client (1 ms with one process, whose socket asyncio made from
``getaddrinfo`` with ``proto = IPPROTO_TCP``). The server must cope with any client, so the
option is set here, on the server's side of every connection, whatever the socket's origin.
"""

from __future__ import annotations

import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


def no_delay(transport) -> None:
    """Turn Nagle's algorithm off on a TCP transport's socket (nothing for a Unix socket)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # a connection already closed by its peer
        pass


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 HTTP protocol, each connection with ``TCP_NODELAY``."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        no_delay(transport)
        super().connection_made(transport)


# -- serve --api-workers N: one listening socket per API process ------------------------------
# uvicorn's supervisor (``workers > 1``) binds ONE socket that every process accepts from. Each
# process's asyncio loop, woken by a new connection, accepts every connection waiting (up to
# the backlog), so whichever process wakes first takes a whole burst: 20 keep-alive clients
# connecting together ended 19 on one process and 1 on the other, and the second core stayed
# idle while the clients queued on the first (measured with bench/bench_fhir.py and `ss`).
# Here each process listens on a socket of its own, all bound to the same port with
# SO_REUSEPORT: the kernel spreads new connections over them by a hash of the connection's
# addresses, whichever process is awake. (Linux lets only sockets of the same user join a
# port's group.) Where SO_REUSEPORT is missing, ``serve`` keeps uvicorn's shared socket.


def reuse_port_available() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def reuse_port_sockets(host: str, port: int, count: int, backlog: int = 2048
                       ) -> list[socket.socket]:
    """``count`` listening TCP sockets on ``host:port`` (port 0: one free port for all), each
    with SO_REUSEPORT, inheritable by the API processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        # a port another server (or a second gateway) already listens on is refused, as a
        # plain bind refuses it -- not silently shared through SO_REUSEPORT
        with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def run_balanced(config, sockets: list[socket.socket]) -> None:
    """uvicorn's multi-process supervisor (signals, health checks, a dead process replaced),
    with process ``i`` -- and any replacement of it -- serving ``sockets[i]`` only. The two
    methods that make processes are uvicorn 0.54's, with the slot's socket."""
    import logging

    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    logger = logging.getLogger("uvicorn.error")

    class Balanced(Multiprocess):
        def init_processes(self) -> None:
            for index in range(self.processes_num):
                process = Process(self.config, [sockets[index]])
                process.start()
                self.processes.append(process)

        def restart_all(self) -> None:  # SIGHUP: each slot replaced in turn
            for index, old in enumerate(self.processes):
                if self.should_exit.is_set():
                    return
                new = Process(self.config, [sockets[index]])
                new.start()
                if not new.wait_until_ready(self.config.timeout_worker_healthcheck,
                                            self.should_exit):
                    new.kill()
                    new.join()
                    return
                old.terminate()
                old.join()
                self.processes[index] = new

        def keep_subprocess_alive(self) -> None:
            if self.should_exit.is_set():
                return
            for index, process in enumerate(self.processes):
                if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                    continue
                process.kill()
                process.join()
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("API process [%s] failed to start, stopping", process.pid)
                    self.should_exit.set()
                    return
                if self.should_exit.is_set():
                    return
                logger.info("API process [%s] died; starting another", process.pid)
                process = Process(self.config, [sockets[index]])
                process.start()
                self.processes[index] = process

    Balanced(config, sockets=sockets).run()


# -- a server process ready before its first request ------------------------------------------
# The first FHIR create of a fresh process loaded the profiles, code sets, fhir.resources model
# classes and mapping specs (hundreds of ms), and afterwards the cyclic garbage collector kept
# walking everything they hold: full collections of 60-260 ms stopped a whole API process in
# the middle of the 20-client FHIR benchmark (seen with gc.callbacks), every client of that
# process waiting -- most of the p99. So a server process loads them first, then moves what it
# holds after start-up out of the collector's reach (``gc.freeze``: never scanned again) and
# collects young objects less often; what requests allocate is collected as before.
GC_THRESHOLDS = (5000, 20, 20)
_WARM_CAREPLAN = {
    "resourceType": "CarePlan", "id": "warm-up", "status": "active", "intent": "plan",
    "subject": {"identifier": {"system": "https://ecm-gateway.example.org/fhir/sid/medi-cal-cin",
                               "value": "00000000A"}},
    "activity": [{"detail": {"status": "completed", "code": {"coding": [
        {"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "G9008"}]},
        "scheduledPeriod": {"start": "2026-01-02", "end": "2026-01-02"}}}]}


def prepare_process() -> None:
    """Ready this server process for its first request (see above): what the FHIR requests
    and their routing load, loaded now; then the garbage collector set for a server. Called
    by ``serve`` before it listens, in every API process of ``serve --api-workers N``."""
    import gc
    import json
    import logging

    try:
        from gateway.fhir.mapping.careplan import careplan_to_encounters
        from gateway.fhir.mapping.rtf import careplans_to_rtf
        from gateway.fhir.validate import check_payload

        check_payload(json.dumps(_WARM_CAREPLAN).encode(), "json", expected="CarePlan")
        careplans_to_rtf(_WARM_CAREPLAN)
        careplan_to_encounters(_WARM_CAREPLAN)
    except Exception as exc:  # noqa: BLE001 - the first request then loads what is missing
        logging.getLogger("gateway").warning("warming the FHIR path failed: %s",
                                             exc.__class__.__name__)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
