"""Encounter-history extracts on demand (:func:`extract_history`, for the API and the command
line), for every provider at once (:func:`extract_all`) and on a schedule
(:class:`HistorySchedule`, interval from the partner file's ``schedules: {history_extract: ...}``).
Each is a submission of kind ``history-extract`` processed like any other; the step that makes
the extract is :mod:`gateway.pipeline.steps.extract`."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta

from gateway.pipeline.partners import Partners
from gateway.pipeline.process import process
from gateway.pipeline.status import Status
from gateway.pipeline.steps.extract import (
    INTERVALS,
    KIND,
    SUFFIXES,
    ExtractError,
    _formats,
    _utc,
    history_formats,
)

log = logging.getLogger("gateway.extract")


# -- on demand -----------------------------------------------------------------------------------
def extract_history(store, partners: Partners, provider_id: str, now: datetime | None = None,
                    channel: str = "api", wait_seconds: float = 30.0,
                    format: str | list[str] = "csv") -> str | None:
    """Make (or, for the same ``now`` and formats, find again) the provider's extract;
    returns the id of the document in its mailbox (of the first format asked for: ``csv``,
    ``fhir``, or a list of both), or None when no ``history`` route leads to the provider.
    Raises :class:`ExtractError` for an unknown or non-provider partner or format."""
    provider = partners.partners.get(provider_id)
    if provider is None or provider.role != "provider":
        raise ExtractError(f"{provider_id!r} is not a provider partner")
    formats = _formats(format)
    now = _utc(now)
    asked = {"provider": provider.id, "as_of": now.isoformat()}
    if formats != ["csv"]:  # a CSV request reads as it always did (same content hash)
        asked["formats"] = formats
    request = json.dumps(asked, sort_keys=True).encode()
    kept = store.receive(partner=provider.id, channel=channel, kind=KIND,
                         filename=f"history-{provider.id}.json", payload=request, now=now)
    submission_id = kept.submission_id
    if not kept.duplicate:
        store.audit(actor=provider.id if channel == "api" else "gateway", action="extract",
                    target=submission_id, detail=f"history extract via {channel}")
        process(store, partners, submission_id)
    suffix = SUFFIXES[formats[0]]
    deadline = time.monotonic() + wait_seconds
    while True:  # another worker may be running it
        found = store.submission(submission_id) or {}
        documents = [d for d in store.documents(submission_id)
                     if d["role"] == KIND and d["name"].endswith(suffix)
                     and (suffix != ".csv" or not d["name"].endswith(".fhir.json"))]
        if documents and found.get("run_state", "done") == "done":
            return documents[-1]["id"]
        if found.get("status") in (Status.REJECTED, Status.DEAD_LETTER) or time.monotonic() > deadline:
            return None
        if found.get("run_state", "done") == "done" and found.get("status") == Status.VALIDATED:
            return None  # finished without a route to the provider
        time.sleep(0.2)


def extract_all(store, partners: Partners, now: datetime | None = None,
                channel: str = "schedule", formats: list[str] | None = None
                ) -> dict[str, str | None]:
    """Every provider's extract (provider id -> document id of the first format), in the
    ``formats`` given, else those the ``history`` route asks for."""
    now = _utc(now)
    wanted = list(formats or history_formats(partners))
    return {p.id: extract_history(store, partners, p.id, now, channel=channel, format=wanted)
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
        # the first check comes one period after start-up, so a restart (or a test's short-lived
        # server) does not race the submissions that arrive first
        while not stop.wait(self.check_every):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the schedule must survive one bad run
                log.error("history extract run failed: %s", exc.__class__.__name__)


