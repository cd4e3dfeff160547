"""What the API and the console both show, decided once: which submissions a caller may see,
the listing with its filters and cursor, a page of findings, a page of the mailbox. The routes
(gateway/api/app.py) and the console pages (gateway/api/console.py) only translate these to
JSON or HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from fastapi import HTTPException

from gateway.api import paging
from gateway.pipeline.partners import Partner
from gateway.pipeline.store import Store

DEFAULT_PAGE = 50
MAX_PAGE = 500
DEFAULT_FINDINGS_PAGE = 1000
MAX_FINDINGS_PAGE = 5000
DEFAULT_MAILBOX_PAGE = 100


@dataclass
class Filters:
    """The listing's filters, as the API's query parameters and the console's form name them."""

    partner: str | None = None
    kind: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    q: str | None = None

    def query(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


@dataclass
class Page:
    items: list[dict]
    next_cursor: str | None = None
    extra: dict = field(default_factory=dict)


def visible_submission(store: Store, viewer: Partner, submission_id: str) -> dict:
    """The submission, when ``viewer`` may see it; otherwise 404, as if it did not exist."""
    found = store.submission(submission_id) if submission_id.isalnum() else None
    if found is None or not viewer.sees(found["partner"]):
        raise HTTPException(404, "no such submission")
    return found


def list_submissions(store: Store, viewer: Partner, filters: Filters, cursor: str | None,
                     limit: int = DEFAULT_PAGE) -> Page:
    limit = max(1, min(int(limit), MAX_PAGE))
    partner = viewer.sees_partner
    if partner is None:  # an operator may narrow to one partner
        partner = filters.partner or None
    elif filters.partner and filters.partner != partner:
        return Page([])  # another partner's: nothing (not an error that confirms it exists)
    rows = store.list_submissions(
        partner=partner, kind=filters.kind or None, status=filters.status or None,
        since=paging.parse_when(filters.since), until=paging.parse_when(filters.until, end=True),
        search=(filters.q or "").strip()[:200] or None,
        after=paging.decode_position(cursor), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = paging.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return Page(rows, next_cursor)


def finding_view(viewer: Partner) -> str:
    """How findings read to ``viewer`` (minimum necessary, see Store.findings): a plan, the
    state and the plan's operations staff get the full reasons; a submitter what it was
    told."""
    return "plan" if viewer.role in ("plan", "state", "operator") else "submitter"


def findings(store: Store, submission_id: str, cursor: str | None,
             limit: int = DEFAULT_FINDINGS_PAGE, rule: str | None = None,
             view: str = "submitter") -> Page:
    limit = max(1, min(int(limit), MAX_FINDINGS_PAGE))
    rows = store.findings_page(submission_id, rule=rule or None,
                               after=paging.decode_number(cursor), limit=limit + 1, view=view)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = paging.encode(rows[-1]["id"]) if more else None
    for row in rows:
        row.pop("id")
    return Page(rows, next_cursor)


def mailbox(store: Store, viewer: Partner, cursor: str | None,
            limit: int = DEFAULT_MAILBOX_PAGE) -> Page:
    limit = max(1, min(int(limit), MAX_PAGE))
    rows = store.mailbox(viewer.id, after=paging.decode_position(cursor), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = paging.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return Page(rows, next_cursor)


def plain(row: dict) -> dict:
    """JSON-ready: datetimes as ISO 8601."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
