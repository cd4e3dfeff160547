"""Opaque cursors for keyset paging (GET /submissions, GET /mailbox, the findings of GET
/submissions/{id}, and the console's lists): the position of the last row of a page, encoded,
so the next page starts right after it however deep it is. A cursor that does not decode is
the client's mistake (400), never a traceback."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta

from fastapi import HTTPException


def encode(*parts: object) -> str:
    text = "|".join(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts)
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def _decode(cursor: str) -> list[str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8").split("|")
    except (ValueError, UnicodeError):
        raise HTTPException(400, "the cursor is not one this server gave out") from None


def decode_position(cursor: str | None) -> tuple[datetime, str] | None:
    """``(created_at, id)`` of a listing cursor."""
    if not cursor:
        return None
    parts = _decode(cursor)
    try:
        at, row_id = parts
        when = datetime.fromisoformat(at)
    except ValueError:
        raise HTTPException(400, "the cursor is not one this server gave out") from None
    if not row_id.isalnum() or len(row_id) > 64:
        raise HTTPException(400, "the cursor is not one this server gave out")
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), row_id


def decode_number(cursor: str | None) -> int | None:
    """The row number of a findings cursor."""
    if not cursor:
        return None
    parts = _decode(cursor)
    if len(parts) != 1 or not parts[0].isdigit():
        raise HTTPException(400, "the cursor is not one this server gave out")
    return int(parts[0])


def parse_when(text: str | None, *, end: bool = False) -> datetime | None:
    """A date (``YYYY-MM-DD``: its start, or with ``end`` the start of the next day, so an
    ``until`` date includes that day) or an ISO 8601 date-time (UTC when no zone is given)."""
    if not text:
        return None
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(0), tzinfo=UTC)
            if end:
                moment += timedelta(days=1)
            return moment
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"not a date (YYYY-MM-DD) or date-time: {text[:40]!r}") \
            from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
