"""The per-row loops of :meth:`gateway.registry.store.Registry.snapshot`: a batch's member rows
turned into Assignment / Enrolment tuples and its utilization-event rows grouped by member.
Compiled with Cython (``gateway/x12/_accelerate.py`` lists this module; importing
``gateway.registry`` installs the finder first) and run as plain Python when it is not: the
same results either way.

Dates are memoised in plain dictionaries (``dates``: the value as the driver returns it - ISO
text from SQLite, a date from PostgreSQL - to the date) looked up with ``get``: a subscript of a
``dict`` subclass with ``__missing__`` goes through the type's Python-level ``__getitem__`` slot,
and the miss through a Python call (≈ 2,300 instructions each, 11k a 10k-claim run).
The 34 snapshots of the 10k-claim bench run: 410 -> 364 M instructions (callgrind), the same
snapshots.
"""

from __future__ import annotations

from datetime import date

_new = tuple.__new__  # a registry row's named tuple from a tuple, without its __new__
MAX_MEMO = 1 << 16  # dates / code combinations kept (a registry repeats few but birth dates)


def day_of(dates: dict, value):
    """``value`` (ISO text or a date; None reads as None) as a date, memoised in ``dates``."""
    if value is None:
        return None
    found = dates.get(value)
    if found is None:
        found = value if value.__class__ is date else date.fromisoformat(value[:10])
        if len(dates) >= MAX_MEMO:
            dates.clear()
        dates[value] = found
    return found


def codes_of(tuples: dict, text):
    """``"a;b"`` → ``("a", "b")`` (None reads as ``()``), memoised in ``tuples``."""
    found = tuples.get(text)
    if found is None:
        found = tuple([c for c in (text or "").split(";") if c])
        if len(tuples) >= MAX_MEMO:
            tuples.clear()
        tuples[text] = found
    return found


def assignments_into(found, rows: list, dates: dict, tuples: dict, kind) -> None:
    """``rows`` of (cin, benefit start, benefit end, NPI, TIN, POF codes, authorization date,
    birth date) as ``kind`` (Assignment) tuples, appended to ``found[cin]``."""
    for cin, start, end, npi, tin, pofs, auth, birth in rows:
        # (the memo look-ups inline: most values are found)
        if start is not None:
            day = dates.get(start)
            start = day if day is not None else day_of(dates, start)
        if end is not None:
            day = dates.get(end)
            end = day if day is not None else day_of(dates, end)
        if auth is not None:
            day = dates.get(auth)
            auth = day if day is not None else day_of(dates, auth)
        if birth is not None:
            day = dates.get(birth)
            birth = day if day is not None else day_of(dates, birth)
        codes = tuples.get(pofs)
        if codes is None:
            codes = codes_of(tuples, pofs)
        found[cin].append(_new(kind, (cin, start, end, npi or "", tin or "", codes, auth,
                                      birth)))


def enrolments_into(found, rows: list, dates: dict, kind) -> None:
    """``rows`` of (cin, program, start, end, county) as ``kind`` (Enrolment) tuples, appended
    to ``found[cin]``."""
    for cin, program, start, end, county in rows:
        found[cin].append(_new(kind, (program, day_of(dates, start), day_of(dates, end),
                                      county or "")))


def accepted(chunk: list, assignments, accept) -> list:
    """The members of ``chunk`` that ``accept(cin, their assignments)`` accepts, in order."""
    get = assignments.get
    return [cin for cin in chunk if accept(cin, get(cin, ()))]


def events_into(found: dict, rows: list) -> None:
    """Utilization-event rows (the member first) appended to ``found[member]`` as they are (a
    member's rows usually come together; their order within a member is kept)."""
    current = None
    known = None
    for row in rows:
        cin = row[0]
        if cin != current:
            current = cin
            known = found.get(cin)
            if known is None:
                known = found[cin] = []
        known.append(row)
