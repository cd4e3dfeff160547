"""Encounter-history extracts for providers: on demand (:func:`extract_history`, for the API and
the command line), for every provider at once (:func:`extract_all`) and on a schedule
(:class:`HistorySchedule`, interval from the partner file's ``schedules: {history_extract: ...}``).

A provider receives only the history of ITS assigned members (assignments whose ECM provider
NPI or TIN is the provider's), and of each member only the lines inside the assignment's
benefit period; columns are data (``mappings/history-extract/layout.yaml``).

An extract is a submission of kind ``history-extract`` in the provider's name (channel
``schedule`` or ``api``), processed like any other (so it is queued, retried, finished and
audited the same way); its CSV lands in the provider's mailbox (route ``history`` from
``gateway`` to ``provider``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import yaml
from sqlalchemy import and_, or_, select

from gateway.paths import MAPPINGS
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.registries import plan_of_source, server_registry
from gateway.registry.store import Registry, assignments, history

KIND = "history-extract"
CSV_MEDIA = "text/csv"
LAYOUT = MAPPINGS / "history-extract" / "layout.yaml"
INTERVALS = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400}
log = logging.getLogger("gateway.extract")


class ExtractError(ValueError):
    """An extract cannot be made (unknown or non-provider partner, bad interval)."""


@lru_cache(maxsize=1)
def extract_columns() -> list[dict]:
    return yaml.safe_load(LAYOUT.read_text(encoding="utf-8"))["columns"]


def history_rows(registry: Registry, provider: Partner) -> list[dict]:
    """The history lines of the provider's assigned members, within each assignment's
    benefit period (deduplicated, sorted)."""
    a, h = assignments.c, history.c
    mine = []
    if provider.npis:
        mine.append(a.provider_npi.in_(list(provider.npis)))
    if provider.tins:
        mine.append(a.provider_tin.in_(list(provider.tins)))
    if not mine:
        return []
    within = and_(h.cin == a.cin,
                  or_(a.benefit_start.is_(None), h.service_date >= a.benefit_start),
                  or_(a.benefit_end.is_(None), h.service_date <= a.benefit_end))
    query = (select(a.source, h.cin, h.service_date, h.procedure_code, h.modifiers, h.units,
                    h.place_of_service, h.billing_npi, h.rendering_npi, h.claim_id,
                    h.line_number)
             .select_from(assignments.join(history, within)).where(or_(*mine)))
    rows: dict[tuple, dict] = {}
    with registry.engine.connect() as conn:
        for line in conn.execute(query).mappings():
            key = (line["cin"], line["service_date"], line["claim_id"], line["line_number"],
                   line["billing_npi"], line["procedure_code"])
            rows.setdefault(key, {
                "member_cin": line["cin"], "plan": plan_of_source(line["source"]) or "",
                "service_date": line["service_date"].isoformat(),
                "procedure_code": line["procedure_code"] or "",
                "modifiers": line["modifiers"] or "", "units": line["units"] or "",
                "place_of_service": line["place_of_service"] or "",
                "billing_npi": line["billing_npi"] or "",
                "rendering_npi": line["rendering_npi"] or "",
                "claim_id": line["claim_id"] or "", "line_number": line["line_number"] or ""})
    return [rows[k] for k in sorted(rows, key=lambda k: tuple(str(x) for x in k))]


def history_csv(rows: list[dict]) -> bytes:
    columns = extract_columns()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c["header"] for c in columns])
    for row in rows:
        writer.writerow([row.get(c["field"], "") for c in columns])
    return out.getvalue().encode("utf-8")


# -- the processing step -------------------------------------------------------------------------
def process_history_extract(store, partners: Partners, partner: Partner, submission_id: str,
                            now: datetime | None = None):
    """STEPS[``history-extract``]: the extract for the submission's partner (a provider)."""
    from gateway.pipeline.steps import Outcome

    store.attempt(submission_id)
    request = json.loads(store.raw_payload(submission_id) or b"{}")
    as_of = request.get("as_of") or (now or datetime.now(UTC)).isoformat()
    if partner.role != "provider":
        store.set_status(submission_id, "rejected", error="history extracts are for providers")
        return Outcome(submission_id, "rejected", False, None, 0)
    rows = history_rows(server_registry(store), partner)
    target = partners.route("history", "gateway", npi=partner.npis[0] if partner.npis else "",
                            tin=partner.tins[0] if partner.tins else "")
    store.set_status(submission_id, "validated")
    status = "validated"
    if target is not None and target.id == partner.id:
        stamp = datetime.fromisoformat(as_of).strftime("%Y%m%dT%H%M%SZ")
        store.add_document(submission_id, role=KIND, name=f"history-{partner.id}-{stamp}.csv",
                           content=history_csv(rows), media_type=CSV_MEDIA,
                           recipient=partner.id)
        status = "routed"
        store.set_status(submission_id, status)
    store.set_summary(submission_id, {
        "kind": KIND, "as_of": as_of, "lines": len(rows),
        "members": len({r["member_cin"] for r in rows}), "valid": True})
    return Outcome(submission_id, status, True, None, 0)


