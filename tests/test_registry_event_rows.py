"""``Registry.snapshot(event_rows=True)``: the ECM rules' read of a batch (issue 14, speed).

The utilization events of the members asked for come back as plain rows of the ``EVENT_ROW``
columns (no HistoryLine each) and the lines on the batch's dates only as duplicate keys; the
POF evidence computed from those rows (``pof_shortfalls(..., rows=True)``) must be the one
computed from HistoryLine objects, on SQLite and on PostgreSQL (dates come back as text from
one, as dates from the other)."""

from datetime import date, timedelta

import pytest

from gateway.ecm.codesets import load_codesets
from gateway.ecm.pof import pof_shortfalls
from gateway.registry.store import EVENT_ROW, Registry, cs_authorizations, history

CINS = ("91230000A", "91230001B", "91230002C", "91230003D")


def _history_rows():
    """Stays over contiguous days and one claim, ED visits (one leading to an admission, one
    twice on a day), SMI/SUD diagnoses, office visits (no event) and lines on the batch's
    dates, for members with and without events."""
    start = date(2026, 3, 2)
    rows = []

    def line(cin, day, code, pos, claim, number=1, diagnoses="", npi="1234500001"):
        rows.append({"cin": cin, "billing_npi": npi, "service_date": day,
                     "procedure_code": code, "modifiers": "", "units": "1",
                     "place_of_service": pos, "claim_id": claim, "line_number": number,
                     "diagnoses": diagnoses})

    a, b, c, _ = CINS
    for i in range(3):  # one three-day stay (one admission), SMI diagnosis on its second day
        line(a, start + timedelta(days=i), "99222", "21", "S1", i + 1,
             "F200" if i == 1 else "Z5900")
    line(a, start - timedelta(days=1), "99283", "23", "E1", 1, "F329")  # led to the stay
    for i in range(6):  # ED visits, one a fortnight, one day twice
        day = start + timedelta(days=20 + 14 * i)
        line(a, day, "99284", "23", f"E{10 + i}", 1, "F1020" if i % 2 else "")
        if i == 2:
            line(a, day, "99285", "11", f"E{20 + i}", 1, "T401")  # (code, not place)
    line(a, date(2026, 9, 3), "G9008", "11", "DUPE", 2)  # on the batch's dates
    for i in range(4):  # SNF stays, a gap between each
        line(b, start + timedelta(days=10 * i), "99305", "31", f"N{i}", 1, "F319")
    line(b, date(2026, 9, 4), "99213", "11", "OFFICE", 1)  # no event, on the batch's dates
    line(c, date(2026, 5, 5), "99213", "11", "OFFICE", 1)  # no event at all
    line(c, date(2025, 1, 5), "99221", "21", "OLD", 1, "F200")  # before any window
    return rows


def _members():
    return [{"member_cin": cin, "pof_codes": ["HIGH_UTILIZER", "SMI_SUD"],
             "authorization_date": date(2026, 8, 15), "ecm_benefit_start": date(2026, 9, 1),
             "ecm_provider_npi": "1234500001", "member_birth_date": date(1970, 1, 1),
             **({"cs_service": "HOUSING_NAVIGATION", "cs_authorization_start": date(2026, 1, 1)}
                if cin == CINS[1] else {})}
            for cin in CINS]


def _loaded(registry: Registry) -> Registry:
    with registry.engine.begin() as conn:
        conn.execute(history.delete())
        conn.execute(cs_authorizations.delete())
    registry.load_members(_members(), "test-mif")
    registry.load_history(_history_rows(), "test-history")
    return registry


