"""The durable store (gateway.pipeline.store): submissions, duplicates, statuses, findings,
documents, audit, and SQLite sharing/concurrency. An optional run against a throwaway
PostgreSQL cluster when its binaries and a driver are present."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.findings import Finding, Severity
from gateway.pipeline.store import STATUSES, IdempotencyConflict, Received, Run, Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    yield s
    s.close()


def receive(store: Store, payload: bytes = b"ISA*00~", partner: str = "acme", **kw) -> Received:
    kw.setdefault("channel", "sftp")
    kw.setdefault("kind", "837p")
    kw.setdefault("filename", "claims.x12")
    return store.receive(partner=partner, payload=payload, **kw)


# -- submissions -----------------------------------------------------------------------------------
def test_default_store_is_a_wal_sqlite_file_under_var_dir():
    s = Store()
    try:
        path = Path(os.environ["ECM_GATEWAY_VAR"]) / "gateway.sqlite"
        assert path.is_file()
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    finally:
        s.close()


def test_raw_payload_is_persisted_byte_exact(store):
    payload = bytes(range(256)) + b"ISA*00*\r\n~\x00\xff" * 100
    r = receive(store, payload, now=T0)
    assert r.duplicate_of is None and len(r.submission_id) == 32
    assert store.raw_payload(r.submission_id) == payload
    sub = store.submission(r.submission_id)
    assert sub["sha256"] == hashlib.sha256(payload).hexdigest()
    assert sub["status"] == "received" and sub["attempts"] == 0 and sub["summary"] == {}
    assert (sub["partner"], sub["channel"], sub["kind"], sub["filename"]) == (
        "acme", "sftp", "837p", "claims.x12")
    assert sub["created_at"] == T0 and sub["created_at"].tzinfo is not None
    assert store.submission("nope") is None
    with pytest.raises(KeyError):
        store.raw_payload("nope")


def test_duplicate_by_idempotency_key_any_age_and_per_partner(store):
    first = receive(store, b"one", idempotency_key="k-1", now=T0)
    again = receive(store, b"one", idempotency_key="k-1", now=T0 + timedelta(days=400))
    assert again == Received(first.submission_id, first.submission_id)
    with pytest.raises(IdempotencyConflict, match="'k-1' was used before with a different"):
        receive(store, b"two", idempotency_key="k-1", now=T0 + timedelta(days=400))
    other = receive(store, b"one", partner="globex", idempotency_key="k-1", now=T0)
    assert other.duplicate_of is None and other.submission_id != first.submission_id
    assert len(store.submissions_for("acme")) == 1


def test_a_different_payload_with_the_same_x12_key_is_not_a_duplicate(store):
    """Never another file's id: a different interchange reusing ISA13/GS06 is a submission of
    its own (the pipeline answers it with a TA1 025, gateway.pipeline.controls)."""
    key = "SENDER1:000000123:123"
    first = receive(store, b"a", x12_key=key, now=T0)
    second = receive(store, b"b", x12_key=key, now=T0 + timedelta(days=1))
    assert second.duplicate_of is None and second.submission_id != first.submission_id
    assert receive(store, b"a", x12_key=key, now=T0 + timedelta(days=2)).duplicate_of == \
        first.submission_id  # the same bytes: the earlier answer


def test_duplicate_by_payload_hash_within_window_only(store):
    first = receive(store, b"same bytes", now=T0)
    dup = receive(store, b"same bytes", filename="renamed.x12", now=T0 + timedelta(days=10))
    assert dup == Received(first.submission_id, first.submission_id)
    assert receive(store, b"same bytes", partner="globex", now=T0).duplicate_of is None
    assert receive(store, b"same bytes", now=T0 + timedelta(days=31)).duplicate_of is None
    assert receive(store, b"different", now=T0).duplicate_of is None


def test_replay_with_parent_is_never_a_duplicate(store):
    first = receive(store, b"payload", idempotency_key="k", x12_key="S:1:1", now=T0)
    replay = receive(store, b"payload", idempotency_key="k", x12_key="S:1:1",
                     parent_id=first.submission_id, now=T0 + timedelta(minutes=5))
    assert replay.duplicate_of is None and replay.submission_id != first.submission_id
    assert store.submission(replay.submission_id)["parent_id"] == first.submission_id
    with pytest.raises(KeyError):
        receive(store, b"payload", parent_id="missing")


def test_status_history_and_current_status(store):
    sid = receive(store, now=T0).submission_id
    store.set_status(sid, "validated", now=T0 + timedelta(seconds=1))
    store.set_status(sid, "failed", error="mapper crashed", now=T0 + timedelta(seconds=2))
    store.set_status(sid, "dead_letter", error="gave up", now=T0 + timedelta(seconds=3))
    history = store.history(sid)
    assert [(h["status"], h["error"]) for h in history] == [
        ("received", None), ("validated", None), ("failed", "mapper crashed"),
        ("dead_letter", "gave up")]
    assert [h["at"] for h in history] == [T0 + timedelta(seconds=i) for i in range(4)]
    sub = store.submission(sid)
    assert (sub["status"], sub["error"]) == ("dead_letter", "gave up")
    assert sub["updated_at"] == T0 + timedelta(seconds=3) and sub["created_at"] == T0
    with pytest.raises(ValueError):
        store.set_status(sid, "teleported")
    with pytest.raises(KeyError):
        store.set_status("missing", "validated")
    assert set(STATUSES) == {"received", "validated", "converted", "routed", "delivered",
                             "rejected", "failed", "dead_letter"}


def test_summary_attempts_and_submissions_for(store):
    a = receive(store, b"1", now=T0).submission_id
    b = receive(store, b"2", now=T0 + timedelta(hours=1)).submission_id
    receive(store, b"3", partner="globex", now=T0)
    store.set_summary(a, {"claims": 3, "lines": [1, 2], "amount": "120.50"})
    assert store.submission(a)["summary"] == {"claims": 3, "lines": [1, 2], "amount": "120.50"}
    assert [store.attempt(a) for _ in range(3)] == [1, 2, 3]
    assert store.submission(a)["attempts"] == 3 and store.submission(b)["attempts"] == 0
    assert [s["id"] for s in store.submissions_for("acme")] == [b, a]
    assert [s["id"] for s in store.submissions_for("acme", limit=1)] == [b]


def test_findings_round_trip(store):
    sid = receive(store).submission_id
    found = [
        Finding(rule="X12-ISA-13", severity=Severity.ERROR, location="ISA#1/ISA13",
                message="bad control number", source="X12 005010", segment=1),
        Finding(rule="ECM-POF-1", severity=Severity.WARNING, location="row 3, column CIN",
                message="no population of focus", source="DHCS ECM policy guide"),
    ]
    store.add_findings(sid, found[:1])
    store.add_findings(sid, found[1:])
    store.add_findings(sid, [])
    rows = store.findings(sid)
    assert rows == [f.as_dict() for f in found]
    assert [Finding(**d) for d in rows] == found
    assert store.findings(receive(store, b"other").submission_id) == []


# -- documents -------------------------------------------------------------------------------------
def test_documents_lineage_and_mailbox_scoped_to_recipient(store):
    sid = receive(store, now=T0).submission_id
    assert store.claim(sid, "w", LEASE) == "claimed"
    ack = store.add_document(sid, role="ack", name="999.x12", content=b"ISA*999~",
                             media_type="application/edi-x12", recipient="acme", now=T0)
    converted = store.add_document(sid, role="converted", name="claims.json", content=b"{}",
                                   media_type="application/fhir+json",
                                   now=T0 + timedelta(seconds=1))
    routed = store.add_document(sid, role="routed", name="claims.json", content=b"{}",
                                media_type="application/fhir+json", recipient="plan-x",
                                parent_document=converted, now=T0 + timedelta(seconds=2))
    report = store.add_document(sid, role="report", name="report.html", content=b"<html/>",
                                media_type="text/html", recipient="acme",
                                now=T0 + timedelta(seconds=3))
    docs = store.documents(sid)
    assert [d["id"] for d in docs] == [ack, converted, routed, report]
    assert all("content" not in d for d in docs)
    assert docs[0]["size"] == len(b"ISA*999~") and docs[2]["parent_document"] == converted
    assert store.mailbox("acme") == []  # the run has not finished: nothing is handed out
    assert store.finish(sid, "w")
    assert [d["id"] for d in store.mailbox("acme")] == [report, ack]  # newest first
    assert [d["id"] for d in store.mailbox("plan-x")] == [routed]
    assert store.mailbox("nobody") == []
    assert all("content" not in d for d in store.mailbox("acme"))
    full = store.document(ack)
    assert full["content"] == b"ISA*999~" and full["media_type"] == "application/edi-x12"
    assert full["recipient"] == "acme" and full["delivered_at"] is None
    store.mark_delivered(ack, now=T0 + timedelta(minutes=1))
    assert store.document(ack)["delivered_at"] == T0 + timedelta(minutes=1)
    assert store.document("missing") is None
    with pytest.raises(KeyError):
        store.add_document("missing", role="ack", name="x", content=b"", media_type="text/plain")
    with pytest.raises(KeyError):
        store.add_document(sid, role="routed", name="x", content=b"", media_type="text/plain",
                           parent_document="missing")
    with pytest.raises(KeyError):
        store.mark_delivered("missing")


# -- the queue -------------------------------------------------------------------------------------
def test_claim_next_takes_the_oldest_once(store):
    ids = [receive(store, bytes([i]), now=T0 + timedelta(minutes=10 - i)).submission_id
           for i in range(4)]  # created newest first
    assert store.queued() == [ids[3], ids[2], ids[1], ids[0]]
    assert store.queued(limit=2) == [ids[3], ids[2]]
    assert store.claim(ids[1], "w1", LEASE) == "claimed"
    assert store.claim(ids[1], "w2", LEASE) == "busy"
    assert [store.claim_next("w2", LEASE) for _ in range(4)] == [ids[3], ids[2], ids[0], None]
    assert store.queue_depth() == {"queued": 0, "running": 4, "waiting": 0, "done": 0}
    assert store.submission(ids[3])["run_state"] == "running"
    assert store.finish(ids[1], "w1") and not store.finish(ids[1], "w1")
    assert not store.finish(ids[3], "w1")  # not w1's lease
    assert store.claim(ids[1], "w3", LEASE) == "done"
    assert store.claim("missing", "w3", LEASE) == "missing"
    assert store.queue_depth() == {"queued": 0, "running": 3, "waiting": 0, "done": 1}


def test_a_submission_processed_at_once_is_born_claimed(store):
    sid = receive(store, claimed_by="inline", lease=LEASE, now=T0).submission_id
    assert store.submission(sid)["run_state"] == "running"
    assert store.claim_next("queue-worker", LEASE, now=T0 + timedelta(seconds=59)) is None
    assert store.finish(sid, "inline")


def test_an_expired_lease_is_claimable_and_a_reclaim_discards_the_unfinished_outputs(store):
    sid = receive(store, now=T0).submission_id
    assert store.claim(sid, "w1", LEASE, now=T0) == "claimed"
    store.add_findings(sid, [Finding(rule="R", severity=Severity.ERROR, location="ISA",
                                     message="m", source="s")])
    first = store.add_document(sid, role="ack", name="999", content=b"a", media_type="x",
                               recipient="acme")
    store.add_document(sid, role="routed", name="r", content=b"r", media_type="x",
                       recipient="plan", parent_document=first)
    # w1 was killed; before its lease ends nobody may take over, after it anyone may
    assert store.claim_next("w2", LEASE, now=T0 + timedelta(seconds=59)) is None
    assert store.extend_lease(sid, "w1", LEASE, now=T0 + timedelta(seconds=30))
    assert store.claim(sid, "w2", LEASE, now=T0 + timedelta(seconds=89)) == "busy"
    assert store.claim_next("w2", LEASE, now=T0 + timedelta(seconds=91)) == sid
    assert store.findings(sid) == [] and store.documents(sid) == []
    assert not store.extend_lease(sid, "w1", LEASE) and not store.finish(sid, "w1")
    store.add_document(sid, role="ack", name="999", content=b"b", media_type="x",
                       recipient="acme")
    store.restart_run(sid)  # a retry inside the run starts from a clean slate too
    assert store.documents(sid) == []
    assert store.finish(sid, "w2", now=T0 + timedelta(seconds=92, milliseconds=500))
    found = store.submission(sid)
    assert found["run_state"] == "done" and found["finished_at"] == T0 + timedelta(
        seconds=92, milliseconds=500)


def _finding(rule: str = "R") -> Finding:
    return Finding(rule=rule, severity=Severity.ERROR, location="ISA", message="m", source="s")


def test_a_runs_outputs_are_written_with_its_end_in_one_go(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store, other = Store(url), Store(url)
    try:
        sid = receive(store, now=T0).submission_id
        assert store.claim(sid, "w", LEASE, now=T0) == "claimed"
        run = Run(store, sid)
        assert run.attempt(sid) == 1
        run.set_status(sid, "validated", now=T0 + timedelta(seconds=1))
        run.add_findings(sid, [_finding("A"), _finding("B")])
        ack = run.add_document(sid, role="ack", name="999", content=b"ISA~", media_type="x",
                               recipient="acme", now=T0 + timedelta(seconds=1))
        routed = run.add_document(sid, role="routed", name="r", content=b"r", media_type="x",
                                  recipient="plan", parent_document=ack,
                                  now=T0 + timedelta(seconds=2))
        run.set_status(sid, "routed", now=T0 + timedelta(seconds=2))
        run.set_summary(sid, {"claims": 1})
        with pytest.raises(ValueError):
            run.set_status(sid, "bogus")
        with pytest.raises(KeyError):
            run.add_document(sid, role="routed", name="x", content=b"", media_type="x",
                             parent_document="missing")
        # nothing of the unfinished run is in the store yet
        found = other.submission(sid)
        assert (found["status"], found["attempts"], found["summary"]) == ("received", 0, {})
        assert other.documents(sid) == [] and other.findings(sid) == []
        assert [h["status"] for h in other.history(sid)] == ["received"]
        assert store.finish(sid, "w", now=T0 + timedelta(seconds=3), run=run)
        found = other.submission(sid)
        assert (found["status"], found["attempts"], found["summary"], found["run_state"]) == (
            "routed", 1, {"claims": 1}, "done")
        assert [(h["status"], h["at"]) for h in other.history(sid)] == [
            ("received", T0), ("validated", T0 + timedelta(seconds=1)),
            ("routed", T0 + timedelta(seconds=2))]
        assert [f["rule"] for f in other.findings(sid)] == ["A", "B"]
        assert [(d["id"], d["parent_document"]) for d in other.documents(sid)] == [
            (ack, None), (routed, ack)]
        assert other.document(ack)["content"] == b"ISA~"
        assert [d["id"] for d in other.mailbox("plan")] == [routed]
    finally:
        store.close()
        other.close()


def test_a_run_that_lost_its_lease_writes_nothing(store):
    sid = receive(store, now=T0).submission_id
    assert store.claim(sid, "w1", LEASE, now=T0) == "claimed"
    run = Run(store, sid)
    run.add_findings(sid, [_finding()])
    run.add_document(sid, role="ack", name="999", content=b"a", media_type="x", recipient="a")
    run.set_status(sid, "validated")
    assert store.claim(sid, "w2", LEASE, now=T0 + timedelta(seconds=61)) == "claimed"
    assert not store.finish(sid, "w1", run=run)
    assert store.findings(sid) == [] and store.documents(sid) == []
    assert store.submission(sid)["status"] == "received"


def test_a_run_reads_its_own_writes_and_a_restart_drops_them(store):
    sid = receive(store, now=T0).submission_id
    other = receive(store, b"other", now=T0).submission_id
    assert store.claim(sid, "w", LEASE) == "claimed"
    run = Run(store, sid)
    assert run.attempt(sid) == 1
    run.set_summary(sid, {"step": 1})
    assert run.submission(sid)["summary"] == {"step": 1}  # written first, then read
    assert run.submission(sid)["attempts"] == 1
    run.add_findings(sid, [_finding("A")])
    assert [f["rule"] for f in run.findings(sid)] == ["A"]
    run.add_findings(other, [_finding("O")])  # another submission: written at once
    assert [f["rule"] for f in store.findings(other)] == ["O"]
    run.add_findings(sid, [_finding("B")])
    run.restart()  # a retry: what this attempt wrote, held or written, is gone
    assert store.findings(sid) == []
    run.add_findings(sid, [_finding("C")])
    assert run.attempt(sid) == 2
    assert store.finish(sid, "w", run=run)
    assert [f["rule"] for f in store.findings(sid)] == ["C"]
    assert store.submission(sid)["attempts"] == 2


def test_requeue_abandoned_and_overdue(store):
    a, b, c = (receive(store, bytes([i]), now=T0).submission_id for i in range(3))
    store.claim(a, "dead-worker", LEASE, now=T0)
    store.claim(b, "live-worker", LEASE, now=T0)
    assert store.requeue_abandoned(lambda owner: owner != "dead-worker") == [a]
    assert store.submission(a)["run_state"] == "queued"
    # never handed to a broker: overdue at once; handed over: after redeliver_after
    assert sorted(store.overdue(timedelta(minutes=5), now=T0)) == sorted([a, c])
    store.mark_enqueued([a, c], now=T0)
    assert store.overdue(timedelta(minutes=5), now=T0 + timedelta(minutes=1)) == []
    assert sorted(store.overdue(timedelta(minutes=5), now=T0 + timedelta(minutes=6))) == \
        sorted([a, b, c])  # b: its lease expired


def test_latency_histogram_counts_finished_runs_per_kind(store):
    for i, seconds in enumerate((0.04, 0.3, 7.0)):
        sid = receive(store, bytes([i]), now=T0).submission_id
        store.claim(sid, "w", LEASE, now=T0 + timedelta(seconds=seconds / 2))
        store.finish(sid, "w", now=T0 + timedelta(seconds=seconds))
    receive(store, b"waiting", kind="mif", now=T0)
    counts, total, count = store.latency_histogram((0.05, 0.5, 5.0, 10.0))["837p"]
    assert (counts, total, count) == ([1, 2, 2, 3], 7.34, 3)
    run_counts, run_total, _ = store.latency_histogram((0.05, 5.0), "run_ms")["837p"]
    assert (run_counts, run_total) == ([1, 3], 3.67)  # runs took 0.02, 0.15 and 3.5 s
    assert "mif" not in store.latency_histogram()


def test_a_store_of_the_previous_version_is_brought_up_to_date(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = Store(f"sqlite:///{path}")
    done = receive(old, b"1").submission_id
    waiting = receive(old, b"2").submission_id
    old.set_status(done, "routed")
    old.close()
    with sqlite3.connect(path) as db:  # the queue columns did not exist before
        db.execute("DROP INDEX ix_submissions_run_state")
        for column in ("run_state", "lease_owner", "lease_until", "enqueued_at", "started_at",
                       "finished_at", "run_ms", "latency_ms"):
            db.execute(f"ALTER TABLE submissions DROP COLUMN {column}")
    new = Store(f"sqlite:///{path}")
    try:
        assert new.submission(done)["run_state"] == "done"
        assert new.queued() == [waiting]
    finally:
        new.close()


def test_audit_is_append_only(store):
    for i in range(5):
        store.audit(actor="ops@example", action="replay", target=f"submission/{i}",
                    detail="manual", now=T0 + timedelta(seconds=i))
    store.audit(actor="system", action="purge", target="mailbox/acme")
    log = store.audit_log()
    assert [e["target"] for e in log] == ["mailbox/acme"] + [f"submission/{i}"
                                                             for i in reversed(range(5))]
    assert log[-1]["at"] == T0 and log[-1]["detail"] == "manual" and log[0]["detail"] == ""
    assert [e["target"] for e in store.audit_log(limit=2)] == ["mailbox/acme", "submission/4"]
    # no way to change or remove an entry through the API
    mutators = [name for name in dir(Store) if "audit" in name.lower()
                and name not in ("audit", "audit_log")]
    assert mutators == []
    assert not [n for n in dir(Store) if n.startswith(("delete", "remove", "purge", "update"))]


def test_counts_by_status(store):
    a = receive(store, b"1").submission_id
    receive(store, b"2")
    c = receive(store, b"3", kind="mif").submission_id
    store.set_status(a, "delivered")
    store.set_status(c, "rejected", error="bad header")
    assert store.counts_by_status() == {("837p", "delivered"): 1, ("837p", "received"): 1,
                                        ("mif", "rejected"): 1}


def test_in_memory_store_works():
    s = Store("sqlite://")
    sid = receive(s, b"mem").submission_id
    assert s.raw_payload(sid) == b"mem" and receive(s, b"mem").duplicate_of == sid


# -- sharing and concurrency -----------------------------------------------------------------------
def test_two_stores_on_one_sqlite_file_see_each_others_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    one, two = Store(url), Store(url)
    try:
        sid = receive(one, b"from one", idempotency_key="k").submission_id
        assert two.claim(sid, "w", LEASE) == "claimed"
        assert two.raw_payload(sid) == b"from one"
        assert receive(two, b"from one", idempotency_key="k").duplicate_of == sid
        two.set_status(sid, "validated")
        assert one.submission(sid)["status"] == "validated"
        doc = two.add_document(sid, role="ack", name="a", content=b"x", media_type="text/plain",
                               recipient="acme")
        assert one.finish(sid, "w")
        assert [d["id"] for d in one.mailbox("acme")] == [doc]
        with one.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        one.close()
        two.close()


def _run_threads(target, count: int = 4) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_concurrent_receives_from_four_threads(tmp_path):
    url = f"sqlite:///{tmp_path / 'busy.sqlite'}"
    stores = [Store(url) for _ in range(4)]  # separate engines, like separate processes
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(50):
            r = receive(stores[n], f"thread {n} payload {i}".encode(), partner=f"p{i % 3}")
            assert r.duplicate_of is None
            with lock:
                ids.append(r.submission_id)

    try:
        assert _run_threads(work) == []
        assert len(ids) == 200 and len(set(ids)) == 200
        assert sum(stores[0].counts_by_status().values()) == 200
    finally:
        for s in stores:
            s.close()


def test_concurrent_same_key_yields_one_original(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    stores = [Store(url) for _ in range(4)]
    results: list[Received] = []

    def work(n: int) -> None:
        for i in range(10):
            results.append(receive(stores[n], b"the same body", idempotency_key="same"))

    try:
        assert _run_threads(work) == []
        originals = {r.submission_id for r in results if r.duplicate_of is None}
        assert len(originals) == 1
        assert {r.submission_id for r in results} == originals
        assert len(stores[0].submissions_for("acme")) == 1
    finally:
        for s in stores:
            s.close()


# -- PostgreSQL (only where its binaries and a driver are installed) -------------------------------
def test_postgresql_store(pg_url):
    s = Store(pg_url)
    try:
        payload = bytes(range(256))
        first = receive(s, payload, idempotency_key="k", x12_key="S:1:1", now=T0)
        assert s.raw_payload(first.submission_id) == payload
        assert receive(s, payload, idempotency_key="k").duplicate_of == first.submission_id
        with pytest.raises(IdempotencyConflict):
            receive(s, b"x", idempotency_key="k")
        assert receive(s, b"y", x12_key="S:1:1", now=T0 + timedelta(days=1)).duplicate_of \
            is None
        assert receive(s, payload, now=T0 + timedelta(days=31)).duplicate_of is None
        assert receive(s, payload, partner="globex", now=T0).duplicate_of is None
        sid = first.submission_id
        assert s.claim(sid, "w", LEASE) == "claimed" and s.claim(sid, "v", LEASE) == "busy"
        s.set_status(sid, "validated", now=T0 + timedelta(seconds=1))
        assert [h["status"] for h in s.history(sid)] == ["received", "validated"]
        assert s.submission(sid)["created_at"] == T0
        s.set_summary(sid, {"claims": 2})
        assert s.submission(sid)["summary"] == {"claims": 2} and s.attempt(sid) == 1
        finding = Finding(rule="R1", severity=Severity.ERROR, location="ISA", message="m",
                          source="s", segment=1)
        s.add_findings(sid, [finding])
        assert [Finding(**d) for d in s.findings(sid)] == [finding]
        doc = s.add_document(sid, role="ack", name="999", content=b"ack", media_type="x",
                             recipient="acme")
        assert s.mailbox("acme") == [] and s.finish(sid, "w")
        assert s.document(doc)["content"] == b"ack" and s.mailbox("acme")[0]["id"] == doc
        s.audit(actor="a", action="b", target="c")
        assert s.audit_log()[0]["actor"] == "a"
        assert s.counts_by_status()[("837p", "validated")] == 1

        stores = [Store(pg_url) for _ in range(4)]
        results: list[Received] = []

        def work(n: int) -> None:
            for i in range(25):
                results.append(receive(stores[n], f"body {i % 5}".encode(), partner="race",
                                       idempotency_key=f"key-{i % 5}"))

        try:
            assert _run_threads(work) == []
        finally:
            for other in stores:
                other.close()
        assert len({r.submission_id for r in results}) == 5
        assert len(s.submissions_for("race")) == 5
    finally:
        s.close()


def test_a_new_submission_comes_back_as_the_store_reads_it(store):
    """receive() hands back the new submission's row exactly as submission() reads it (what
    a FHIR create answers with, without a second look); a duplicate has none."""
    kept = store.receive(partner="harbor", channel="api", kind="fhir", filename="CarePlan.json",
                         payload=b'{"resourceType": "CarePlan"}', idempotency_key="k-1")
    assert kept.row == store.submission(kept.submission_id)
    assert kept.row["run_state"] == "queued" and kept.row["created_at"].tzinfo is not None
    again = store.receive(partner="harbor", channel="api", kind="fhir",
                          filename="CarePlan.json", payload=b'{"resourceType": "CarePlan"}')
    assert again.duplicate and again.row is None
