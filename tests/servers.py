"""Real servers for the reliability tests and the load benchmark, each on a free loopback port
in a temporary folder: the gateway (``ecm-gateway serve`` / ``worker`` in subprocesses), a
throwaway PostgreSQL cluster and a Redis server. When a binary is missing the context managers
raise :class:`Unavailable` (the tests turn that into a skip with the reason)."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLEAN_837 = (ROOT / "fixtures" / "837p" / "ecm-clean.x12").read_bytes()
# ecm-clean.x12 is billed by NPI 1000000004 / TIN 940000000: a provider the demo file lacks
VALLEY = {"id": "valley", "name": "Valley Health (test provider)", "role": "provider",
          "identifiers": {"npis": ["1000000004"], "tins": ["940000000"],
                          "x12_sender_ids": ["ECMGATEWAY"]}}


class Unavailable(Exception):
    """A server binary (or driver) is not installed here."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def x12_variant(number: int, base: bytes = CLEAN_837) -> bytes:
    """``base`` with ISA13/IEA02 and GS06/GE02 set to ``number``: a distinct interchange (not a
    resubmission) with the same claims."""
    text = base.decode("latin-1")
    sep = text[3]
    isa_end = text.index("~")
    fields = text[:isa_end].split(sep)
    old = fields[13]
    fields[13] = f"{number:09d}"
    text = sep.join(fields) + text[isa_end:]
    text = text.replace(f"IEA{sep}1{sep}{old}~", f"IEA{sep}1{sep}{number:09d}~")
    # and GS06/GE02: a different interchange must not reuse a sender's GS06 either (999)
    segments = text.split("~")
    for i, segment in enumerate(segments):
        parts = segment.split(sep)
        tag = parts[0].strip()
        if tag == "GS" and len(parts) > 6:
            parts[6] = str(number)
        elif tag == "GE" and len(parts) > 2:
            parts[2] = str(number)
        segments[i] = sep.join(parts)
    return "~".join(segments).encode("latin-1")


def _first_claim_only(base: bytes) -> bytes:
    """``base`` (one transaction set) cut after its first claim: the smallest valid 837P."""
    segments = [s for s in base.decode("latin-1").split("~\n") if s]
    claims = [n for n, s in enumerate(segments) if s.startswith("CLM*")]
    if len(claims) < 2:
        return base
    end = claims[1]
    while not segments[end - 1].startswith(("DTP*472", "SV1", "LX")):
        end -= 1  # back over the next claim's HL / subscriber segments
    body = segments[2:end]
    sep = segments[0][3]
    control = body[0].split(sep)[2]
    return ("~\n".join([*segments[:2], *body, f"SE{sep}{len(body) + 1}{sep}{control}",
                         *segments[-2:]]) + "~\n").encode("latin-1")


SMALL_837 = _first_claim_only(CLEAN_837)


def multi_transaction(count: int, defective: tuple[int, ...] = ()) -> bytes:
    """One interchange, one group, ``count`` transaction sets: each the 12 claims of
    ecm-clean.x12 (claim ids made unique per set), the sets numbered in ``defective`` taken
    from ecm-claim-defects.x12 instead (claim-level errors: a rejected claim each)."""
    def body(name: str) -> list[str]:
        text = (ROOT / "fixtures" / "837p" / name).read_text()
        return [s for s in text.split("~\n") if s][2:-2]

    clean, bad = body("ecm-clean.x12"), body("ecm-claim-defects.x12")
    head = [s for s in CLEAN_837.decode().split("~\n") if s]
    out = head[:2]
    for k in range(1, count + 1):
        for segment in bad if k in defective else clean:
            if segment.startswith(("ST*", "SE*")):
                segment = segment.replace("*0001", f"*{k:04d}")
            out.append(segment.replace("CLM*ECM03", f"CLM*EC{k:03d}"))
    out += [f"GE*{count}*3", head[-1]]
    return ("~\n".join(out) + "~\n").encode()


