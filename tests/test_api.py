"""The HTTP API end to end: authentication, X12 submission with its 999, routing to the
member's plan, idempotency, and isolation between partners."""

import calendar
from datetime import date, timedelta

import pytest
from conftest import FIXTURES, ROOT, demo_gateway, renumber
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import __version__
from gateway.api import app as app_module
from gateway.pipeline.partners import issue_demo_tokens

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()


@pytest.fixture
def gateway(tmp_path):
    app, auth = demo_gateway(tmp_path)
    with TestClient(app, raise_server_exceptions=False) as client:  # runs the worker threads
        yield client, auth


def test_health_metrics_and_openapi_need_no_token(gateway):
    client, _ = gateway
    assert client.get("/healthz").json() == {"status": "ok", "version": __version__}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert f'ecm_gateway_info{{version="{__version__}"}} 1.0' in metrics.text
    assert client.get("/openapi.json").json()["info"]["title"] == "ECM Gateway"


@pytest.mark.parametrize("method, path", [("post", "/x12"), ("get", "/submissions/x"),
                                          ("get", "/mailbox"), ("get", "/mailbox/x")])
def test_every_other_call_needs_a_partner_token(gateway, method, path):
    client, _ = gateway
    assert getattr(client, method)(path).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert getattr(client, method)(path, headers=bad).status_code == 401


def test_submit_x12_acknowledges_routes_and_isolates(gateway):
    client, auth = gateway
    answer = client.post("/x12", content=MIXED, headers=auth["harbor"])
    assert answer.status_code == 200
    body = answer.json()
    sid = body["submission_id"]
    assert body["duplicate"] is False and body["status"] == "routed"
    assert "ST*999*0001*005010X231A1~" in body["ack_999"]
    # the claims billed by other providers are not Harbor's to send
    status = client.get(f"/submissions/{sid}", headers=auth["harbor"]).json()
    assert status["status"] == "routed"
    auth_findings = [f for f in status["findings"] if f["rule"] == "GATEWAY-AUTH-001"]
    assert len(auth_findings) == 4
    assert status["summary"]["accepted_claims"] == 6
    roles = sorted(d["role"] for d in status["documents"])
    assert roles == ["ack-277ca", "ack-999"]
    # the accepted claims went to the member's plan, enveloped for it
    plan_box = client.get("/mailbox", headers=auth["demo-plan"]).json()["documents"]
    assert [d["role"] for d in plan_box] == ["routed-837p"]
    routed = client.get(plan_box[0]["href"], headers=auth["demo-plan"])
    assert routed.status_code == 200 and routed.text.count("CLM*") == 6
    assert "*ZZ*DEMOPLAN       *" in routed.text
    # nobody else sees any of it
    other = auth["golden-table"]
    assert client.get(f"/submissions/{sid}", headers=other).status_code == 404
    assert client.get(plan_box[0]["href"], headers=other).status_code == 404
    assert client.get(plan_box[0]["href"], headers=auth["harbor"]).status_code == 404
    assert client.get("/mailbox", headers=other).json() == {"documents": []}


def test_resubmission_is_answered_with_the_original(gateway):
    client, auth = gateway
    first = client.post("/x12", content=MIXED, headers=auth["harbor"]).json()
    again = client.post("/x12", content=MIXED, headers=auth["harbor"]).json()
    assert again == {"submission_id": first["submission_id"], "duplicate": True,
                     "status": "routed", "links": {"self": f"/submissions/{first['submission_id']}"}}
    keyed = {**auth["harbor"], "Idempotency-Key": "batch-7"}
    one = client.post("/x12", content=renumber(MIXED, 502),
                      headers=keyed).json()
    two = client.post("/x12", content=renumber(MIXED, 502),
                      headers=keyed).json()
    assert one["duplicate"] is False and two["duplicate"] is True
    assert two["submission_id"] == one["submission_id"]
    # the key again with another body: refused, naming the key (not the original silently)
    three = client.post("/x12", content=renumber(MIXED, 503),
                        headers=keyed)
    assert three.status_code == 422 and "'batch-7'" in three.json()["detail"]
    # the same file from another partner is that partner's own submission
    other = client.post("/x12", content=MIXED, headers=auth["golden-table"]).json()
    assert other["duplicate"] is False


def test_bad_bodies_are_clear_4xx_or_rejections(gateway, monkeypatch):
    client, auth = gateway
    assert client.post("/x12", content=b"", headers=auth["harbor"]).status_code == 400
    monkeypatch.setattr(app_module, "MAX_X12_BYTES", 100)
    assert client.post("/x12", content=MIXED, headers=auth["harbor"]).status_code == 413
    monkeypatch.setattr(app_module, "MAX_X12_BYTES", 50 * 1024 * 1024)
    answer = client.post("/x12", content=b"hello, not x12", headers=auth["harbor"])
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"


