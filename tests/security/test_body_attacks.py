"""Bodies checked before they are read: an unauthenticated or oversized upload is answered
before its body is sent (nothing read, nothing spooled), and a body without a length is cut off
at the limit."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

GIB = 1024 ** 3


def _raw(served, head: str, body: bytes = b"", wait: float = 5.0) -> tuple[float, bytes]:
    """Send the request head (and ``body``) without the rest of the declared body; the time
    the answer took and its first bytes."""
    parts = urlsplit(served.base)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        started = time.monotonic()
        answer = b""
        try:
            sock.sendall(head.encode("latin-1") + body)
        except (BrokenPipeError, ConnectionResetError):  # answered and closed meanwhile
            pass
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return time.monotonic() - started, answer


@pytest.mark.parametrize("path, media", [
    ("/files", "multipart/form-data; boundary=XyZ"),
    ("/x12", "application/edi-x12"),
    ("/fhir/CarePlan", "application/fhir+json")])
def test_no_token_is_refused_before_the_body_is_read(served, path, media):
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {media}\r\n"
            f"Content-Length: {GIB}\r\n\r\n")
    took, answer = _raw(served, head, b"--XyZ\r\n" + b"A" * 65536)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert took < 2  # answered with 1 GiB still unsent
    if path.startswith("/fhir"):
        assert b"fhir+json" in answer.lower()


@pytest.mark.parametrize("path", ["/files", "/x12", "/fhir/CarePlan"])
def test_a_declared_length_over_the_limit_is_refused_before_reading(served, path):
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{served.tokens['harbor']}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {GIB}\r\n\r\n")
    took, answer = _raw(served, head, b"A" * 65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert took < 2


def test_a_body_without_length_is_cut_off_at_the_limit(served):
    """A chunked body (no Content-Length) is counted while it is read: the answer 413 comes
    once the limit is passed, while the client is still sending."""
    import select

    from gateway.fhir.parse import MAX_BODY_BYTES

    parts = urlsplit(served.base)
    block = b" " * (1024 * 1024)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    sent, answer = 0, b""
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((f"POST /fhir/CarePlan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      f"{served.tokens['harbor']}\r\nContent-Type: application/fhir+json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        while sent < 4 * MAX_BODY_BYTES:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(block)
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (TimeoutError, ConnectionResetError):
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"fhir+json" in answer.lower()
    assert sent < MAX_BODY_BYTES + 24 * len(block)  # stopped near the limit, not at the end
    assert served.client.get("/healthz").status_code == 200


def test_a_refused_upload_leaves_nothing_in_the_servers_temporary_folder(served):
    from pathlib import Path

    tmp = Path(served.env["TMPDIR"])
    before = sorted(tmp.iterdir())
    head = ("POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            f"boundary=XyZ\r\nContent-Length: {GIB}\r\n\r\n")
    _raw(served, head, b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                       b"filename=\"a.csv\"\r\n\r\n" + b"A" * (4 * 1024 * 1024))
    assert sorted(tmp.iterdir()) == before
