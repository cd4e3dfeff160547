"""Date periods: every "is this day inside [start, end]" question in the project (benefit
periods, program enrolments, provider contracts, code-set effective dates) is answered here."""

from __future__ import annotations

from datetime import date


def within(day: date, start: date | None, end: date | None) -> bool:
    """True when ``start <= day <= end``; an open start or end (None) does not limit."""
    return (start is None or start <= day) and (end is None or day <= end)
