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
