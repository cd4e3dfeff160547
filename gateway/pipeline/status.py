"""The ONE status enum of a submission and its state machine (README "Submission statuses").

::

    received ──► validated ──► converted ──► routed ──► delivered
        │            │  │                      ▲
        │            │  └──────────────────────┘   (forwarded rows, state summaries: no conversion)
        │            └──► rejected
        ├──► rejected                               (not a readable file of its kind)
        ├──► failed ──► (retried) … ──► dead_letter  (the step raised; retried with backoff)
        └──► dead_letter                            (unknown partner, or a part dead-lettered)

* ``received`` — stored raw (before any answer), waiting for or in its run.
* ``validated`` — read and checked; nothing (yet) went onward.
* ``converted`` — a document was made for another partner (an 837P, a referral record).
* ``routed`` — documents for other partners are in their mailboxes / outboxes.
* ``delivered`` — every routed document was fetched or written to its outbox
  (:meth:`gateway.pipeline.store.Store.mark_delivered`).
* ``rejected`` — nothing of the submission can be used (its findings say why).
* ``failed`` — a run raised; it is retried (a transient state between attempts).
* ``dead_letter`` — the retries are spent (or the partner is unknown); ``replay`` runs it again.

A run writes its whole path at its end (:func:`path`), in one transaction with its outputs.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    RECEIVED = "received"
    VALIDATED = "validated"
    CONVERTED = "converted"
    ROUTED = "routed"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

# the transitions the state machine allows (a re-run starts again after ``received``)
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.RECEIVED: frozenset({Status.VALIDATED, Status.REJECTED, Status.FAILED,
                                Status.DEAD_LETTER}),
    Status.VALIDATED: frozenset({Status.CONVERTED, Status.ROUTED, Status.REJECTED}),
    Status.CONVERTED: frozenset({Status.ROUTED}),
    Status.ROUTED: frozenset({Status.DELIVERED}),
    Status.DELIVERED: frozenset(),
    Status.REJECTED: frozenset(),
    Status.FAILED: frozenset({Status.VALIDATED, Status.REJECTED, Status.FAILED,
                              Status.DEAD_LETTER}),
    Status.DEAD_LETTER: frozenset(),
}
FINAL = frozenset({Status.DELIVERED, Status.REJECTED, Status.DEAD_LETTER})


def path(final: Status, *, read: bool = True, converted: bool = False) -> list[Status]:
    """The statuses a run goes through to ``final`` (after ``received``/``failed``): ``read``
    — the content was read (``validated`` comes first); ``converted`` — a document was made
    for another partner on the way to ``routed``."""
    final = Status(final)
    if final is Status.DEAD_LETTER:
        return [Status.DEAD_LETTER]
    if final is Status.REJECTED:
        return [Status.VALIDATED, Status.REJECTED] if read else [Status.REJECTED]
    if final is Status.VALIDATED:
        return [Status.VALIDATED]
    if final is Status.ROUTED:
        return [Status.VALIDATED, *([Status.CONVERTED] if converted else []), Status.ROUTED]
    raise ValueError(f"a run does not end in {final}")


def allowed(before: Status | str, after: Status | str) -> bool:
    return Status(after) in TRANSITIONS[Status(before)]