def test_upload_an_invoice_routes_its_837p_and_returns_the_report(gateway):
    client, auth = gateway
    # the fixture's services (June, days up to 30) moved to a recent month of 31 days, so
    # they are inside timely filing and every day exists
    month = date.today().replace(day=1) - timedelta(days=1)
    while calendar.monthrange(month.year, month.month)[1] != 31:
        month = month.replace(day=1) - timedelta(days=1)
    last_month = month.strftime("%Y-%m-")
    invoice = (FIXTURES / "invoice" / "invoice-clean.csv").read_text().replace("2025-06-",
                                                                                last_month)
    answer = client.post("/files", files={"file": ("../../etc/invoice.csv", invoice.encode(),
                                                   "text/csv")}, headers=auth["harbor"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] in ("routed", "validated")
    status = client.get(f"/submissions/{body['submission_id']}", headers=auth["harbor"]).json()
    assert status["filename"] == "invoice.csv"  # the client's path is never used
    assert [d["role"] for d in status["documents"]] == ["report"]
    report = client.get(status["documents"][0]["href"], headers=auth["harbor"])
    assert report.text.startswith("Row,Status,Claim ID")
    plan_box = client.get("/mailbox", headers=auth["demo-plan"]).json()["documents"]
    assert [d["role"] for d in plan_box] == ["routed-837p"]
    routed = client.get(plan_box[0]["href"], headers=auth["demo-plan"]).text
    assert routed.count("CLM*") == status["summary"]["claims"] > 0


def test_upload_refuses_what_is_not_a_table(gateway):
    client, auth = gateway
    answer = client.post("/files", files={"file": ("claims.x12", MIXED, "text/plain")},
                         headers=auth["harbor"])
    assert answer.status_code == 415
    answer = client.post("/files", files={"file": ("empty.csv", b"", "text/csv")},
                         headers=auth["harbor"])
    assert answer.status_code == 400
    answer = client.post("/files", files={"file": ("notes.csv", b"hello world\n", "text/csv")},
                         headers=auth["harbor"])
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"


def test_replay_runs_the_stored_payload_again_linked_to_the_original(gateway):
    client, auth = gateway
    first = client.post("/x12", content=MIXED, headers=auth["harbor"]).json()
    refused = client.post(f"/submissions/{first['submission_id']}/replay",
                          headers=auth["harbor"])
    assert refused.status_code == 409 and "force" in refused.json()["detail"]
    again = client.post(f"/submissions/{first['submission_id']}/replay?force=true",
                        headers=auth["harbor"]).json()
    assert again["replay_of"] == first["submission_id"]
    # the same 837P as before: not delivered to the plan a second time
    assert again["submission_id"] != first["submission_id"] and again["status"] == "validated"
    assert len(client.get("/mailbox", headers=auth["demo-plan"]).json()["documents"]) == 1
    status = client.get(f"/submissions/{again['submission_id']}", headers=auth["harbor"]).json()
    assert status["parent_id"] == first["submission_id"]
    other = client.post(f"/submissions/{first['submission_id']}/replay",
                        headers=auth["golden-table"])
    assert other.status_code == 404


def test_a_failing_step_is_retried_then_dead_lettered(tmp_path, monkeypatch):
    from gateway.pipeline import process as pipeline
    from gateway.pipeline.partners import Partners
    from gateway.pipeline.store import Store

    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "p.yaml")
    partners = Partners.load(tmp_path / "p.yaml")
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    kept = store.receive(partner="harbor", channel="api", kind="x12", filename=None,
                         payload=MIXED)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setitem(pipeline.STEPS, "x12", broken)
    waits = []
    outcome = pipeline.process(store, partners, kept.submission_id, sleep=waits.append)
    assert outcome.status == "dead_letter" and len(calls) == pipeline.RETRIES
    assert waits == [0.5, 1.0]  # backoff doubles
    found = store.submission(kept.submission_id)
    assert found["status"] == "dead_letter" and "OSError" in found["error"]
    assert store.raw_payload(kept.submission_id) == MIXED  # nothing lost: replayable
    monkeypatch.undo()
    replayed = pipeline.replay(store, partners, kept.submission_id, actor="operator")
    assert replayed.status == "routed"  # a dead letter is replayed without force


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.binary(max_size=400) | st.builds(
    lambda cut: MIXED[:cut], st.integers(min_value=0, max_value=len(MIXED))))
def test_garbage_never_gets_a_5xx(gateway, body):
    client, auth = gateway
    answer = client.post("/x12", content=body, headers=auth["harbor"])
    assert answer.status_code < 500, answer.text


def test_hostile_requests_get_clear_4xx(gateway):
    client, auth = gateway
    # not multipart
    assert client.post("/files", json={"file": "x"}, headers=auth["harbor"]).status_code == 422
    # a path in the upload name never reaches the disk or the store as a path
    answer = client.post("/files", files={"file": ("../../../../etc/passwd.csv", b"a,b\n1,2\n",
                                                    "text/csv")}, headers=auth["harbor"])
    assert answer.status_code == 200
    sid = answer.json()["submission_id"]
    assert client.get(f"/submissions/{sid}", headers=auth["harbor"]).json()["filename"] == \
        "passwd.csv"
    # a declared length over the limit is refused before the body is read
    big = client.post("/x12", content=b"x" * 10, headers={**auth["harbor"],
                                                          "Content-Length": str(10 ** 10)})
    assert big.status_code in (400, 413)
    # unknown ids and methods
    assert client.get("/submissions/../../etc", headers=auth["harbor"]).status_code == 404
    assert client.delete("/mailbox", headers=auth["harbor"]).status_code == 405
