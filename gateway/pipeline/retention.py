"""Retention: how long the gateway keeps member data, per kind of data, and the purge.

Kinds (days after a submission was received; its run must be finished):

* ``payloads`` — the raw file or body a partner sent (needed to replay a submission);
* ``documents`` — what the gateway made from it: acknowledgments, routed copies, row reports,
  extracts (mailbox and outbox copies; a purged document answers 410);
* ``findings`` — the validation results (messages may name claims, rows and dates).

What is kept forever is the audit trail, which holds no member data: the submission row (id,
partner, kind, SHA-256 and size of the payload, dates, statuses and their history, summary
counts), each document's row with the SHA-256 of its content, the audit log, and one audit
entry per purge run with its counts. The periods are settings (:mod:`gateway.settings`:
``retention_payload_days`` 90, ``retention_document_days`` 90, ``retention_finding_days`` 365 —
gateway policy, unconfirmed by the sources; a plan sets its own) and ``purge_schedule``
(``daily``; ``never`` turns the server's purge off). ``ecm-gateway purge`` runs it once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

log = logging.getLogger("gateway.retention")
KINDS = ("payloads", "documents", "findings")


@dataclass(frozen=True)
class Retention:
    days: dict

    @classmethod
    def from_settings(cls, settings=None) -> Retention:
        """The periods of :class:`gateway.settings.Settings` (the process's by default)."""
        if settings is None:
            from gateway.settings import current

            settings = current()
        return cls({"payloads": settings.retention_payload_days,
                    "documents": settings.retention_document_days,
                    "findings": settings.retention_finding_days})

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        return {kind: now - timedelta(days=self.days[kind]) for kind in KINDS}


def purge(store, retention: Retention, now: datetime | None = None,
          actor: str = "retention") -> dict[str, int]:
    """Remove what is past its retention period; one audit entry with the counts."""
    now = now or datetime.now(UTC)
    counts = {kind: store.expire(kind, cutoff, now=now)
              for kind, cutoff in retention.cutoffs(now).items()}
    detail = ", ".join(f"{kind} {counts[kind]} (older than {retention.days[kind]} days)"
                       for kind in KINDS)
    store.audit(actor=actor, action="purge", target="retention", detail=detail, now=now)
    log.info("retention purge: %s", detail)
    return counts


class PurgeSchedule:
    """Runs :func:`purge` every ``interval`` seconds in the server (a daemon thread); the
    first run comes one check after start-up."""

    def __init__(self, store, retention: Retention, interval: float,
                 check_every: float = 300.0) -> None:
        self.store, self.retention = store, retention
        self.interval = interval
        self.check_every = min(check_every, interval)

    def run(self, stop: threading.Event) -> None:
        waited = 0.0
        while not stop.wait(self.check_every):
            waited += self.check_every
            if waited < self.interval:
                continue
            waited = 0.0
            try:
                purge(self.store, self.retention)
            except Exception as exc:  # noqa: BLE001 - the schedule must survive one bad run
                log.error("retention purge failed: %s", exc.__class__.__name__)
