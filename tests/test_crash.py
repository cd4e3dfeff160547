"""Crash safety: the real server (``ecm-gateway serve``, embedded SQLite store, file drop) is
killed with SIGKILL in the middle of a batch of API and file-drop submissions, restarted, and
every submission is then completed exactly once: none lost, one set of acknowledgments each,
each routed 837P once in the plan's mailbox and outbox, no duplicate or partial outbox file."""

from __future__ import annotations

import collections

import httpx
import pytest
from servers import Gateway, wait_for, write_partners, x12_variant

from gateway.pipeline.partners import Partners
from gateway.pipeline.process import TEST_SLOW_WRITES, process
from gateway.pipeline.store import Store

API_COUNT, DROP_COUNT = 40, 10


def reference_findings(tmp_path, partners_file) -> list[dict]:
    """The findings of one uninterrupted run of the same interchange, for comparison."""
    store = Store(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    kept = store.receive(partner="valley", channel="api", kind="x12", filename=None,
                         payload=x12_variant(999))
    assert process(store, Partners.load(partners_file), kept.submission_id).status == "routed"
    return store.findings(kept.submission_id)


def test_sigkill_mid_batch_then_restart_completes_everything_exactly_once(tmp_path):
    partners_file, tokens = write_partners(tmp_path)
    expected_findings = reference_findings(tmp_path, partners_file)
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    drop = tmp_path / "drop"
    env = {"ECM_GATEWAY_VAR": str(tmp_path / "var"), TEST_SLOW_WRITES: "0.02"}
    log = tmp_path / "server.log"
    auth = {p: {"Authorization": f"Bearer {t}"} for p, t in tokens.items()}

    server = Gateway(url, partners_file, log, env, drop=drop)
    ids = []
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for n in range(1, API_COUNT + 1):
            answer = client.post("/x12", content=x12_variant(n),
                                 headers={**auth["valley"], "Prefer": "respond-async"})
            assert answer.status_code == 202, answer.text
            assert answer.json()["status"] == "received"
            ids.append(answer.json()["submission_id"])
    inbox = drop / "valley" / "inbox"
    assert wait_for(inbox.is_dir, 10)
    for n in range(API_COUNT + 1, API_COUNT + DROP_COUNT + 1):
        (inbox / f"batch-{n}.x12.part").write_bytes(x12_variant(n))
        (inbox / f"batch-{n}.x12.part").rename(inbox / f"batch-{n}.x12")
    store = Store(url)
    try:
        # every dropped file stored (and archived), some of the batch done, the rest not
        assert wait_for(lambda: not any(inbox.iterdir())
                        and store.queue_depth()["done"] >= 10, 60)
        wait_for(lambda: store.queue_depth()["running"] == 1, 10, interval=0.001)
        server.kill()  # almost surely inside a run (runs are slow, the gaps between short)
        depth = store.queue_depth()
        assert depth["queued"] + depth["running"] > 0, depth  # the kill hit mid-batch
        assert depth["running"] <= 1  # one worker thread

        server = Gateway(url, partners_file, log, env, drop=drop)
        ids += [s["id"] for s in store.submissions_for("valley", limit=1000)
                if s["channel"] == "file-drop"]
        assert len(ids) == len(set(ids)) == API_COUNT + DROP_COUNT
        plan_outbox = drop / "demo-plan" / "outbox"
        assert wait_for(lambda: store.queue_depth()["done"] == len(ids)
                        and len(list(plan_outbox.iterdir())) >= len(ids)
                        and all(store.submission(i)["status"] == "delivered" for i in ids),
                        120), store.queue_depth()

        # none lost, each processed to the end once, with one set of outputs
        assert len(store.submissions_for("valley", limit=1000)) == len(ids)
        restarted = 0
        for sid in ids:
            found = store.submission(sid)
            # routed, then delivered: the routed 837P reached the plan's outbox
            assert (found["status"], found["run_state"]) == ("delivered", "done"), sid
            roles = sorted(d["role"] for d in store.documents(sid))
            assert roles == ["ack-277ca", "ack-999", "routed-837p"], sid
            assert store.findings(sid) == expected_findings
            restarted += [h["status"] for h in store.history(sid)].count("validated") > 1
        assert restarted <= depth["running"]  # only the run the kill interrupted started over

        # the plan's mailbox and outbox hold each routed 837P exactly once
        with httpx.Client(base_url=server.base, timeout=30) as client:
            box = client.get("/mailbox", headers=auth["demo-plan"]).json()["documents"]
            assert sorted(d["submission_id"] for d in box) == sorted(ids)
            assert {d["role"] for d in box} == {"routed-837p"}
            valley_box = client.get("/mailbox", headers=auth["valley"]).json()["documents"]
            assert collections.Counter(d["role"] for d in valley_box) == {
                "ack-999": len(ids), "ack-277ca": len(ids)}
        assert sorted(p.name for p in plan_outbox.iterdir()) == sorted(
            f"{sid}.837p.x12" for sid in ids)
        accepted = store.submission(ids[0])["summary"]["accepted_claims"]
        assert accepted > 0
        for path in plan_outbox.iterdir():
            assert path.read_text().count("~\nCLM*") == accepted
        valley_outbox = drop / "valley" / "outbox"
        assert wait_for(lambda: len(list(valley_outbox.iterdir())) >= 2 * len(ids), 30)
        assert sorted(p.name for p in valley_outbox.iterdir()) == sorted(
            f"{sid}.{kind}.x12" for sid in ids for kind in ("999", "277ca"))
        assert sorted(p.name for p in (drop / "valley" / "archive").iterdir()) == sorted(
            f"{s['id']}-{s['filename']}" for s in store.submissions_for("valley", limit=1000)
            if s["channel"] == "file-drop")
    finally:
        server.stop()
        store.close()
    assert "Traceback" not in log.read_text()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Loopback calls must not go through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
