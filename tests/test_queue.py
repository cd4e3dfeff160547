"""The work queue (gateway.pipeline.queue) and what the API makes of it: submissions processed
off the request path, a synchronous answer for small X12 or 202, retries that start from a
clean slate, one run per submission, and the metrics read from the store."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from conftest import FIXTURES, ROOT, renumber
from fastapi.testclient import TestClient

from gateway.api import app as app_module
from gateway.api.app import create_app
from gateway.findings import Finding, Severity
from gateway.pipeline import process as pipeline
from gateway.pipeline.partners import Partners, issue_demo_tokens
from gateway.pipeline.queue import EmbeddedQueue, make_queue
from gateway.pipeline.store import Store

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()


@pytest.fixture
def setup(tmp_path):
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "p.yaml")
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    yield store, Partners.load(tmp_path / "p.yaml"), tokens
    store.close()


def test_submit_with_a_queue_only_stores_and_the_worker_processes(setup):
    store, partners, _ = setup
    queue = EmbeddedQueue(store, partners)
    harbor = partners.partners["harbor"]
    done = pipeline.submit(store, partners, harbor, channel="api", kind="x12", filename=None,
                           payload=MIXED, queue=_Recorder())
    assert (done.status, done.outcome) == ("received", None)
    assert store.submission(done.submission_id)["run_state"] == "queued"
    assert store.documents(done.submission_id) == []
    queue.start()
    try:
        queue.enqueue(done.submission_id)
        assert _wait(lambda: store.submission(done.submission_id)["run_state"] == "done")
    finally:
        queue.stop()
    assert store.submission(done.submission_id)["status"] == "routed"
    # a second delivery of the same submission runs nothing
    again = pipeline.process(store, partners, done.submission_id)
    assert again.status == "routed" and "ST*999*" in again.ack999
    assert sorted(d["role"] for d in store.documents(done.submission_id)) == [
        "ack-277ca", "ack-999", "routed-837p"]


def test_a_restarted_queue_resumes_the_claims_of_a_dead_process(setup):
    store, partners, _ = setup
    sid = store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                        payload=MIXED).submission_id
    import socket

    dead = f"{socket.gethostname()}:999999999:feedbeef:1"  # no such pid
    assert store.claim(sid, dead, timedelta(hours=1)) == "claimed"
    store.add_document(sid, role="ack-999", name="half.x12", content=b"half",
                       media_type="x", recipient="harbor")
    queue = EmbeddedQueue(store, partners)
    queue.start()
    try:
        assert _wait(lambda: store.submission(sid)["run_state"] == "done")
    finally:
        queue.stop()
    assert [d["name"] for d in store.documents(sid)] == [
        f"{sid}.999.x12", f"{sid}.277ca.x12", f"{sid}.837p.x12"]


def test_owner_alive_judges_only_this_host():
    assert pipeline.owner_alive(pipeline.worker_id())
    assert pipeline.owner_alive("another-host:1:x:1")
    import socket

    assert not pipeline.owner_alive(f"{socket.gethostname()}:999999999:x:1")


def test_a_retry_starts_from_a_clean_slate(setup, monkeypatch):
    store, partners, _ = setup
    sid = store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                        payload=MIXED).submission_id
    real = pipeline.STEPS["x12"]
    calls = []

    def flaky(store, partners, partner, submission_id):
        calls.append(1)
        if len(calls) == 1:  # writes part of its outputs, then fails
            store.add_findings(submission_id, [Finding(rule="R", severity=Severity.ERROR,
                                                       location="x", message="m", source="s")])
            store.add_document(submission_id, role="ack-999", name="partial", content=b"p",
                               media_type="x", recipient="harbor")
            raise OSError("disk hiccup")
        return real(store, partners, partner, submission_id)

    monkeypatch.setitem(pipeline.STEPS, "x12", flaky)
    outcome = pipeline.process(store, partners, sid, sleep=lambda s: None)
    assert outcome.status == "routed" and len(calls) == 2
    assert "partial" not in [d["name"] for d in store.documents(sid)]
    assert [f["rule"] for f in store.findings(sid)].count("R") == 0
    assert store.submission(sid)["run_state"] == "done"


def test_a_run_writes_its_outputs_at_its_end(setup, monkeypatch):
    """While the step runs, nobody sees its findings, documents or statuses; the end of the
    run writes them all, with the whole status history."""
    store, partners, _ = setup
    sid = store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                        payload=MIXED).submission_id
    real = pipeline.STEPS["x12"]
    seen = {}

    def watched(run, partners, partner, submission_id):
        outcome = real(run, partners, partner, submission_id)
        found = store.submission(submission_id)  # the store itself, not the run
        seen.update(status=found["status"], run_state=found["run_state"],
                    documents=store.documents(submission_id),
                    findings=store.findings(submission_id))
        return outcome

    monkeypatch.setitem(pipeline.STEPS, "x12", watched)
    assert pipeline.process(store, partners, sid).status == "routed"
    assert seen == {"status": "received", "run_state": "running", "documents": [],
                    "findings": []}
    found = store.submission(sid)
    assert (found["status"], found["run_state"], found["attempts"]) == ("routed", "done", 1)
    assert [h["status"] for h in store.history(sid)] == [
        "received", "validated", "converted", "routed"]
    assert sorted(d["role"] for d in store.documents(sid)) == [
        "ack-277ca", "ack-999", "routed-837p"]
    assert store.finding_count(sid) > 0


def test_long_runs_keep_their_leases_and_nobody_else_takes_them(setup, monkeypatch):
    """Two runs at once, each three times longer than its lease: the one heartbeat thread
    renews both, so no other worker can claim them meanwhile and both finish."""
    store, partners, _ = setup
    ids = [store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                         payload=renumber(MIXED, 7100 + n)).submission_id for n in range(2)]
    lease = timedelta(seconds=0.6)
    real = pipeline.STEPS["x12"]
    stolen = []
    started = threading.Barrier(2)

    def slow(run, partners, partner, submission_id):
        started.wait(timeout=10)
        for _ in range(6):
            threading.Event().wait(0.3)
            stolen.append(store.claim(submission_id, "thief", lease))
        return real(run, partners, partner, submission_id)

    monkeypatch.setitem(pipeline.STEPS, "x12", slow)
    outcomes = {}
    threads = [threading.Thread(target=lambda sid=sid: outcomes.update(
        {sid: pipeline.process(store, partners, sid, lease=lease)})) for sid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert set(stolen) == {"busy"}
    assert {sid: o.status for sid, o in outcomes.items()} == {sid: "routed" for sid in ids}
    assert all(store.submission(sid)["run_state"] == "done" for sid in ids)


def test_make_queue_engines(setup):
    store, partners, _ = setup
    assert make_queue(None, store, partners).engine == "embedded"
    assert make_queue("redis://127.0.0.1:1/0", store, partners).engine == "celery"
    with pytest.raises(ValueError):
        make_queue("amqp://x", store, partners)


def test_a_workers_announcement_wakes_the_apis_waits(setup, monkeypatch):
    """Celery mode: a worker publishes the end of a run on Redis and the API process's
    listener wakes whoever waits for that submission (and nobody else); the wait then looks
    at the store."""
    import asyncio

    import servers

    from gateway.pipeline import worker
    from gateway.pipeline.queue import CeleryQueue

    store, _, _ = setup
    try:
        broker_context = servers.redis_server()
        broker = broker_context.__enter__()
    except servers.Unavailable as exc:
        pytest.skip(str(exc))
    queue = CeleryQueue(store, broker)
    monkeypatch.setenv("ECM_GATEWAY_QUEUE", broker)
    try:
        queue.start()

        async def scenario() -> tuple[bool, bool]:
            mine, other = pipeline.RUNS_ENDED.watch("sid-1"), pipeline.RUNS_ENDED.watch("sid-2")
            try:
                for _ in range(100):  # the listener subscribes in its own time
                    await asyncio.to_thread(worker._announce_end, "sid-1")
                    await asyncio.wait([mine], timeout=0.1)
                    if mine.done():
                        break
                return mine.done(), other.done()
            finally:
                pipeline.RUNS_ENDED.forget("sid-1", mine)
                pipeline.RUNS_ENDED.forget("sid-2", other)

        assert asyncio.run(scenario()) == (True, False)
        assert not pipeline.RUNS_ENDED.finished_here("sid-1")  # ended elsewhere: look
    finally:
        queue.stop()
        broker_context.__exit__(None, None, None)


def test_the_api_answers_202_when_asked_or_when_the_wait_runs_out(setup, monkeypatch,
                                                                     tmp_path):
    store, partners, tokens = setup
    auth = {"Authorization": f"Bearer {tokens['harbor']}"}
    app = create_app(store=store.url, partners=partners)
    gate = threading.Event()
    real = pipeline.STEPS["x12"]

    def held(*args):
        gate.wait(30)
        return real(*args)

    monkeypatch.setitem(pipeline.STEPS, "x12", held)
    with TestClient(app) as client:
        answer = client.post("/x12", content=MIXED, headers={**auth, "Prefer": "respond-async"})
        assert answer.status_code == 202
        sid = answer.json()["submission_id"]
        assert answer.json() == {"submission_id": sid, "duplicate": False, "status": "received",
                                 "links": {"self": f"/submissions/{sid}"}}
        monkeypatch.setattr(app_module, "SYNC_WAIT_SECONDS", 0.2)
        other = client.post("/x12", content=renumber(MIXED, 777),
                            headers=auth)
        assert other.status_code == 202 and "ack_999" not in other.json()
        # nothing of an unfinished run is handed out
        assert client.get("/mailbox", headers=auth).json() == {"documents": []}
        gate.set()
        assert _wait(lambda: store.queue_depth()["done"] == 2)
        status = client.get(f"/submissions/{sid}", headers=auth).json()
        assert status["status"] == "routed" and status["run_state"] == "done"
        assert len(client.get("/mailbox", headers=auth).json()["documents"]) == 4


def test_metrics_read_queue_depth_dead_letters_and_latency_from_the_store(setup):
    store, partners, _ = setup  # no lifespan below: no worker runs, both stay queued
    waiting = store.receive(partner="harbor", channel="api", kind="file", filename="a.csv",
                            payload=b"a,b\n").submission_id
    dead = store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                         payload=b"ISA*dead").submission_id
    store.claim(dead, "w", timedelta(minutes=1))
    store.set_status(dead, "dead_letter", error="OSError on attempt 3")
    store.finish(dead, "w")
    store.receive(partner="harbor", channel="api", kind="x12", filename=None, payload=MIXED)
    text = TestClient(create_app(store=store.url, partners=partners)).get("/metrics").text
    assert 'ecm_gateway_queue_depth{state="queued"} 2.0' in text
    assert 'ecm_gateway_queue_depth{state="running"} 0.0' in text
    assert "ecm_gateway_dead_letters 1.0" in text
    assert 'ecm_gateway_submissions{kind="x12",status="dead_letter"} 1.0' in text
    assert 'ecm_gateway_submissions{kind="file",status="received"} 1.0' in text
    assert 'ecm_gateway_latency_seconds_count{kind="x12"} 1.0' in text
    assert 'ecm_gateway_processing_seconds_bucket{kind="x12",le="+Inf"} 1.0' in text
    assert waiting in store.queued()


class _Recorder:
    def __init__(self):
        self.ids = []

    def enqueue(self, submission_id):
        self.ids.append(submission_id)


def _wait(predicate, timeout: float = 30) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_queue_options_are_checked(tmp_path, capsys):
    from gateway.cli import main

    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "p.yaml")
    assert main(["worker", "--store", "sqlite://", "--queue", "amqp://x", "--partners",
                 str(tmp_path / "p.yaml")]) == 2
    assert "redis://host:port/db" in capsys.readouterr().err
    assert main(["worker", "--store", "sqlite://", "--queue", "redis://x", "--partners",
                 str(tmp_path / "missing.yaml")]) == 2
    assert main(["serve", "--partners", str(tmp_path / "p.yaml"), "--queue", "kafka://x"]) == 2
    assert "give a redis://" in capsys.readouterr().err


def test_an_embedded_worker_defers_routing_while_fhir_requests_are_answered(setup, monkeypatch):
    """The API's FHIR requests share the GIL with the embedded worker: it claims nothing while
    one is answered (up to DEFER_SECONDS), but at once when a client waits for a run (X12)."""
    from gateway.pipeline import queue as queue_module

    monkeypatch.setenv("ECM_GATEWAY_DEFER_SECONDS", "60")
    store, partners, _ = setup
    sid = store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                        payload=MIXED).submission_id
    queue = EmbeddedQueue(store, partners)
    request = queue_module.API_LOAD.request()
    request.__enter__()
    try:
        queue.start()
        queue.enqueue(sid)
        threading.Event().wait(0.5)
        assert store.submission(sid)["run_state"] == "queued"
        waiting = queue_module.API_LOAD.waiting()
        waiting.__enter__()  # a client waits for its 999: politeness ends
        try:
            assert _wait(lambda: store.submission(sid)["run_state"] == "done")
        finally:
            waiting.__exit__(None, None, None)
        later = store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                              payload=MIXED.replace(b"ECM", b"ECN", 1)).submission_id
        queue.enqueue(later)
        threading.Event().wait(0.5)
        assert store.submission(later)["run_state"] == "queued"
    finally:
        request.__exit__(None, None, None)  # the request answered: routing runs
    try:
        assert _wait(lambda: store.submission(later)["run_state"] == "done")
    finally:
        queue.stop()


_OTHER_API_PROCESS = """
import sys
from gateway.pipeline.queue import _ApiLoad
load = _ApiLoad()
assert load.share(sys.argv[1])
requests = [load.request() for _ in range(int(sys.argv[2]))]
for request in requests:
    request.__enter__()
