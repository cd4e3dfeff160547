"""Inbound control numbers as X12 practice has them (README "Duplicate control numbers").

A sender assigns ISA13 (per ISA06 sender id) and GS06 (per GS02) and must not reuse them:

* the same bytes sent again are a resubmission — answered with the earlier answer
  (:meth:`gateway.pipeline.store.Store.receive`, by content hash), never processed twice;
* a *different* interchange reusing a sender's ISA13 within the window (the store's duplicate
  window, 30 days) is rejected with a TA1 whose TA105 is ``025`` and the finding
  ``X12-ENV-026`` naming the earlier submission and its date — on every channel (the API
  answer, the file-drop outbox);
* a group reusing a sender's GS06 is rejected in the 999 (``X12-ENV-027``, AK905 ``19``);
  ST02 is unique within its group (``X12-ENV-013``), so a sender's ``0001`` in every file is
  fine;
* a partner whose entry says ``duplicate_control_numbers: process`` has such files processed,
  each reuse noted with the warning ``X12-ENV-028``.

A submission is never answered with another file's id. A replay (and the parts of a split
file) belongs to the chain of its first submission and never collides with it.

Each number is checked and claimed in ONE step against the unique key of the store's
``inbound_control_claims`` table (:func:`claim`; SQLite and PostgreSQL alike): two different
files reusing a number at the same instant -- two API processes, the API and the file drop,
two Celery workers -- cannot both pass; exactly one holds it and the other gets its TA1 025.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.findings import Finding
from gateway.pipeline.partners import Partner
from gateway.pipeline.registries import history_source, inbound_claims
from gateway.pipeline.store import DEFAULT_WINDOW
from gateway.rules import default_catalogue

PROCESS = "process"


def _value(number: str) -> str:
    number = (number or "").strip()
    return (number.lstrip("0") or "0") if number.isdigit() else number


def chain_root(store, submission_id: str) -> str:
    """The first submission of ``submission_id``'s replay chain (a split file's part: its
    file's)."""
    return history_source(store, submission_id).split(":")[1]


def claim(registry, partner_id: str, kind: str, sender: str, number: str, root: str,
          submission_id: str, received: datetime) -> tuple[str, str] | None:
    """Claim a sender's control number for the replay chain ``root``, atomically: None when it
    is this chain's now (newly, or already), else ``(submission id, received_at)`` of the
    submission holding it within the window. The unique key of ``inbound_control_claims``
    decides between two claims made at the same instant (two processes, or threads): exactly
    one insert wins; a holder older than the window is replaced by a conditional update,
    which also only one can win."""
    at = received.astimezone(UTC).isoformat()
    since = (received - DEFAULT_WINDOW).astimezone(UTC).isoformat()
    c = inbound_claims.c
    key = and_(c.partner == partner_id, c.kind == kind, c.sender_id == sender,
               c.number == number)
    mine = dict(root=root, submission_id=submission_id, received_at=at)
    for _ in range(20):
        try:
            with registry.engine.begin() as conn:
                conn.execute(insert(inbound_claims).values(
                    partner=partner_id, kind=kind, sender_id=sender, number=number, **mine))
            return None
        except IntegrityError:  # held: by this chain, by another, or by one out of the window
            pass
        with registry.engine.begin() as conn:
            holder = conn.execute(select(c.root, c.submission_id, c.received_at)
                                  .where(key)).first()
            if holder is None:
                continue  # released meanwhile: claim it again
            if holder.root == root:
                return None
            if holder.received_at >= since:
                return holder.submission_id, holder.received_at
            taken = conn.execute(update(inbound_claims).where(
                key, c.root == holder.root, c.received_at == holder.received_at)
                .values(**mine)).rowcount
            if taken:
                return None
    raise RuntimeError(f"control number {kind} {number}: the claim did not settle")


def check_control_numbers(store, registry, partner: Partner, submission_id: str, checked,
                          now: datetime | None = None) -> list[Finding]:
    """Findings for the control numbers of ``checked`` (an :class:`X12Result`) another
    submission of ``partner`` already used; a reused ISA13 rejects the interchange (TA1
    ``025``), a reused GS06 its group (999), unless the partner processes duplicates. Each
    number is checked and claimed in one step (:func:`claim`), so of two different files
    with the same numbers, arriving together, exactly one passes."""
    catalogue = default_catalogue()
    found = store.submission(submission_id) or {}
    received = found.get("created_at") or now or datetime.now(UTC)
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    root = chain_root(store, submission_id)
    process = partner.duplicate_control_numbers == PROCESS
    findings: list[Finding] = []

    def earlier(kind: str, sender: str, number: str):
        return claim(registry, partner.id, kind, sender, number, root, submission_id, received)

    for ic in checked.interchanges:
        sender, number = ic.field(6).strip(), _value(ic.field(13))
        if not number:
            continue
        before = earlier("isa13", sender, number)
        where = f"ISA#{ic.index}/ISA13"
        if before is not None:
            values = dict(found=ic.field(13), sender=sender, earlier=before[0],
                          date=before[1][:10])
            if process:
                findings += _found(catalogue, "X12-ENV-028", where, ic.start,
                                   element="ISA13", **values)
            else:
                findings += _found(catalogue, "X12-ENV-026", where, ic.start, **values)
                ic.ta1_codes.append(catalogue.rule("X12-ENV-026").ack["ta1"])
                continue  # a rejected interchange claims no number
        for group in ic.groups:
            gs_sender = group.gs[2].strip() if len(group.gs) > 2 else ""
            gs06 = _value(group.gs[6] if len(group.gs) > 6 else "")
            if not gs06:
                continue
            before = earlier("gs06", gs_sender, gs06)
            where = f"ISA#{ic.index}/GS#{group.index}/GS06"
            if before is not None:
                values = dict(found=group.gs[6], sender=gs_sender, earlier=before[0],
                              date=before[1][:10])
                if process:
                    findings += _found(catalogue, "X12-ENV-028", where, group.start,
                                       element="GS06", **values)
                else:
                    findings += _found(catalogue, "X12-ENV-027", where, group.start,
                                       **values)
                    group.error_codes.append(catalogue.rule("X12-ENV-027").ack["ak9"])
    return findings


def _found(catalogue, rule: str, where: str, segment, **values) -> list[Finding]:
    finding = catalogue.finding(rule, where, segment, **values)
    return [finding] if finding else []
