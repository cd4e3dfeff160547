"""Load and scale-out on real engines: 1,000 submissions from 10 concurrent clients against the
embedded default (``ecm-gateway serve``, SQLite, worker thread) and against PostgreSQL + Redis +
two Celery workers (``ecm-gateway worker``), all real servers on loopback; and a Celery worker
killed mid-run. Zero lost, zero 5xx, every submission acknowledged exactly once.

The PostgreSQL/Redis tests need ``postgres`` and ``redis-server`` (installed by ``make test``
when missing, see the Makefile); they skip, saying why, where the binaries are absent. Speed
is measured by ``bench/bench_load.py``, not here."""

from __future__ import annotations

import collections
from contextlib import ExitStack

import httpx
import pytest
import servers
from bench_load import check_complete, run_load
from servers import Gateway, start_worker, wait_for, write_partners, x12_variant

from gateway.pipeline.process import TEST_SLOW_WRITES
from gateway.pipeline.store import Store

LOAD_COUNT, CLIENTS = 1000, 10


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pg_and_redis():
    try:
        with servers.postgres() as url, servers.redis_server() as broker:
            yield url, broker
    except servers.Unavailable as exc:
        pytest.skip(f"{exc} (make test installs postgresql and redis-server when it can)")


def assert_all_acknowledged_once(result, summary) -> None:
    assert result.errors == []
    assert set(result.statuses) <= {200, 202}, result.statuses  # no 5xx, no refusal
    assert len(result.ids) == summary["distinct_ids"] == LOAD_COUNT  # one id per submission
    assert summary["stored"] == LOAD_COUNT  # none lost, none stored twice
    assert summary["statuses"] == {("routed", "done"): LOAD_COUNT}
    assert summary["ack_999"] == summary["ack_277ca"] == LOAD_COUNT
    # a synchronous answer carries the 999; a 202 (the wait ran out) gets it in the mailbox
    assert result.acks == result.statuses[200]


def start_cluster(stack: ExitStack, tmp_path, url: str, broker: str, partners, env: dict,
                  prefix: str, workers: int = 2):
    """``workers`` Celery workers and the API on one store and broker, stopped with ``stack``;
    returns the server, a store to look with, and the workers' log files."""
    logs = [tmp_path / f"{prefix}-worker-{n}.log" for n in range(workers)]
    started = [start_worker(url, broker, partners, log, env, name=f"{prefix}{n}@test")
               for n, log in enumerate(logs)]
    stack.callback(lambda: [w.stop() for w in started])
    server = Gateway(url, partners, tmp_path / "server.log", env, queue=broker)
    stack.callback(server.stop)
    store = Store(url)
    stack.callback(store.close)
    return server, store, logs


def test_load_embedded_default(tmp_path):
    partners, tokens = write_partners(tmp_path)
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    server = Gateway(url, partners, tmp_path / "server.log",
                     {"ECM_GATEWAY_VAR": str(tmp_path / "var")})
    store = Store(url)
    try:
        result = run_load(server.base, tokens["valley"], LOAD_COUNT, CLIENTS)
        assert_all_acknowledged_once(result, check_complete(store, "valley", result,
                                                            LOAD_COUNT))
        metrics = httpx.get(f"{server.base}/metrics").text
        assert 'ecm_gateway_queue_depth{state="queued"} 0.0' in metrics
        assert f'ecm_gateway_latency_seconds_count{{kind="x12"}} {LOAD_COUNT}.0' in metrics
        assert "ecm_gateway_dead_letters 0.0" in metrics
    finally:
        server.stop()
        store.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_load_postgresql_and_two_celery_workers(tmp_path, pg_and_redis):
    url, broker = pg_and_redis
    partners, tokens = write_partners(tmp_path)
    env = {"ECM_GATEWAY_VAR": str(tmp_path / "var")}
    with ExitStack() as stack:
        server, store, logs = start_cluster(stack, tmp_path, url, broker, partners, env, "w")
        result = run_load(server.base, tokens["valley"], LOAD_COUNT, CLIENTS)
        assert_all_acknowledged_once(result, check_complete(store, "valley", result,
                                                            LOAD_COUNT))
        processed = [log.read_text().count('"message": "submission processed"') for log in logs]
        assert sum(processed) == LOAD_COUNT and min(processed) > 0  # both workers worked
    for log in [*logs, tmp_path / "server.log"]:
        assert "Traceback" not in log.read_text()


