"""Retention (last in each mode: it purges the session's store). Payloads, documents and
findings past their period are removed; the audit trail (ids, hashes, sizes, dates, counts)
stays; a purged document answers 410 and a purged payload cannot be replayed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import renumber
from servers import ROOT

from gateway.pipeline.retention import Retention, purge

MIXED = (ROOT / "fixtures" / "837p" / "ecm-mixed.x12").read_bytes()


def test_purge_keeps_the_audit_trail_only(served):
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "purge", "--store", served.url],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **served.env,
                               "ECM_GATEWAY_RETENTION_FINDING_DAYS": "30"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "purged": {"payloads": 0, "documents": 0, "findings": 0},
        "retention_days": {"payloads": 90, "documents": 90, "findings": 30}}
    payload = renumber(MIXED, 9001)
    answer = served.client.post("/x12", content=payload,
                                headers=served.auth("harbor", Prefer="respond-async"))
    sid = answer.json()["submission_id"]
    served.wait_done(sid)
    [ack] = [d for d in served.client.get("/mailbox", headers=served.auth("harbor")).json()[
        "documents"] if d["submission_id"] == sid and d["role"] == "ack-999"]
    ack_bytes = served.client.get(ack["href"], headers=served.auth("harbor")).content
    later = datetime.now(UTC) + timedelta(days=400)
    counts = purge(served.store, Retention.from_settings(), now=later)
    assert counts["payloads"] >= 1 and counts["documents"] >= 2 and counts["findings"] >= 1
    kept = served.store.submission(sid)
    assert kept["sha256"] == hashlib.sha256(payload).hexdigest() and kept["size"] == len(payload)
    assert kept["payload_purged_at"] is not None and kept["summary"]["claims"] == 10
    assert served.store.findings(sid) == []
    with pytest.raises(KeyError):
        served.store.raw_payload(sid)
    gone = served.client.get(ack["href"], headers=served.auth("harbor"))
    assert gone.status_code in (404, 410)
    document = served.store.document(ack["id"])
    assert document["content"] == b"" and document["purged_at"] is not None
    assert all(d["id"] != ack["id"] for d in served.client.get(
        "/mailbox", headers=served.auth("harbor")).json()["documents"])
    with served.store._read() as conn:  # noqa: SLF001 - the kept hash of the content
        from sqlalchemy import select

        from gateway.pipeline.store import documents_table

        digest = conn.execute(select(documents_table.c.sha256).where(
            documents_table.c.id == ack["id"])).scalar()
    assert digest == hashlib.sha256(ack_bytes).hexdigest()
    replay = served.client.post(f"/submissions/{sid}/replay", headers=served.auth("harbor"))
    assert replay.status_code == 410 and "retention" in replay.json()["detail"]
    entry = served.store.audit_log(10)
    assert any(e["action"] == "purge" and "payloads" in e["detail"] for e in entry)
