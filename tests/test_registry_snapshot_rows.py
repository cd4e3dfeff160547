"""``Registry.snapshot``'s row loops (gateway/registry/_rows.py, compiled with Cython): the
assignments, enrolments and utilization-event rows of a batch are those a plain reading of the
tables gives - several assignments and programs a member, dates missing or given, empty text
columns, members with and without events, dates as text (SQLite) and as dates (PostgreSQL) -
and the compiled build reads what the pure-Python module reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from gateway.registry import _rows
from gateway.registry.store import (
    EVENT_ROW, Assignment, Enrolment, Registry, assignments, cs_authorizations, history,
    programs,
)
from gateway.x12 import _accelerate

ROOT = Path(__file__).resolve().parent.parent
CINS = ("91240000A", "91240001B", "91240002C", "91240003D", "91240004E")
EVENTS = (frozenset({"21", "23"}), frozenset({"99221", "99284"}))


def _fill(registry: Registry) -> Registry:
    a, b, c, d, _ = CINS  # (the fifth: in the batch, in no table)
    with registry.engine.begin() as conn:
        for table in (history, cs_authorizations, assignments, programs):
            conn.execute(table.delete())
        conn.execute(assignments.insert(), [
            # two periods with two providers, one open-ended; POF codes repeated across rows
            {"cin": a, "benefit_start": date(2025, 1, 1), "benefit_end": date(2025, 12, 31),
             "provider_npi": "1234500001", "provider_tin": "940000001",
             "pof_codes": "HIGH_UTILIZER;SMI_SUD", "authorization_date": date(2024, 12, 20),
             "birth_date": date(1970, 2, 28)},
            {"cin": a, "benefit_start": date(2026, 1, 1), "benefit_end": None,
             "provider_npi": "1234500002", "provider_tin": None, "pof_codes": "SMI_SUD",
             "authorization_date": None, "birth_date": date(1970, 2, 28)},
            # nothing but the member: every optional column empty (NULL or "")
            {"cin": b, "benefit_start": None, "benefit_end": None, "provider_npi": None,
             "provider_tin": "", "pof_codes": None, "authorization_date": None,
             "birth_date": None},
            {"cin": c, "benefit_start": date(2026, 3, 1), "benefit_end": date(2026, 2, 28),
             "provider_npi": "1234500003", "provider_tin": "940000003", "pof_codes": ";;HOMELESS;",
             "authorization_date": date(2026, 3, 1), "birth_date": date(2000, 2, 29)},
        ])
        conn.execute(programs.insert(), [
            {"cin": a, "program": "CBAS", "start": date(2025, 6, 1), "end": None,
             "county": "ALAMEDA"},
            {"cin": a, "program": "MSSP", "start": None, "end": date(2025, 12, 31),
             "county": None},
            {"cin": d, "program": "HOSPICE", "start": date(2026, 1, 15),
             "end": date(2026, 4, 30), "county": ""},  # a program, no assignment
        ])
        lines = []
        for i, (cin, day, place, code, claim, diagnoses) in enumerate([
                (a, date(2025, 3, 2), "21", "99222", "S1", "F200;Z5900"),
                (a, date(2025, 3, 3), "21", "99222", None, None),  # no claim id, no diagnoses
                (a, date(2025, 4, 9), "11", "99284", "E1", ""),  # event by code
                (a, date(2025, 4, 9), "11", "99213", "OFF", ""),  # no event
                (b, date(2025, 5, 5), "23", None, "E2", "F329"),  # event by place, no code
                (c, date(2025, 7, 7), "11", "99213", "OFF2", ""),  # no event at all
                (d, date(2025, 8, 8), "23", "99283", "E3", "T401")]):
            lines.append({"cin": cin, "billing_npi": "1234500001", "service_date": day,
                          "procedure_code": code, "modifiers": "", "units": "1",
                          "place_of_service": place, "claim_id": claim, "line_number": i,
                          "diagnoses": diagnoses})
        conn.execute(history.insert(), lines)
    return registry


def _plainly(registry: Registry, wanted: set[str]):
    """The batch read without the row loops: each table's rows as the driver returns them,
    made into the snapshot's tuples one value at a time."""
    def day(value):
        return value if value is None or isinstance(value, date) else \
            date.fromisoformat(value[:10])

    marks = "?" if registry.engine.dialect.paramstyle == "qmark" else "%s"
    inside = ", ".join([marks] * len(CINS))
    found_assignments, found_enrolments, found_events = {}, {}, {}
    raw = registry.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT cin, benefit_start, benefit_end, provider_npi, provider_tin, "
                       "pof_codes, authorization_date, birth_date FROM member_assignments "
                       f"WHERE cin IN ({inside})", CINS)
        for cin, start, end, npi, tin, pofs, auth, birth in cursor.fetchall():
            found_assignments.setdefault(cin, []).append(Assignment(
                cin, day(start), day(end), npi or "", tin or "",
                tuple(c for c in (pofs or "").split(";") if c), day(auth), day(birth)))
        cursor.execute(f'SELECT cin, program, start, "end", county FROM member_programs '
                       f"WHERE cin IN ({inside})", CINS)
        for cin, program, start, end, county in cursor.fetchall():
            found_enrolments.setdefault(cin, []).append(
                Enrolment(program, day(start), day(end), county or ""))
        cins = sorted(wanted)
        cursor.execute(f"SELECT {', '.join(EVENT_ROW)} FROM encounter_history WHERE cin IN "
                       f"({', '.join([marks] * len(cins))}) AND (place_of_service IN "
                       f"({marks}, {marks}) OR procedure_code IN ({marks}, {marks}))",
                       (*cins, *sorted(EVENTS[0]), *sorted(EVENTS[1])))
        for row in cursor.fetchall():
            found_events.setdefault(row[0], []).append(tuple(row))
    finally:
        raw.close()
    return found_assignments, found_enrolments, found_events


