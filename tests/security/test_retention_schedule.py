"""The server's purge schedule runs the purge on its own, with the settings' periods."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from gateway.pipeline.retention import PurgeSchedule, Retention
from gateway.pipeline.store import Store
from gateway.settings import Settings


def test_the_schedule_purges_and_audits(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    old = datetime.now(UTC) - timedelta(days=3)
    sid = store.receive(partner="acme", channel="api", kind="x12", filename=None,
                        payload=b"old member data", now=old).submission_id
    store.claim(sid, "w", timedelta(minutes=1), now=old)
    store.finish(sid, "w", now=old)
    retention = Retention.from_settings(Settings(retention_payload_days=2))
    assert retention.days == {"payloads": 2, "documents": 90, "findings": 365}
    stop = threading.Event()
    thread = threading.Thread(target=PurgeSchedule(store, retention, interval=0.05,
                                                   check_every=0.01).run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while store.submission(sid)["payload_purged_at"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    assert store.submission(sid)["payload_purged_at"] is not None
    assert store.submission(sid)["sha256"]  # the audit trail stays
    assert any(e["action"] == "purge" and e["actor"] == "retention"
               for e in store.audit_log())