# -- on demand -----------------------------------------------------------------------------------
def extract_history(store, partners: Partners, provider_id: str, now: datetime | None = None,
                    channel: str = "api", wait_seconds: float = 30.0) -> str | None:
    """Make (or, for the same ``now``, find again) the provider's extract; returns the id of
    the CSV document in its mailbox, or None when no ``history`` route leads to the provider.
    Raises :class:`ExtractError` for an unknown or non-provider partner."""
    from gateway.pipeline.process import process

    provider = partners.partners.get(provider_id)
    if provider is None or provider.role != "provider":
        raise ExtractError(f"{provider_id!r} is not a provider partner")
    now = _utc(now)
    request = json.dumps({"provider": provider.id, "as_of": now.isoformat()},
                         sort_keys=True).encode()
    kept = store.receive(partner=provider.id, channel=channel, kind=KIND,
                         filename=f"history-{provider.id}.json", payload=request, now=now)
    submission_id = kept.submission_id
    if not kept.duplicate:
        store.audit(actor=provider.id if channel == "api" else "gateway", action="extract",
                    target=submission_id, detail=f"history extract via {channel}")
        process(store, partners, submission_id)
    deadline = time.monotonic() + wait_seconds
    while True:  # another worker may be running it
        found = store.submission(submission_id) or {}
        documents = [d for d in store.documents(submission_id) if d["role"] == KIND]
        if documents and found.get("run_state", "done") == "done":
            return documents[-1]["id"]
        if found.get("status") in ("rejected", "dead_letter") or time.monotonic() > deadline:
            return None
        if found.get("run_state", "done") == "done" and found.get("status") == "validated":
            return None  # finished without a route to the provider
        time.sleep(0.2)


def extract_all(store, partners: Partners, now: datetime | None = None,
                channel: str = "schedule") -> dict[str, str | None]:
    """Every provider's extract (provider id -> document id)."""
    now = _utc(now)
    return {p.id: extract_history(store, partners, p.id, now, channel=channel)
            for p in partners.partners.values() if p.role == "provider"}


# -- on a schedule -------------------------------------------------------------------------------
def interval_seconds(value: str | float) -> float:
    """``hourly``, ``daily``, ``weekly`` or a number of seconds."""
    text = str(value).strip().lower()
    if text in INTERVALS:
        return float(INTERVALS[text])
    try:
        seconds = float(text)
    except ValueError:
        raise ExtractError(f"history_extract schedule {value!r}: use hourly, daily, weekly or "
                           "a number of seconds") from None
    if seconds <= 0:
        raise ExtractError("the history_extract interval must be positive")
    return seconds


class HistorySchedule:
    """Runs :func:`extract_all` every ``interval`` seconds. The last scheduled run is read back
    from the store (the newest ``schedule`` extract), so a restart does not send again early."""

    def __init__(self, store, partners: Partners, interval: float,
                 check_every: float = 60.0) -> None:
        self.store = store
        self.partners = partners
        self.interval = timedelta(seconds=interval)
        self.check_every = check_every

    @classmethod
    def from_partners(cls, store, partners: Partners) -> HistorySchedule | None:
        """The schedule the partner file asks for; None without ``schedules.history_extract``."""
        value = partners.schedules.get("history_extract")
        if not value:
            return None
        return cls(store, partners, interval_seconds(value))

    def last_run(self) -> datetime | None:
        latest = None
        for partner in self.partners.partners.values():
            if partner.role != "provider":
                continue
            for found in self.store.submissions_for(partner.id, limit=50):
                if found["kind"] == KIND and found["channel"] == "schedule":
                    at = found["created_at"]
                    latest = at if latest is None or at > latest else latest
                    break
        return latest

    def tick(self, now: datetime | None = None) -> dict[str, str | None]:
        """Run the extracts when due; returns what was sent (empty when not due)."""
        now = _utc(now)
        last = self.last_run()
        if last is not None and now - last < self.interval:
            return {}
        sent = extract_all(self.store, self.partners, now)
        log.info("history extracts sent", extra={"kind": KIND, "size": len(sent)})
        return sent

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set (for a daemon thread in the server's lifespan); a failing
        run is logged (no member data) and tried again at the next check."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the schedule must survive one bad run
                log.error("history extract run failed: %s", exc.__class__.__name__)
            stop.wait(self.check_every)


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


__all__ = ["ExtractError", "HistorySchedule", "extract_all", "extract_history",
           "history_rows", "interval_seconds", "process_history_extract"]
