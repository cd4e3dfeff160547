"""Two different files with the same ISA13 from the same sender arriving at the same instant
(two API processes, the API and the file drop, two workers): the check of a reused control
number and its claim are one step (gateway/pipeline/controls.py ``claim``, the unique key of
``inbound_control_claims``), so exactly one file is accepted and the other is rejected with a
TA1 whose TA105 is 025 -- on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from conftest import FIXTURES, ROOT, renumber
from fastapi.testclient import TestClient

from gateway.api.app import create_app
from gateway.pipeline.controls import claim
from gateway.pipeline.partners import issue_demo_tokens
from gateway.pipeline.registries import load_demo_registries, server_registry
from gateway.pipeline.store import Store

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()
OTHER = MIXED.replace(b"MIX-A-GOOD", b"MIX-A-GOOO")  # different content, same numbers
THREADS = 8


def _together(count: int, work) -> list:
    """``work(i)`` on ``count`` threads released at the same instant; their results."""
    gate = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.sqlite'}"
        return
    yield request.getfixturevalue("pg_url")


def test_of_simultaneous_claims_of_one_number_exactly_one_wins(store_url):
    store = Store(store_url)
    try:
        registry = server_registry(store)
        now = datetime.now(UTC)
        for number in ("501", "502", "503"):
            held = _together(THREADS, lambda i: claim(
                registry, "harbor", "isa13", "ECMGATEWAY", number, f"root{i}", f"sub{i}", now))
            winners = [i for i, h in enumerate(held) if h is None]
            assert len(winners) == 1, held
            assert {h for h in held if h is not None} == {(f"sub{winners[0]}",
                                                           now.isoformat())}
            # the holder's own chain (a replay, a re-run) keeps it; another still may not
            assert claim(registry, "harbor", "isa13", "ECMGATEWAY", number,
                         f"root{winners[0]}", "replay", now) is None
            assert claim(registry, "harbor", "isa13", "ECMGATEWAY", number, "late", "late",
                         now)[0] == f"sub{winners[0]}"
        # out of the window (30 days) a number is free again -- for exactly one claimant
        later = now + timedelta(days=31)
        held = _together(THREADS, lambda i: claim(
            registry, "harbor", "isa13", "ECMGATEWAY", "501", f"new{i}", f"new{i}", later))
        assert sum(h is None for h in held) == 1, held
        # other senders, other partners, GS06: numbers of their own
        assert claim(registry, "golden-table", "isa13", "ECMGATEWAY", "502", "g", "g",
                     now) is None
        assert claim(registry, "harbor", "gs06", "ECMGATEWAY", "502", "g", "g", now) is None
        assert claim(registry, "harbor", "isa13", "OTHERSENDER", "502", "g", "g", now) is None
    finally:
        store.close()


def test_two_files_with_one_isa13_at_the_same_instant_one_gets_a_ta1_025(store_url,
                                                                            tmp_path):
    """Through the embedded server with two worker threads (each file run at once, side by
    side), several rounds: every time one file is processed and the other is rejected with
    TA1 TA105 025 naming it."""
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               tmp_path / "partners.yaml")
    app = create_app(store=store_url, partners=tmp_path / "partners.yaml", workers=2)
    load_demo_registries(app.state.store, app.state.partners)
    auth = {"Authorization": f"Bearer {tokens['harbor']}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        for number in (7001, 7002, 7003):
            files = [renumber(MIXED, number), renumber(OTHER, number)]
            answers = _together(2, lambda i: client.post("/x12", content=files[i],
                                                         headers=auth))
            bodies = [a.json() for a in answers]
            assert [a.status_code for a in answers] == [200, 200], bodies
            rejected = [b for b in bodies if b["status"] == "rejected"]
            accepted = [b for b in bodies if b["status"] != "rejected"]
            assert len(rejected) == len(accepted) == 1, bodies
            [no], [yes] = rejected, accepted
            assert yes["status"] in ("routed", "delivered"), yes
            assert f"TA1*{number:09d}*250630*1400*R*025~" in no["ack_ta1"]
            assert f"already used by submission {yes['submission_id']}" in no["error"]
            assert no["submission_id"] != yes["submission_id"]
    app.state.queue.stop()


_LEGACY_TABLE = """
CREATE TABLE inbound_controls (
    id INTEGER PRIMARY KEY, partner VARCHAR(120) NOT NULL, root VARCHAR(32) NOT NULL,
    submission_id VARCHAR(32) NOT NULL, kind VARCHAR(8) NOT NULL,
    sender_id VARCHAR(35) NOT NULL, number VARCHAR(9) NOT NULL,
    received_at VARCHAR(32) NOT NULL)
"""


def test_control_numbers_received_before_the_upgrade_are_still_held(store_url):
    """A store made before numbers were claimed atomically kept every use in
    ``inbound_controls``; on start its latest use of each number becomes the holder, so a
    different file reusing a number received before the upgrade still gets its TA1 025."""
    from sqlalchemy import inspect, text

    from gateway.pipeline.registries import _create_tables

    store = Store(store_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS inbound_controls"))
            conn.execute(text(_LEGACY_TABLE))
            rows = [  # two uses of ISA13 77 (a "process" partner), one GS06
                (1, "legacy-plan", "rootold", "subold", "isa13", "LEGACYSENDER", "77",
                 "2026-11-01T10:00:00+00:00"),
                (2, "legacy-plan", "rootnew", "subnew", "isa13", "LEGACYSENDER", "77",
                 "2026-11-20T10:00:00+00:00"),
                (3, "legacy-plan", "rootnew", "subnew", "gs06", "LEGACYGS", "77",
                 "2026-11-20T10:00:00+00:00"),
            ]
            for row in rows:
                conn.execute(text(
                    "INSERT INTO inbound_controls (id, partner, root, submission_id, kind,"
                    " sender_id, number, received_at) VALUES (:i, :p, :r, :s, :k, :d, :n, :a)"),
                    dict(zip("iprskdna", row)))
        _create_tables(store.engine)
        _create_tables(store.engine)  # a second start finds nothing left to carry
        assert not inspect(store.engine).has_table("inbound_controls")
        registry = server_registry(store)
        now = datetime(2026, 12, 1, tzinfo=UTC)
        assert claim(registry, "legacy-plan", "isa13", "LEGACYSENDER", "77", "rootx", "subx",
                     now) == ("subnew", "2026-11-20T10:00:00+00:00")
        assert claim(registry, "legacy-plan", "gs06", "LEGACYGS", "77", "rootx", "subx",
                     now) == ("subnew", "2026-11-20T10:00:00+00:00")
        # the chain that held it keeps it
        assert claim(registry, "legacy-plan", "isa13", "LEGACYSENDER", "77", "rootnew",
                     "subnew2", now) is None
    finally:
        store.close()