def test_a_killed_celery_worker_loses_nothing(tmp_path, pg_and_redis):
    """Worker A is SIGKILLed in the middle of a run; once its lease runs out the API's sweeper
    hands the submission again to the broker and worker B completes everything, once."""
    url, broker = pg_and_redis
    partners, tokens = write_partners(tmp_path)
    env = {"ECM_GATEWAY_VAR": str(tmp_path / "var"), "ECM_GATEWAY_LEASE_SECONDS": "3",
           "ECM_GATEWAY_SWEEP_SECONDS": "1"}
    count = 20
    with ExitStack() as stack:
        slow = start_worker(url, broker, partners, tmp_path / "a.log",
                            {**env, TEST_SLOW_WRITES: "0.3"}, name="a@test")
        stack.callback(slow.stop)
        server = Gateway(url, partners, tmp_path / "server.log", env, queue=broker)
        stack.callback(server.stop)
        store = Store(url)
        stack.callback(store.close)
        headers = {"Authorization": f"Bearer {tokens['valley']}", "Prefer": "respond-async"}
        with httpx.Client(base_url=server.base, timeout=30, headers=headers) as client:
            ids = [client.post("/x12", content=x12_variant(n)).json()["submission_id"]
                   for n in range(1, count + 1)]
        assert wait_for(lambda: store.queue_depth()["running"] == 1, 60)
        slow.kill()  # inside a run (3 s long): its lease stays behind, its task unacknowledged
        fast = start_worker(url, broker, partners, tmp_path / "b.log", env, name="b@test")
        stack.callback(fast.stop)
        assert wait_for(lambda: store.queue_depth()["done"] == count, 120), \
            store.queue_depth()
        for sid in ids:
            found = store.submission(sid)
            assert (found["status"], found["run_state"]) == ("routed", "done")
            roles = collections.Counter(d["role"] for d in store.documents(sid))
            assert roles == {"ack-999": 1, "ack-277ca": 1, "routed-837p": 1}
        plan_box = [d["submission_id"] for d in store.mailbox("demo-plan")]
        assert sorted(plan_box) == sorted(ids)


def test_a_large_file_is_split_across_the_celery_workers_and_merged(tmp_path, pg_and_redis):
    from test_split import FILE, normalised

    from gateway.pipeline.partners import Partners
    from gateway.pipeline.process import process

    url, broker = pg_and_redis
    partners, tokens = write_partners(tmp_path)
    reference = Store(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    whole = reference.receive(partner="valley", channel="api", kind="x12", filename=None,
                              payload=FILE).submission_id
    process(reference, Partners.load(partners), whole)
    env = {"ECM_GATEWAY_VAR": str(tmp_path / "var"), "ECM_GATEWAY_SPLIT_BYTES": "1000",
           "ECM_GATEWAY_SPLIT_TRANSACTIONS": "2"}
    with ExitStack() as stack:
        server, store, logs = start_cluster(stack, tmp_path, url, broker, partners, env, "s")
        answer = httpx.post(f"{server.base}/x12", content=FILE, timeout=60,
                            headers={"Authorization": f"Bearer {tokens['valley']}"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "routed"
        expected_999 = next(store_doc for store_doc in [
            reference.document(d["id"])["content"].decode()
            for d in reference.documents(whole) if d["role"] == "ack-999"])
        assert normalised(body["ack_999"]) == normalised(expected_999)
        sid = body["submission_id"]
        assert len(store.parts_of(sid)) == 3
        assert store.findings(sid) == reference.findings(whole)
        texts = [log.read_text() for log in logs]
        assert sum(t.count('"message": "submission processed"') for t in texts) == 3
        assert sum(t.count('"message": "parts merged"') for t in texts) == 1
    reference.close()


def test_fhir_resources_are_routed_by_a_celery_worker(tmp_path, pg_and_redis):
    """A FHIR create is answered by the API after validation; the routing (the mappings to the
    member's plan) runs as the queued `fhir` step in a separate Celery worker process."""
    from conftest import FIXTURES

    url, broker = pg_and_redis
    partners, tokens = write_partners(tmp_path)
    env = {"ECM_GATEWAY_VAR": str(tmp_path / "var")}
    careplan = (FIXTURES / "fhir" / "mappings" / "careplan-ecm.json").read_bytes()
    with ExitStack() as stack:
        server, store, logs = start_cluster(stack, tmp_path, url, broker, partners, env, "f",
                                            workers=1)
        answer = httpx.post(f"{server.base}/fhir/CarePlan", content=careplan, timeout=30,
                            headers={"Authorization": f"Bearer {tokens['harbor']}",
                                     "Content-Type": "application/fhir+json"})
        assert answer.status_code == 201, answer.text
        sid = answer.headers["X-Submission-Id"]
        assert wait_for(lambda: store.submission(sid)["run_state"] == "done", 60)
        assert store.submission(sid)["status"] == "routed"
        routed = sorted(d["role"] for d in store.mailbox("demo-plan"))
        assert routed == ["routed-837p", "routed-rtf"]
    assert '"message": "submission processed"' in logs[0].read_text()
    for log in (*logs, tmp_path / "server.log"):
        assert "Traceback" not in log.read_text()
