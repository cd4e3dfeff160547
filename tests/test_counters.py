"""Control numbers (ISA13, GS06) of the server live in the store's database
(:meth:`Store.next_numbers`), so every API process and Celery worker on the store draws from one
counter: two stores, threads or processes on one database never get the same number, on SQLite
and on PostgreSQL. The command line draws from the same store (``--store``, default the
``./var`` store of ``serve``), so the CLI and the server never hand out the same ISA13."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import servers
from conftest import FIXTURES
from sqlalchemy import update

from gateway.pipeline.partners import Partners
from gateway.pipeline.process import process
from gateway.pipeline.store import MAX_CONTROL, Store, control_counters

PER_WORKER, WORKERS = 40, 4


def set_counter(store: Store, name: str, value: int) -> None:
    store.next_numbers(name)  # the row exists
    with store._write() as conn:
        conn.execute(update(control_counters).where(control_counters.c.name == name)
                     .values(value=value))


def test_numbers_start_at_one_and_follow_on_per_counter(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        assert store.next_numbers("isa13:acks") == [1]
        assert store.next_numbers("isa13:acks", 3) == [2, 3, 4]
        assert store.take_numbers({"isa13:acks": 2, "gs06:acks": 1}) == {
            "isa13:acks": [5, 6], "gs06:acks": [1]}
        assert store.next_numbers("gs06:acks", 0) == []
    finally:
        store.close()
    reopened = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        assert reopened.next_numbers("isa13:acks") == [7]  # durable
    finally:
        reopened.close()


def test_counters_wrap_within_nine_digits(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        set_counter(store, "x", MAX_CONTROL - 1)
        assert store.next_numbers("x", 3) == [MAX_CONTROL, 1, 2]
        set_counter(store, "y", MAX_CONTROL)
        assert store.next_numbers("y") == [1]
    finally:
        store.close()


def _legacy_counter_file(folder: Path, values: dict[str, int]) -> None:
    """The counter file an earlier version of the server kept under var/."""
    folder.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(folder / "counters.sqlite") as db:
        db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)")
        for name, value in values.items():
            db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
                       "DO UPDATE SET value = excluded.value", (name, value))


def _draw_in_threads(stores: list[Store]) -> list[int]:
    taken: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        store = stores[n % len(stores)]
        for i in range(PER_WORKER):
            got = store.next_numbers("isa13:dhcs-encounters", 1 + i % 3)
            with lock:
                taken.extend(got)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return taken


def _draw_in_process(url: str, out: multiprocessing.Queue) -> None:
    store = Store(url)
    try:
        out.put([n for i in range(PER_WORKER)
                 for n in store.next_numbers("isa13:dhcs-encounters", 1 + i % 3)])
    finally:
        store.close()


def _draw_in_processes(url: str, count: int = 2) -> list[int]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    procs = [context.Process(target=_draw_in_process, args=(url, out)) for _ in range(count)]
    for proc in procs:
        proc.start()
    taken = [n for _ in procs for n in out.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return taken


def _assert_unique_and_gapless(taken: list[int], expected: int) -> None:
    assert len(taken) == expected
    assert sorted(taken) == list(range(1, expected + 1))  # none twice, none skipped


DRAWN = sum(1 + i % 3 for i in range(PER_WORKER))  # numbers one worker draws


def test_two_stores_and_two_processes_on_one_sqlite_file_never_share_a_number(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    stores = [Store(url), Store(url)]
    try:
        _assert_unique_and_gapless(_draw_in_threads(stores), DRAWN * WORKERS)
        more = _draw_in_processes(url)
        assert sorted(more) == list(range(DRAWN * WORKERS + 1, DRAWN * (WORKERS + 2) + 1))
    finally:
        for store in stores:
            store.close()


def test_two_stores_and_two_processes_on_one_postgresql_never_share_a_number(pg_url):
    stores = [Store(pg_url), Store(pg_url)]
    try:
        _assert_unique_and_gapless(_draw_in_threads(stores), DRAWN * WORKERS)
        more = _draw_in_processes(pg_url)
        assert sorted(more) == list(range(DRAWN * WORKERS + 1, DRAWN * (WORKERS + 2) + 1))
        set_counter(stores[0], "wrap", MAX_CONTROL - 1)
        assert stores[1].next_numbers("wrap", 3) == [MAX_CONTROL, 1, 2]
    finally:
        for store in stores:
            store.close()


def test_a_new_store_continues_the_former_counter_file(tmp_path, monkeypatch):
    var = tmp_path / "var"
    monkeypatch.setenv("ECM_GATEWAY_VAR", str(var))
    _legacy_counter_file(var, {"isa13:acks": 41, "gs06:acks": 7})
    store = Store(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        assert store.next_numbers("isa13:acks") == [42]
        assert store.next_numbers("gs06:acks") == [8]
        assert store.next_numbers("isa13:dhcs-encounters") == [1]
    finally:
        store.close()
    # only an empty store adopts the file: later changes to the file are not read again
    _legacy_counter_file(var, {"isa13:acks": 141})
    again = Store(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        assert again.next_numbers("isa13:acks") == [43]
    finally:
        again.close()


def test_the_server_takes_acknowledgment_and_envelope_numbers_from_the_store(tmp_path,
                                                                          monkeypatch):
    var = tmp_path / "var"
    monkeypatch.setenv("ECM_GATEWAY_VAR", str(var))
    partners_file, _ = servers.write_partners(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        set_counter(store, "isa13:acks", 500)
        set_counter(store, "gs06:acks", 70)
        set_counter(store, "isa13:plan-default", 9000)
        set_counter(store, "gs06:plan-default", 300)
        sid = store.receive(partner="valley", channel="api", kind="x12", filename=None,
                            payload=(FIXTURES / "837p" / "ecm-clean.x12").read_bytes()
                            ).submission_id
        outcome = process(store, Partners.load(partners_file), sid)
        assert outcome.status == "routed"
        docs = {d["role"]: store.document(d["id"])["content"].decode()
                for d in store.documents(sid)}
        isa13 = {role: text.split("*")[13] for role, text in docs.items()}
        assert isa13 == {"ack-999": "000000501", "ack-277ca": "000000502",
                         "routed-837p": "000009001"}
        assert "~\nGS*FA*" in docs["ack-999"] and "*71*X*005010X231A1~" in docs["ack-999"]
        assert "*301*X*005010X222A1~" in docs["routed-837p"]
        assert not (var / "counters.sqlite").exists()  # nothing drawn from the file
    finally:
        store.close()


def test_the_command_line_and_the_server_share_one_counter_store(tmp_path, monkeypatch):
    """``ecm-gateway ack`` and ``convert --to 837p`` draw from the store of ``--store`` (default:
    the ``./var`` store of ``serve``): after the server took ISA13 500, the CLI's next
    acknowledgment is 501, and the server's next one after that 504 (the CLI took three)."""
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ECM_GATEWAY_VAR", raising=False)
    store = Store(None)  # the default: ./var/gateway.sqlite
    try:
        set_counter(store, "isa13:acks", 500)
        assert main(["ack", str(FIXTURES / "837p" / "ecm-clean.x12"), "-o", "acks"]) == 0
        ack = (tmp_path / "acks" / "ecm-clean.999.x12").read_text()
        assert ack.split("*")[13] == "000000501"
        assert store.next_numbers("isa13:acks") == [504]
        other = tmp_path / "other.sqlite"
        assert main(["ack", str(FIXTURES / "837p" / "ecm-clean.x12"), "-o", "acks2",
                     "--store", f"sqlite:///{other}"]) == 0
        assert (tmp_path / "acks2" / "ecm-clean.999.x12").read_text().split("*")[13] == \
            "000000001"
        assert not (tmp_path / "var" / "counters.sqlite").exists()
    finally:
        store.close()
