"""What a step returns: :class:`StepResult` — the submission's final status (one of
:class:`~gateway.pipeline.status.Status`), findings, documents (acknowledgments, reports, routed
copies), summary and the 999 to answer with. A step decides; it does not write the submission's
bookkeeping. ONE harness (:func:`gateway.pipeline.process.run_claimed`) writes the result —
the status path (:func:`gateway.pipeline.status.path`), findings, documents, summary — in ONE
transaction together with the end of the run (:meth:`gateway.pipeline.store.Store.finish`).

:class:`Outcome` is what the edges see of a run (the API's answer, the CLI's exit code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.findings import Finding
from gateway.pipeline.status import Status
from gateway.pipeline.store import document_row


@dataclass
class Outcome:
    submission_id: str
    status: str
    valid: bool
    ack999: str | None
    findings: int
    ack_ta1: str | None = None  # a rejected interchange's TA1 (e.g. TA105 025)
    error: str | None = None  # why the submission was rejected (e.g. the earlier submission)


@dataclass
class StepResult:
    """A step's decisions about one submission (see the module docstring). ``documents`` are
    rows ready for the store, each with its id already made (a routing index may name it)."""

    submission_id: str
    status: Status = Status.VALIDATED
    error: str | None = None
    valid: bool = True
    read: bool = True  # the content was read (a rejection passes through ``validated``)
    converted: bool = False  # a document was made for another partner
    findings: list[Finding] = field(default_factory=list)
    documents: list[dict] = field(default_factory=list)
    summary: dict | None = None
    ack999: str | None = None
    extra_findings: int = 0  # findings counted in the outcome but stored elsewhere

    # -- building ------------------------------------------------------------------------------
    def add_findings(self, findings) -> None:
        self.findings.extend(f for f in findings if f)

    def add_document(self, *, role: str, name: str, content: bytes, media_type: str,
                     recipient: str | None = None, parent_document: str | None = None,
                     now: datetime | None = None) -> str:
        """A document of the submission (an ack, a report); returns its id."""
        row = document_row(self.submission_id, role=role, name=name, content=content,
                           media_type=media_type, recipient=recipient,
                           parent_document=parent_document, now=now)
        self.documents.append(row)
        return row["id"]

    def route(self, *, role: str, name: str, content: bytes, media_type: str, recipient: str,
              converted: bool = False, parent_document: str | None = None) -> str:
        """A document for another partner: the submission becomes ``routed`` (through
        ``converted`` when the gateway made it from the submission's content)."""
        self.status = Status.ROUTED
        self.converted = self.converted or converted
        return self.add_document(role=role, name=name, content=content, media_type=media_type,
                                 recipient=recipient, parent_document=parent_document)

    def reject(self, error: str, findings=(), *, read: bool = False) -> StepResult:
        self.status, self.error, self.valid, self.read = Status.REJECTED, error, False, read
        self.add_findings(findings)
        return self

    @property
    def routed(self) -> bool:
        return self.status is Status.ROUTED

    def outcome(self) -> Outcome:
        ta1 = next((d["content"].decode("latin-1") for d in self.documents
                     if d["role"] == "ack-ta1"), None)
        return Outcome(self.submission_id, str(self.status), self.valid, self.ack999,
                       len(self.findings) + self.extra_findings, ack_ta1=ta1,
                       error=self.error)
