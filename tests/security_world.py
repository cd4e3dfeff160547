"""The security suite (tests/security/) runs every HTTP attack against real servers in both deployment modes:

* ``embedded`` — ``ecm-gateway serve`` on SQLite with its worker thread and file drop;
* ``scale-out`` — ``ecm-gateway serve`` on PostgreSQL with a Redis broker and one
  ``ecm-gateway worker`` (Celery), file drop on the API.

Both start once per session (tests/servers.py helpers), with the demo partners (plus the provider
of ecm-clean.x12) and the demo registries loaded into the store. The scale-out mode skips,
saying why, where PostgreSQL or Redis is not installed (``make test`` installs them)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import servers

MODES = ("embedded", "scale-out")


@dataclass
class Served:
    mode: str
    base: str
    url: str  # the store
    partners_file: Path
    tokens: dict
    drop: Path
    logs: list
    env: dict
    store: object
    client: httpx.Client

    def auth(self, partner: str, **extra) -> dict:
        return {"Authorization": f"Bearer {self.tokens[partner]}", **extra}

    def wait_done(self, submission_id: str, timeout: float = 60) -> dict:
        found = servers.wait_for(lambda: (s := self.store.submission(submission_id)) and
                                 s["run_state"] == "done" and s, timeout)
        assert found, f"submission {submission_id} did not finish"
        return found

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@pytest.fixture(scope="session", params=MODES)
def served(request, tmp_path_factory):
    from gateway.pipeline.partners import Partners
    from gateway.pipeline.registries import load_demo_registries
    from gateway.pipeline.store import Store

    mode = request.param
    folder = tmp_path_factory.mktemp(f"security-{mode}")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        os.environ.pop(name, None)
    partners_file, tokens = servers.write_partners(folder)
    env = {"ECM_GATEWAY_VAR": str(folder / "var"), "TMPDIR": str(folder / "tmp")}
    (folder / "tmp").mkdir()
    drop = folder / "drop"
    with ExitStack() as stack:
        queue = None
        logs = [folder / "server.log"]
        if mode == "embedded":
            url = f"sqlite:///{folder / 'gateway.sqlite'}"
        else:
            try:
                url = stack.enter_context(servers.postgres())
                queue = stack.enter_context(servers.redis_server())
            except servers.Unavailable as exc:
                pytest.skip(f"{exc} (make test installs postgresql and redis-server)")
        store = Store(url)
        stack.callback(store.close)
        load_demo_registries(store, Partners.load(partners_file))
        if queue is not None:
            logs.append(folder / "worker.log")
            worker = servers.start_worker(url, queue, partners_file, logs[-1], env, "sec@test")
            stack.callback(worker.stop)
        server = servers.Gateway(url, partners_file, logs[0], env, drop=drop, queue=queue)
        stack.callback(server.stop)
        client = httpx.Client(base_url=server.base, timeout=60, trust_env=False)
        stack.callback(client.close)
        yield Served(mode, server.base, url, partners_file, tokens, drop, logs, env, store,
                     client)
