"""Authorization deadlines of routed referrals: an undecided referral past its deadline is
listed (GET /referrals/overdue, for its sender and its plan only), counted in the metric
ecm_gateway_referrals_overdue, and its plan gets one notice; a Task that decides it, or a
deadline still ahead, takes it off."""

from datetime import UTC, datetime

import pytest
from test_fhir_routing import make_gateway, referral, task

from gateway.pipeline.referral_deadlines import NOTICE_ROLE, notify_overdue


@pytest.fixture
def gateway(tmp_path):
    made = make_gateway(tmp_path)
    yield made
    made.app.state.queue.stop()


def overdue(gateway, partner: str) -> list[dict]:
    answer = gateway.client.get("/referrals/overdue", headers=gateway.auth[partner])
    assert answer.status_code == 200
    return answer.json()["overdue"]


def metric(gateway) -> list[str]:
    text = gateway.client.get("/metrics").text
    return [line for line in text.splitlines()
            if line.startswith("ecm_gateway_referrals_overdue{")]


def test_an_undecided_referral_past_its_deadline_is_overdue_until_a_task_decides_it(gateway):
    late = gateway.post("harbor", referral()).json()  # urgent, authored 2026-10-05
    ahead = datetime.now(UTC).isoformat(timespec="seconds")
    gateway.post("harbor", referral(priority="routine", authored=ahead))  # not due yet
    [item] = overdue(gateway, "harbor")
    assert {k: item[k] for k in ("referral", "sender", "plan", "priority", "deadline")} == {
        "referral": f"ServiceRequest/{late['id']}", "sender": "harbor", "plan": "demo-plan",
        "priority": "expedited", "deadline": "2026-10-08T09:30:00-07:00"}
    assert item["hours_overdue"] > 24
    assert overdue(gateway, "demo-plan") == [item]
    assert overdue(gateway, "golden-table") == []
    assert metric(gateway) == [
        'ecm_gateway_referrals_overdue{plan="demo-plan",priority="expedited"} 1.0']
    # the plan is notified once
    assert notify_overdue(gateway.store, gateway.app.state.partners) == 1
    assert notify_overdue(gateway.store, gateway.app.state.partners) == 0
    [notice] = gateway.box("demo-plan", NOTICE_ROLE)
    body = gateway.client.get(notice["href"], headers=gateway.auth["demo-plan"]).json()
    assert (body["referral"], body["deadline"]) == (item["referral"], item["deadline"])
    assert "member" not in str(body).lower()
    # a Task still requested decides nothing; an accepted one does
    pending = task()
    pending.update(status="requested", focus={"reference": item["referral"]})
    pending.pop("statusReason")
    made = gateway.post("harbor", pending).json()
    assert len(overdue(gateway, "harbor")) == 1
    accepted = gateway.client.put(f"/fhir/Task/{made['id']}",
                                  json={**made, "status": "accepted"},
                                  headers={**gateway.auth["harbor"], "If-Match": 'W/"1"'})
    assert accepted.status_code == 200
    gateway.settled(accepted.headers["x-submission-id"])
    assert overdue(gateway, "harbor") == []
    assert metric(gateway) == []


def test_a_revoked_referral_is_not_overdue(gateway):
    late = gateway.post("harbor", referral()).json()
    assert len(overdue(gateway, "harbor")) == 1
    revoked = gateway.client.put(f"/fhir/ServiceRequest/{late['id']}",
                                 json={**late, "status": "revoked"},
                                 headers=gateway.auth["harbor"])
    assert revoked.status_code == 200, revoked.text
    gateway.settled(revoked.headers["x-submission-id"])
    assert overdue(gateway, "harbor") == []
