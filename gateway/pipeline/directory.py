"""The monthly 274 provider files to the state: on request (:func:`monthly_274`, for the API)
and on a schedule (:class:`DirectorySchedule`, ``schedules: {directory_274: monthly}`` in the
partner file). Each run is a submission of kind ``directory-274`` in the plan's name (channel
``api`` or ``schedule``), processed like any other (queued, retried, audited); the step
(:mod:`gateway.pipeline.steps.directory`) makes one 274 per county from the plan's newest
uploaded directory and routes each to the state."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import UTC, datetime

from gateway.pipeline.partners import Partners
from gateway.pipeline.process import process
from gateway.pipeline.steps.directory import MONTHLY_KIND, latest_directory

log = logging.getLogger("gateway.directory")


class DirectoryError(ValueError):
    """A request the gateway cannot honour (unknown plan, bad month, unknown schedule)."""


def monthly_274(store, partners: Partners, plan_id: str, month: str | None = None,
                now: datetime | None = None, channel: str = "api",
                wait_seconds: float = 60.0) -> list[dict]:
    """Make (or, for the same plan, month and channel, find again) the plan's monthly 274
    files; returns their documents (id, name, recipient)."""
    plan = partners.partners.get(plan_id)
    if plan is None or plan.role != "plan":
        raise DirectoryError(f"{plan_id!r} is not a plan partner")
    now = now or datetime.now(UTC)
    month = month or now.strftime("%Y-%m")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise DirectoryError(f"month {month!r}: use YYYY-MM")
    request = json.dumps({"plan": plan.id, "month": month, "channel": channel},
                         sort_keys=True).encode()
    kept = store.receive(partner=plan.id, channel=channel, kind=MONTHLY_KIND,
                         filename=f"directory-274-{plan.id}-{month}.json", payload=request,
                         now=now)
    if not kept.duplicate:
        store.audit(actor=plan.id if channel == "api" else "gateway", action="directory-274",
                    target=kept.submission_id, detail=f"monthly 274 {month} via {channel}")
        process(store, partners, kept.submission_id)
    deadline = time.monotonic() + wait_seconds
    while True:  # another worker may be running it
        found = store.submission(kept.submission_id) or {}
        if found.get("run_state", "done") == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [{"id": d["id"], "name": d["name"], "recipient": d["recipient"]}
            for d in store.documents(kept.submission_id) if d["role"] == MONTHLY_KIND]


class DirectorySchedule:
    """Each month, every plan with a directory gets its monthly 274 once (a ``schedule``
    submission of that month in the store means it was made, also across restarts)."""

    def __init__(self, store, partners: Partners, check_every: float = 3600.0) -> None:
        self.store = store
        self.partners = partners
        self.check_every = check_every

    @classmethod
    def from_partners(cls, store, partners: Partners) -> DirectorySchedule | None:
        value = partners.schedules.get("directory_274")
        if not value:
            return None
        if value != "monthly":
            raise DirectoryError(f"directory_274 schedule {value!r}: only monthly is known")
        return cls(store, partners)

    def due(self, plan_id: str, month: str) -> bool:
        for found in self.store.submissions_for(plan_id, limit=200):
            if found["kind"] == MONTHLY_KIND and found["channel"] == "schedule" and \
                    (found.get("summary") or {}).get("month") == month:
                return False
        return latest_directory(self.store, plan_id) is not None

    def tick(self, now: datetime | None = None) -> dict[str, list[dict]]:
        now = now or datetime.now(UTC)
        month = now.strftime("%Y-%m")
        sent = {}
        for plan in self.partners.partners.values():
            if plan.role == "plan" and self.due(plan.id, month):
                sent[plan.id] = monthly_274(self.store, self.partners, plan.id, month, now,
                                            channel="schedule")
        if sent:
            log.info("monthly 274 files made", extra={"kind": MONTHLY_KIND,
                                                      "size": sum(map(len, sent.values()))})
        return sent

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.check_every):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the schedule must survive one bad run
                log.error("monthly 274 run failed: %s", exc.__class__.__name__)
