"""The bulk path of the encounter-history registry (``Registry.load_history_tuples``, what a
plan's claims extract of millions of lines goes through): SQLite builds the indexes once after a
bulk insert, PostgreSQL uses COPY; either way replace-by-source and whole-or-nothing hold."""

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text

from gateway.registry.store import Registry, history


def lines(n: int, cin: str = "91230000A", claim: str = "C"):
    start = date(2025, 1, 1)
    for i in range(n):
        yield (cin, "1234500001", None, start + timedelta(days=i % 300), "99213", "", "1",
               "11", f"{claim}{i}", 1, "Z5900")


def failing(n: int):
    yield from lines(n, claim="NEW")
    raise ValueError("a bad row")


def count(registry: Registry, source: str | None = None) -> int:
    query = select(func.count()).select_from(history)
    if source is not None:
        query = query.where(history.c.source == source)
    with registry.engine.connect() as conn:
        return conn.execute(query).scalar()


def sqlite_indexes(registry: Registry) -> list[str]:
    with registry.engine.connect() as conn:
        return sorted(n for (n,) in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type='index' AND "
            "tbl_name='encounter_history' AND sql IS NOT NULL")))


def test_sqlite_bulk_load_rebuilds_the_indexes_and_a_failure_rolls_all_back(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    registry.BULK_BATCH = 7  # a bulk load: more than one batch
    assert registry.load_history_tuples(lines(50), "plan:a:claims:x.csv") == 50
    assert sqlite_indexes(registry) == ["ix_history_day", "ix_history_member_day_event"]
    with registry.engine.connect() as conn:  # the index is used for a member's lines
        plan = " ".join(str(r) for r in conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT * FROM encounter_history WHERE cin = '91230000A'")))
    assert "ix_history_member_day_event" in plan
    assert registry.load_history_tuples(lines(20), "plan:b:claims:y.csv") == 20
    # the same source again replaces its lines
    assert registry.load_history_tuples(lines(30), "plan:a:claims:x.csv") == 30
    assert (count(registry, "plan:a:claims:x.csv"), count(registry)) == (30, 50)
    # a stream that fails half-way (after the indexes were dropped) leaves all as it was
    with pytest.raises(ValueError):
        registry.load_history_tuples(failing(40), "plan:a:claims:x.csv")
    assert (count(registry, "plan:a:claims:x.csv"), count(registry)) == (30, 50)
    assert sqlite_indexes(registry) == ["ix_history_day", "ix_history_member_day_event"]
    assert registry.snapshot({"91230000A"}, set(), days=(date(2025, 1, 1),
                                                         date(2025, 1, 1))).history


def test_a_big_table_keeps_its_indexes_during_a_load(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    registry.BULK_BATCH, registry.REBUILD_BELOW = 5, 10
    registry.load_history_tuples(lines(30), "plan:a:claims:x.csv")
    with registry.engine.connect() as conn:
        conn.execute(text("CREATE INDEX ix_marker ON encounter_history (claim_id)"))
        conn.commit()
    registry.load_history_tuples(lines(12), "plan:b:claims:y.csv")  # 30 other lines > 10
    assert sqlite_indexes(registry) == ["ix_history_day", "ix_history_member_day_event", "ix_marker"]
    assert count(registry) == 42


def test_postgresql_loads_through_copy_whole_or_not_at_all(pg_url):
    registry = Registry(pg_url)
    with registry.engine.begin() as conn:
        conn.execute(history.delete())
    assert registry.load_history_tuples(lines(25), "plan:a:claims:x.csv") == 25
    assert registry.load_history_tuples(lines(25), "plan:a:claims:x.csv") == 25
    assert count(registry) == 25
    with pytest.raises(ValueError):
        registry.load_history_tuples(failing(10), "plan:a:claims:x.csv")
    assert count(registry, "plan:a:claims:x.csv") == 25
    snap = registry.snapshot({"91230000A"}, set(), days=(date(2025, 1, 2), date(2025, 1, 2)))
    [line] = snap.history["91230000A"]
    assert (line.service_date, line.claim_id, line.diagnoses) == (
        date(2025, 1, 2), "C1", ("Z5900",))
    # the one-pass read of utilization lines (POF evidence) works on PostgreSQL too
    registry.load_history_tuples(lines(3, cin="91230001B"), "plan:b:claims:y.csv")
    grouped = [(cin, len(found)) for cin, found in
               registry.utilization_lines((frozenset({"11"}), frozenset()))]
    assert grouped == [("91230000A", 25), ("91230001B", 3)]


def test_the_latest_history_day_is_one_index_step(tmp_path):
    """latest_history_day (the POF lookback's anchor, read by every rule engine) must not scan
    the history: it reads the end of ix_history_day."""
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    registry.load_history_tuples(lines(30), "plan:a:claims:x.csv")
    with registry.engine.connect() as conn:
        plan = " ".join(str(r) for r in conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT max(service_date) FROM encounter_history")))
    assert "ix_history_day" in plan and "SEARCH" in plan, plan
    with registry.engine.connect() as conn:
        expected = conn.execute(text("SELECT service_date FROM encounter_history "
                                     "ORDER BY service_date DESC LIMIT 1")).scalar()
    assert registry.latest_history_day().isoformat() == expected
