"""Running a submission: the one way in (:func:`submit`), processing with retries
(:func:`process`) and :func:`replay`. The steps themselves, one per kind, are in
:mod:`gateway.pipeline.steps`, and run from the raw payload the store kept, so a run can be
replayed at any time. A failing step is retried with backoff, then the submission goes to
``dead_letter`` with the error; ``replay`` runs a stored payload again as a new submission
linked to the original.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.steps import STEPS, Outcome
from gateway.pipeline.store import Store

RETRIES = 3
BACKOFF_SECONDS = 0.5
log = logging.getLogger("gateway.pipeline")


def _x12_key(payload: bytes) -> str | None:
    """Sender + ISA13 (+ first GS06/ST02) of an interchange, for resubmission detection."""
    head = payload[:4096].decode("latin-1", errors="replace")
    start = head.find("ISA")
    if start < 0 or len(head) < start + 106:
        return None
    isa = head[start:start + 106]
    sep = isa[3]
    fields = isa.split(sep)
    if len(fields) < 14:
        return None
    rest = head[start + 106:]
    gs = rest.split("GS" + sep, 1)
    gs06 = gs[1].split(sep)[5] if len(gs) > 1 and len(gs[1].split(sep)) > 5 else ""
    return f"{fields[6].strip()}:{fields[13]}:{gs06}"


def process(store: Store, partners: Partners, submission_id: str, sleep=None) -> Outcome:
    """Run a stored submission through its pipeline, retrying a failing run with backoff; a
    run that keeps failing leaves the submission in ``dead_letter`` with the error (the raw
    payload stays, for replay)."""
    import time

    sleep = sleep or time.sleep
    found = store.submission(submission_id)
    partner = partners.partners.get(found["partner"])
    if partner is None:
        store.set_status(submission_id, "dead_letter", error="unknown partner")
        return Outcome(submission_id, "dead_letter", False, None, 0)
    step = STEPS[found["kind"]]
    for attempt in range(1, RETRIES + 1):
        try:
            return step(store, partners, partner, submission_id)
        except Exception as exc:  # noqa: BLE001 - recorded, retried, then dead-lettered
            error = f"{exc.__class__.__name__} on attempt {attempt}"
            log.warning("processing failed: %s", error,
                        extra={"submission_id": submission_id, "status": "failed"})
            if attempt == RETRIES:
                store.set_status(submission_id, "dead_letter", error=error)
                return Outcome(submission_id, "dead_letter", False, None, 0)
            store.set_status(submission_id, "failed", error=error)
            sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def replay(store: Store, partners: Partners, submission_id: str, actor: str) -> Outcome:
    """Process the stored raw payload of ``submission_id`` again, as a new submission linked to
    it (``parent_id``)."""
    found = store.submission(submission_id)
    if found is None:
        raise KeyError(submission_id)
    kept = store.receive(partner=found["partner"], channel="replay", kind=found["kind"],
                         filename=found.get("filename"),
                         payload=store.raw_payload(submission_id), parent_id=submission_id)
    store.audit(actor=actor, action="replay", target=submission_id,
                detail=f"new submission {kept.submission_id}")
    return process(store, partners, kept.submission_id)


@dataclass
class Submitted:
    submission_id: str
    duplicate: bool
    status: str
    outcome: Outcome | None = None


def submit(store: Store, partners: Partners, partner: Partner, *, channel: str, kind: str,
           filename: str | None, payload: bytes, idempotency_key: str | None = None
           ) -> Submitted:
    """The one way in, for every channel: store the raw payload (before any answer), detect a
    resubmission, audit, then process. A resubmission is answered with the original."""
    kept = store.receive(partner=partner.id, channel=channel, kind=kind, filename=filename,
                         payload=payload, idempotency_key=idempotency_key,
                         x12_key=_x12_key(payload) if kind == "x12" else None)
    store.audit(actor=partner.id, action="submit", target=kept.submission_id,
                detail=f"{kind} via {channel}")
    details = {"submission_id": kept.submission_id, "partner": partner.id, "kind": kind,
               "channel": channel, "size": len(payload)}
    if kept.duplicate_of:
        original = store.submission(kept.duplicate_of)
        log.info("resubmission answered with the original", extra={
            **details, "submission_id": kept.duplicate_of, "status": original["status"]})
        return Submitted(kept.duplicate_of, True, original["status"])
    log.info("submission stored", extra=details)
    outcome = process(store, partners, kept.submission_id)
    log.info("submission processed", extra={**details, "status": outcome.status,
                                            "findings": outcome.findings})
    return Submitted(outcome.submission_id, False, outcome.status, outcome)