print("answering", flush=True)
if sys.stdin.readline().strip() == "answered":
    for request in requests:
        request.__exit__(None, None, None)
    load.queued()  # it queued a submission: the other processes' idle workers look
    print("done", flush=True)
    sys.stdin.readline()
"""


def test_the_workers_defer_to_the_fhir_requests_of_every_api_process(tmp_path):
    """serve --api-workers N: a worker routing in one API process would take a core from the
    requests the others answer once they keep every core busy, so each process writes its
    count of FHIR requests in its slot of a shared load file and the workers read them all;
    the slot of a process that died answering is cleared by the next process that takes
    it."""
    import subprocess
    import sys

    from gateway.pipeline.queue import CORES, _ApiLoad

    path = tmp_path / "api-load.bin"
    here = _ApiLoad()
    assert here.share(path)
    assert not here.polite()

    def other(count: int = CORES):
        child = subprocess.Popen([sys.executable, "-c", _OTHER_API_PROCESS, str(path),
                                  str(count)], cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "answering"
        return child

    if CORES > 1:  # fewer requests than cores: a core is idle, routing goes on
        fewer = other(CORES - 1)
        try:
            assert not here.polite()
        finally:
            fewer.kill()
            fewer.wait()
    child = other()
    queued = here.queued_anywhere()
    try:
        assert here.polite()  # the others keep every core busy: routing waits
        stop = threading.Event()
        assert not here.wait_quiet(__import__("time").monotonic() + 0.05, stop)
        child.stdin.write("answered\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        assert not here.polite()
        assert here.queued_anywhere() != queued
        with here.waiting():  # a client waits for a run: no politeness, whoever is busy
            assert not here.polite()
    finally:
        child.kill()
        child.wait()
    dead = other()  # killed while answering: its count stays in its slot ...
    dead.kill()
    dead.wait()
    assert here.polite()
    again = other()  # ... until the next process takes the slot
    try:
        again.stdin.write("answered\n")
        again.stdin.flush()
        assert again.stdout.readline().strip() == "done"
        assert not here.polite()
    finally:
        again.kill()
        again.wait()
