"""Authorization deadlines of ECM referrals: which routed referrals are overdue, and the one
notice each overdue referral's plan receives.

A referral ServiceRequest's routing (gateway/fhir/intake.py) records its priority and its
authorization deadline (72 hours expedited / 5 working days routine,
``mappings/fhir/servicerequest-to-referral.yaml``). It is *decided* once one of the sending
partner's Tasks about it (``Task.focus``) reaches a status listed as ``decided`` in
``mappings/fhir/task-closed-loop.yaml``; a referral that is not decided by its deadline, and
is still active (its latest version), is *overdue*:

* listed by ``GET /referrals/overdue`` (a provider: its own referrals; a plan: those routed
  to it);
* counted by the Prometheus gauge ``ecm_gateway_referrals_overdue`` (per plan and priority);
* its plan is sent one notice (a JSON document, role ``referral-overdue``, in the plan's
  mailbox) by :func:`notify_overdue`, which the server runs every ``overdue_seconds``
  (setting ``ECM_GATEWAY_OVERDUE_SECONDS``, default 300). The notice names the referral, its sender, priority and
  deadline: no member data beyond what the plan's referral record already holds.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily

from gateway.fhir.closed_loop import closed_loop
from gateway.pipeline.partners import Partner, Partners
from gateway.pipeline.store import Store
from gateway.settings import current as settings

log = logging.getLogger("gateway.pipeline.referral_deadlines")
NOTICE_ROLE = "referral-overdue"
LOOKBACK = timedelta(days=120)  # referrals received longer ago are no longer tracked


@dataclass(frozen=True)
class Overdue:
    referral: str  # ServiceRequest/<gateway id>
    sender: str
    plan: str
    priority: str
    deadline: str
    hours_overdue: int
    submission_id: str


OPEN_STATUSES = ("active", "draft", "on-hold")  # a referral still waiting for its decision


def _open_undecided(store: Store, partner: Partner) -> set[str]:
    """The partner's referrals (``ServiceRequest/<id>``) still open (their latest version) that
    none of its Tasks has decided: two searches, whatever the number of referrals."""
    from gateway.pipeline.fhir_store import search

    decided = set(closed_loop().decided)
    closed = set()
    for version in search(store, partner, "Task", []):
        focus = version.resource.get("focus")
        reference = focus.get("reference") if isinstance(focus, dict) else None
        if isinstance(reference, str) and version.resource.get("status") in decided:
            closed.add(reference)
    return {f"ServiceRequest/{v.resource['id']}"
            for v in search(store, partner, "ServiceRequest", [])
            if v.resource.get("status") in OPEN_STATUSES} - closed


def overdue_referrals(store: Store, partners: Partners, now: datetime | None = None,
                      viewer: Partner | None = None) -> list[Overdue]:
    """Referrals past their authorization deadline and not decided, oldest deadline first;
    ``viewer``: only a provider's own, or a plan's."""
    now = now or datetime.now(UTC)
    seen: set[str] = set()
    waiting: dict[str, set[str]] = {}
    found = []
    for submission in store.routed_fhir_submissions(now - LOOKBACK):
        sender = partners.partners.get(submission["partner"])
        for entry in (submission.get("summary") or {}).get("routing", []):
            label = entry.get("resource", "")
            if not label.startswith("ServiceRequest/") or label in seen \
                    or not entry.get("authorization_deadline") or not entry.get("plan") \
                    or "referral" not in (entry.get("documents") or {}):
                continue
            seen.add(label)  # the first routing (the create's) sets the deadline
            if sender is None or (viewer is not None and viewer.id not in
                                  (sender.id, entry["plan"])):
                continue
            deadline = datetime.fromisoformat(entry["authorization_deadline"])
            if deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)
            if deadline > now:
                continue
            if sender.id not in waiting:
                waiting[sender.id] = _open_undecided(store, sender)
            if label not in waiting[sender.id]:
                continue  # decided, or revoked / completed / entered in error
            found.append(Overdue(label, sender.id, entry["plan"], str(entry.get("priority")),
                                 entry["authorization_deadline"],
                                 int((now - deadline).total_seconds() // 3600),
                                 submission["id"]))
    return sorted(found, key=lambda o: (o.deadline, o.referral))


def notify_overdue(store: Store, partners: Partners, now: datetime | None = None) -> int:
    """Send each overdue referral's plan one notice (a JSON document in its mailbox); returns
    how many were sent now."""
    sent = 0
    for item in overdue_referrals(store, partners, now):
        name = f"{item.referral.replace('/', '-')}.overdue.json"
        if any(d["name"] == name and d["role"] == NOTICE_ROLE
               for d in store.documents(item.submission_id)):
            continue
        notice = {"notice": "authorization deadline passed without a decision",
                  **asdict(item), "at": (now or datetime.now(UTC)).isoformat()}
        store.add_document(item.submission_id, role=NOTICE_ROLE, name=name,
                           content=(json.dumps(notice, indent=2) + "\n").encode(),
                           media_type="application/json", recipient=item.plan)
        store.audit(actor="gateway", action="notify", target=item.referral,
                    detail=f"overdue referral notice to {item.plan}")
        sent += 1
    return sent


def watch_overdue(store: Store, partners: Partners, stop: threading.Event,
                  interval: float | None = None) -> None:
    """Run :func:`notify_overdue` every ``interval`` seconds (the ``overdue_seconds``
    setting) until ``stop`` is set."""
    while not stop.wait(interval or settings().overdue_seconds):
        try:
            notify_overdue(store, partners)
        except Exception as exc:  # noqa: BLE001 - a watcher keeps watching
            log.error("overdue referral notices failed: %s", exc.__class__.__name__)


class OverdueMetric:
    """``ecm_gateway_referrals_overdue{plan, priority}``, computed at scrape time."""

    def __init__(self, store: Store, partners: Partners) -> None:
        self.store, self.partners = store, partners

    def collect(self):
        gauge = GaugeMetricFamily("ecm_gateway_referrals_overdue",
                                  "ECM referrals past their authorization deadline without a "
                                  "decision", labels=["plan", "priority"])
        counts: dict[tuple[str, str], int] = {}
        for item in overdue_referrals(self.store, self.partners):
            key = (item.plan, item.priority)
            counts[key] = counts.get(key, 0) + 1
        for (plan, priority), count in sorted(counts.items()):
            gauge.add_metric([plan, priority], count)
        yield gauge