def _types(rows: dict) -> dict:
    return {cin: [tuple(type(v) for v in row) for row in found] for cin, found in rows.items()}


def _same_as_plainly(registry: Registry) -> None:
    wanted = {CINS[0], CINS[1], CINS[2]}
    snap = registry.snapshot(set(CINS), set(), days=(date(2026, 9, 1), date(2026, 9, 30)),
                             events=EVENTS, event_members=lambda cin, _a: cin in wanted,
                             event_rows=True, cs_authorizations=False)
    found_assignments, found_enrolments, found_events = _plainly(registry, wanted)
    for got, expected in ((snap.assignments, found_assignments),
                          (snap.enrolments, found_enrolments)):
        # (the order of a member's rows is the database's: compared as sorted)
        assert {k: sorted(v) for k, v in got.items() if v} == \
            {k: sorted(v) for k, v in expected.items()}
        assert _types({k: sorted(v) for k, v in got.items() if v}) == \
            _types({k: sorted(v) for k, v in expected.items()})
        assert all(type(row) is type(expected[cin][0]) for cin, found in got.items()
                   for row in found)
    assert len(snap.assignments[CINS[0]]) == 2 and CINS[3] not in snap.assignments
    assert snap.assignments[CINS[1]] == [Assignment(CINS[1], None, None, "", "", (), None,
                                                    None)]
    assert snap.assignments[CINS[2]][0].pof_codes == ("HOMELESS",)
    assert sorted(e.program for e in snap.enrolments[CINS[0]]) == ["CBAS", "MSSP"]
    # every event line of the wanted members, as the driver returns it (none for the others)
    assert {k: sorted(v, key=repr) for k, v in snap.events.items()} == \
        {k: sorted(v, key=repr) for k, v in found_events.items()}
    assert sorted(snap.events) == [CINS[0], CINS[1]]
    assert len(snap.events[CINS[0]]) == 3
    assert _types({k: sorted(v, key=repr) for k, v in snap.events.items()}) == \
        _types({k: sorted(v, key=repr) for k, v in found_events.items()})


def test_a_batch_read_is_the_tables_read_plainly_on_sqlite(tmp_path):
    _same_as_plainly(_fill(Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")))


def test_a_batch_read_is_the_tables_read_plainly_in_memory():
    registry = _fill(Registry.in_memory_file())
    _same_as_plainly(registry)
    _same_as_plainly(registry)  # (the second time through the memoised dates and codes)


def test_a_batch_read_is_the_tables_read_plainly_on_postgresql(pg_registry):
    _same_as_plainly(_fill(pg_registry))


@pytest.mark.parametrize("value", ["2026-03-02", "2026-03-02 00:00:00.000000",
                                   date(2026, 3, 2)])
def test_a_date_is_read_as_the_driver_gives_it(value):
    dates: dict = {}
    assert _rows.day_of(dates, value) == date(2026, 3, 2)
    assert _rows.day_of(dates, value) is _rows.day_of(dates, value)  # memoised
    assert _rows.day_of(dates, None) is None


def test_the_memos_stay_bounded(monkeypatch):
    monkeypatch.setattr(_rows, "MAX_MEMO", 3)
    dates: dict = {}
    for day in range(1, 10):
        assert _rows.day_of(dates, f"2026-01-0{day}") == date(2026, 1, day)
        assert len(dates) <= 3
    tuples: dict = {}
    for n in range(10):
        assert _rows.codes_of(tuples, f"A{n};B") == (f"A{n}", "B")
        assert len(tuples) <= 3


SCRIPT = r"""
import json, sys
sys.path[:0] = ["tests"]
from test_registry_snapshot_rows import CINS, EVENTS, _fill
from gateway.registry.store import Registry
from gateway.x12 import _accelerate

registry = _fill(Registry(f"sqlite:///{sys.argv[1]}"))
snap = registry.snapshot(set(CINS), set(), events=EVENTS, event_rows=True)
print(json.dumps({"compiled": _accelerate.compiled("gateway.registry._rows"),
                  "snapshot": repr(sorted((k, repr(getattr(snap, k))) for k in
                                          ("assignments", "enrolments", "events")))}))
"""


def test_the_compiled_and_pure_row_loops_read_the_same(tmp_path):
    assert "gateway.registry._rows" in _accelerate.MODULES
    out = {}
    for pure in (False, True):
        env = {k: v for k, v in os.environ.items() if k != _accelerate.PURE_ENV}
        if pure:
            env[_accelerate.PURE_ENV] = "1"
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"{pure}.sqlite")],
                              capture_output=True, text=True, cwd=ROOT, env=env, check=True)
        out[pure] = json.loads(proc.stdout)
    assert out[True]["compiled"] is False
    built = json.loads(_accelerate.MANIFEST.read_text(encoding="utf-8")) \
        if _accelerate.MANIFEST.exists() else {}
    source = ROOT / "gateway" / "registry" / "_rows.py"
    assert out[False]["compiled"] == (built.get("gateway.registry._rows")
                                      == _accelerate.source_digest(source))
    assert out[False]["snapshot"] == out[True]["snapshot"]
