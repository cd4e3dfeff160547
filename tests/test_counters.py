"""Control numbers (ISA13, GS06) of the server live in the store's database
(:meth:`Store.next_numbers`), so every API process and Celery worker on the store draws from one
counter: two stores, threads or processes on one database never get the same number, on SQLite
and on PostgreSQL. The command line (no store) keeps its counter file (counters.py); both wrap
the same way."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import servers
from conftest import FIXTURES
from sqlalchemy import update

from gateway.pipeline import counters
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


def test_wrap_around_is_the_same_as_the_command_lines_counter(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    folder = tmp_path / "cli"
    try:
        for start, count in ((MAX_CONTROL - 2, 5), (MAX_CONTROL - 1, 1), (MAX_CONTROL, 2)):
            name = f"c{start}"
            set_counter(store, name, start)
            counters.next_numbers(name, folder=folder)
            with sqlite3.connect(folder / "counters.sqlite") as db:
                db.execute("UPDATE counters SET value = ? WHERE name = ?", (start, name))
            expected = counters.next_numbers(name, count, folder=folder)
            assert store.next_numbers(name, count) == expected
            assert store.next_numbers(name) == counters.next_numbers(name, folder=folder)
        set_counter(store, "x", MAX_CONTROL - 1)
        assert store.next_numbers("x", 3) == [MAX_CONTROL, 1, 2]
    finally:
        store.close()


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
    counters.next_numbers("isa13:acks", 41, folder=var)
    counters.next_numbers("gs06:acks", 7, folder=var)
    store = Store(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        assert store.next_numbers("isa13:acks") == [42]
        assert store.next_numbers("gs06:acks") == [8]
        assert store.next_numbers("isa13:dhcs-encounters") == [1]
    finally:
        store.close()
    # only an empty store adopts the file: later changes to the file are not read again
    counters.next_numbers("isa13:acks", 100, folder=var)
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


def test_the_command_line_keeps_its_counter_file(tmp_path):
    assert counters.next_numbers("n", 2, folder=tmp_path) == [1, 2]
    assert Path(tmp_path / "counters.sqlite").is_file()