def _same_snapshots(registry: Registry) -> None:
    codes = load_codesets()
    index = (codes.event_by_place, codes.event_by_code)
    events = (frozenset(index[0]), frozenset(index[1]))
    days = (date(2026, 9, 1), date(2026, 9, 30))
    cins = set(CINS)
    wanted = {CINS[0], CINS[1], CINS[2]}  # not the fourth: asked for no events

    def event_members(cin, _assignments):
        return cin in wanted

    old = registry.snapshot(cins, set(), days=days, events=events,
                            event_members=event_members)
    new = registry.snapshot(cins, set(), days=days, events=events,
                            event_members=event_members, event_rows=True)
    assert new.history == {} and old.events == {}
    # the duplicate check reads the same lines on the batch's dates
    assert {k: (v.claim_id, v.line_number) for k, v in new.history_keys.items()} == {
        k: (v.claim_id, v.line_number) for k, v in old.history_keys.items()}
    assert sorted(v.claim_id for v in new.history_keys.values()) == ["DUPE", "OFFICE"]
    # every event line of the wanted members, whatever its date; nothing else
    assert sorted(new.events) == sorted(CINS[:3])
    assert all(len(row) == len(EVENT_ROW) and row[0] == cin
               for cin, rows in new.events.items() for row in rows)
    assert sorted(row[4] for row in new.events[CINS[2]]) == ["OLD"]
    assert len(new.events[CINS[0]]) == 3 + 1 + 6 + 1
    assert new.assignments == old.assignments
    found_any = False
    for latest in (None, date(2026, 7, 20), date(2026, 9, 30)):
        for cin in CINS:
            expected = pof_shortfalls(old.assignments[cin], old.history.get(cin, []),
                                      codes.utilization, index, latest=latest)
            got = pof_shortfalls(new.assignments[cin], new.events.get(cin) or [],
                                 codes.utilization, index, latest=latest, rows=True)
            assert got == expected, (cin, latest)
            found_any = found_any or bool(expected)
    assert found_any  # (the comparison is not between two empty lists only)
    # CS authorizations: read unless the caller says the table is empty
    assert [a.service for a in new.cs_authorizations[CINS[1]]] == ["HOUSING_NAVIGATION"]
    skipped = registry.snapshot(cins, set(), days=days, events=events, event_rows=True,
                                cs_authorizations=False)
    assert not skipped.cs_authorizations
    assert skipped.assignments == old.assignments


def test_event_rows_give_the_pof_evidence_of_history_lines_on_sqlite(tmp_path):
    _same_snapshots(_loaded(Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")))


def test_event_rows_give_the_pof_evidence_of_history_lines_in_memory():
    _same_snapshots(_loaded(Registry.in_memory_file()))


def test_event_rows_give_the_pof_evidence_of_history_lines_on_postgresql(pg_registry):
    _same_snapshots(_loaded(pg_registry))


@pytest.mark.parametrize("value", ["2026-03-02", date(2026, 3, 2)])
def test_an_event_rows_date_is_read_as_the_driver_gives_it(value):
    from gateway.registry._rows import day_of
    from gateway.registry.store import _DayReader

    assert day_of({}, value) == date(2026, 3, 2) == _DayReader(isinstance(value, str))(value)
    assert day_of({}, None) is None


def _old_index(registry: Registry) -> None:
    """The history index as registries made it before it covered the event rows."""
    from sqlalchemy import text

    with registry.engine.begin() as conn:
        conn.execute(text('DROP INDEX "ix_history_member_day_event"'))
        conn.execute(text('CREATE INDEX "ix_history_member_day_event" ON encounter_history '
                          '(cin, service_date, place_of_service, procedure_code)'))


def _index_columns(registry: Registry) -> list[str]:
    from sqlalchemy import inspect

    with registry.engine.connect() as conn:
        [index] = [i for i in inspect(conn).get_indexes("encounter_history")
                   if i["name"] == "ix_history_member_day_event"]
    return list(index["column_names"])


COVERING = ["cin", "service_date", "place_of_service", "procedure_code", "claim_id",
            "diagnoses"]


def test_the_event_rows_read_never_visits_the_history_table(tmp_path):
    from sqlalchemy import text

    registry = _loaded(Registry(f"sqlite:///{tmp_path / 'r.sqlite'}"))
    assert _index_columns(registry) == COVERING
    with registry.engine.connect() as conn:
        plan = " ".join(str(r) for r in conn.execute(text(
            f"EXPLAIN QUERY PLAN SELECT {', '.join(EVENT_ROW)} FROM encounter_history "
            "WHERE cin IN ('91230000A', '91230001B') AND (place_of_service IN ('21', '23') "
            "OR procedure_code IN ('99221', '99281'))")))
    assert "COVERING INDEX ix_history_member_day_event" in plan


def test_a_registry_with_the_earlier_index_is_upgraded_on_open(tmp_path):
    path = tmp_path / "r.sqlite"
    registry = _loaded(Registry(f"sqlite:///{path}"))
    _old_index(registry)
    assert _index_columns(registry) == COVERING[:4]
    registry.engine.dispose()
    reopened = Registry(f"sqlite:///{path}")
    assert _index_columns(reopened) == COVERING
    _same_snapshots(reopened)  # (nothing lost on the way)
    # a registry without the index at all (made before it existed) gets it too
    from sqlalchemy import text

    with reopened.engine.begin() as conn:
        conn.execute(text('DROP INDEX "ix_history_member_day_event"'))
    reopened.engine.dispose()
    assert _index_columns(Registry(f"sqlite:///{path}")) == COVERING


def test_a_postgresql_registry_with_the_earlier_index_is_upgraded_on_open(pg_url):
    registry = _loaded(Registry(pg_url))
    _old_index(registry)
    assert _index_columns(registry) == COVERING[:4]
    registry.engine.dispose()
    assert _index_columns(Registry(pg_url)) == COVERING