def write_partners(folder: Path) -> tuple[Path, dict[str, str]]:
    """The demo partners plus the provider that bills ecm-clean.x12, with fresh tokens."""
    from gateway.pipeline.partners import issue_demo_tokens

    template = folder / "partners-template.yaml"
    data = yaml.safe_load((ROOT / "config" / "demo" / "partners.yaml").read_text())
    data["partners"].append(VALLEY)
    template.write_text(yaml.safe_dump(data, sort_keys=False))
    path = folder / "partners.yaml"
    return path, issue_demo_tokens(template, path)


def _gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


class Process:
    """A subprocess with its output in a log file."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> None:
        self.log = log
        self.handle = open(log, "ab")
        self.popen = subprocess.Popen(command, stdout=self.handle, stderr=subprocess.STDOUT,
                                      env={**os.environ, **(env or {})}, cwd=cwd,
                                      start_new_session=True)

    def kill(self) -> None:
        """SIGKILL to the process and its children (a Celery pool): no shutdown code runs."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self.handle.close()

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.handle.close()


class Gateway(Process):
    """``ecm-gateway serve`` on a free port; ready when /healthz answers."""

    def __init__(self, store: str, partners: Path, log: Path, env: dict[str, str],
                 drop: Path | None = None, queue: str | None = None, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--port", str(self.port), "--store", store, "--partners",
                str(partners), *extra]
        if drop is not None:
            args += ["--drop", str(drop)]
        if queue is not None:
            args += ["--queue", queue]
        super().__init__(_gateway_command(*args), log, env)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the gateway exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the gateway did not start")


def start_worker(store: str, queue: str, partners: Path, log: Path, env: dict[str, str],
                 name: str) -> Process:
    return Process(_gateway_command("worker", "--store", store, "--queue", queue,
                                    "--partners", str(partners), "--name", name), log, env)


# -- PostgreSQL ------------------------------------------------------------------------------------
def pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = [found] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    for candidate in candidates:
        folder = Path(candidate).resolve().parent
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


def pg_driver() -> str | None:
    for module, name in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return name
    return None


@contextmanager
def postgres():
    """A throwaway PostgreSQL cluster on a Unix socket in /tmp (as the ``postgres`` user when
    running as root: initdb refuses root); yields its SQLAlchemy URL."""
    folder, driver = pg_bin(), pg_driver()
    if folder is None or driver is None:
        raise Unavailable("PostgreSQL binaries or a Python driver (psycopg) not installed")
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="pgstore", dir="/tmp"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise Unavailable("running as root without runuser")
        try:
            shutil.chown(base, user="postgres")
        except (LookupError, OSError) as exc:
            raise Unavailable("running as root and no postgres user") from exc
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    try:
        run(str(folder / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8")
        run(str(folder / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
            "-o", f"-k {base} -p {port} -c listen_addresses='' -c fsync=off "
                  # dynamic shared memory in the data folder, removed with it: the immediate
                  # stop below leaves POSIX segments behind in /dev/shm otherwise
                  "-c max_connections=200 -c dynamic_shared_memory_type=mmap", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise Unavailable(f"could not start a temporary PostgreSQL cluster: {exc}") from exc
    try:
        yield f"postgresql+{driver}://postgres@/postgres?host={base}&port={port}"
    finally:
        subprocess.run([*prefix, str(folder / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


# -- Redis -----------------------------------------------------------------------------------------
def redis_bin() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if Path(p).exists()),
        None)


@contextmanager
def redis_server():
    """A Redis server on a free loopback port, nothing persisted; yields its URL."""
    binary = redis_bin()
    if binary is None:
        raise Unavailable("redis-server not installed")
    import redis

    folder = Path(tempfile.mkdtemp(prefix="redis"))
    port = free_port()
    log = folder / "redis.log"
    server = Process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", str(folder), "--daemonize", "no"],
                     log)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.popen.poll() is not None:
                    raise Unavailable(f"redis-server did not start: {log.read_text()[-500:]}")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def wait_for(predicate, timeout: float, interval: float = 0.2):
    """Poll ``predicate()`` until it returns something truthy; that value, or None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
