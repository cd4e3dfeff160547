"""Response models of the HTTP API, for the OpenAPI document (the routes build plain dicts;
these say what they hold)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Links(BaseModel):
    self: str = Field(description="the submission's status link")


class SubmitAnswer(BaseModel):
    """200 when the run finished within the wait (with the 999 for X12), 202 while it runs."""

    submission_id: str
    replay_of: str | None = Field(None, description="(replays) the submission replayed")
    duplicate: bool = Field(description="a resubmission answered with the original")
    status: str = Field(description="received, validated, converted, routed, delivered, "
                                    "rejected, failed or dead_letter")
    links: Links
    valid: bool | None = None
    findings: int | None = Field(None, description="number of findings (GET the status link "
                                                   "for them)")
    ack_999: str | None = Field(None, description="the 999 (X12 only, up to 1 MiB)")


class FindingOut(BaseModel):
    rule: str
    severity: str = Field(description="error, warning or info")
    location: str
    message: str
    source: str
    segment: int | None = None


class RuleCount(BaseModel):
    rule: str
    severity: str
    count: int


class DocumentOut(BaseModel):
    id: str
    role: str = Field(description="ack-999, ack-277ca, ta1, routed-837p, report, …")
    name: str
    media_type: str
    size: int
    href: str


class _Submission(BaseModel):
    """What the list and the detail both say of a submission."""
    id: str
    partner: str
    channel: str
    kind: str
    filename: str | None
    status: str
    error: str | None
    size: int
    parent_id: str | None
    created_at: datetime
    updated_at: datetime
    run_state: str


class SubmissionSummary(_Submission):
    href: str


class SubmissionList(BaseModel):
    submissions: list[SubmissionSummary]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page "
                                                      "(absent on the last page)")


class SubmissionDetail(_Submission):
    sha256: str
    attempts: int
    summary: dict[str, Any]
    findings: list[FindingOut] = Field(description="one page, in the order found")
    findings_next_cursor: str | None = Field(None, description="?cursor= for the next page of "
                                                               "findings")
    finding_counts: list[RuleCount] = Field(description="every finding counted by rule")
    documents: list[DocumentOut]


class MailboxDocument(BaseModel):
    id: str
    submission_id: str
    role: str
    name: str
    media_type: str
    recipient: str | None
    size: int
    created_at: datetime
    delivered_at: datetime | None
    href: str


class Mailbox(BaseModel):
    documents: list[MailboxDocument]
    next_cursor: str | None = Field(None, description="?cursor= for the next page (absent on "
                                                      "the last page)")


class Problem(BaseModel):
    detail: str


ERRORS = {400: {"model": Problem, "description": "bad request (a filter or cursor)"},
          401: {"model": Problem, "description": "no valid bearer token"},
          404: {"model": Problem, "description": "no such thing, or not yours"}}
