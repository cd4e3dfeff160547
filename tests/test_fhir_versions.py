"""FHIR updates with versions, through the real API (create_app, demo partners, demo
registries): PUT and conditional update, meta.versionId/lastUpdated, ETag/If-Match, vread,
_history; the referral Task's closed loop (each accepted change one RTF row at the member's
plan; an invalid transition refused); search paging and parameters. Every refusal stores and
routes nothing."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from test_fhir_routing import HARBOR_FILL, HARBOR_MEMBER, csv_rows, make_gateway, referral, \
    rtf_row, task, today

from gateway.pipeline.store import fhir_versions, submissions

ACTIVITY = "https://ecm-gateway.example.org/fhir/CodeSystem/ecm-activity"


@pytest.fixture
def gateway(tmp_path):
    made = make_gateway(tmp_path)
    yield made
    made.app.state.queue.stop()


def issues(answer) -> list[tuple]:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [(i["severity"], i["code"], (i.get("expression") or [""])[0],
             i["details"]["coding"][0]["code"]) for i in body["issue"]]


def counts(gateway) -> tuple[int, int, int]:
    """Submissions, versions and routed documents in the store."""
    with gateway.store.engine.connect() as conn:
        subs = conn.execute(select(func.count()).select_from(submissions)).scalar()
        versions = conn.execute(select(func.count()).select_from(fhir_versions)).scalar()
    return subs, versions, len(gateway.routed("demo-plan"))


def requested_task(focus: str | None = None) -> dict:
    data = task()
    data.update(status="requested", lastModified="2026-10-06T09:00:00-07:00")
    data.pop("statusReason")
    if focus:
        data["focus"] = {"reference": f"ServiceRequest/{focus}"}
    return data


def put(gateway, partner: str, resource: dict, etag: str | None = None, **headers):
    if etag is not None:
        headers["If-Match"] = etag
    return gateway.client.put(f"/fhir/{resource['resourceType']}/{resource['id']}",
                              json=resource, headers={**gateway.auth[partner], **headers})


def moved(resource: dict, status: str, day: str, reason: str | None = None) -> dict:
    changed = {**resource, "status": status, "lastModified": f"2026-10-{day}T10:00:00-07:00"}
    if reason:
        changed["statusReason"] = {"text": reason}
    return changed


def test_a_referral_task_through_its_closed_loop_gives_one_rtf_row_per_change(gateway):
    first = gateway.post("harbor", referral())
    created = gateway.post("harbor", requested_task(first.json()["id"]))
    task_v1 = created.json()
    assert created.headers["etag"] == 'W/"1"'
    assert task_v1["meta"]["versionId"] == "1"
    location = f"http://testserver/fhir/Task/{task_v1['id']}"
    assert created.headers["location"] == location + "/_history/1"
    current, etag = task_v1, created.headers["etag"]
    steps = [("accepted", "08", None), ("in-progress", "09", None),
             ("completed", "20", "Services received")]
    for number, (status, day, reason) in enumerate(steps, start=2):
        changed = moved(current, status, day, reason)
        if status == "completed":  # the member enrolled (the RTF needs the start date)
            changed["output"] = [{"type": {"coding": [{"system": ACTIVITY,
                                                       "code": "ecm-enrollment-start"}]},
                                  "valueDate": "2026-10-20"}]
        answer = put(gateway, "harbor", changed, etag)
        assert answer.status_code == 200, answer.text
        current, etag = answer.json(), answer.headers["etag"]
        assert etag == f'W/"{number}"'
        assert answer.headers["location"] == f"{location}/_history/{number}"
        assert current["meta"]["versionId"] == str(number)
        assert current["meta"]["profile"] == task_v1["meta"]["profile"]
        assert current["status"] == status and current["id"] == task_v1["id"]
        gateway.settled(answer.headers["x-submission-id"])
    # the plan has one RTF file per change (and the create's), each with that change's row
    files = sorted(gateway.box("demo-plan", "routed-rtf"), key=lambda d: d["created_at"])
    rows = [csv_rows(gateway.fetch("demo-plan", f)) for f in files]
    assert [(r["Referral Status"], r["Date of Referral Status Update"],
             r["Reason for Referral (Loop) Closure"]) for [r] in rows] == [
        ("PENDING", "2026-10-06", ""), ("ACCEPTED", "2026-10-08", ""),
        ("ACCEPTED", "2026-10-09", ""), ("CLOSED", "2026-10-20", "Services received")]
    assert rows[-1] == [rtf_row(**HARBOR_FILL, **{
        "Member ECM Status": "ENROLLED", "RTF Production Date": today(),
        "ECM Enrollment Start Date": "2026-10-20",
        "Referral Status": "CLOSED", "Date of Referral Status Update": "2026-10-20",
        "Reason for Referral (Loop) Closure": "Services received"})]
    # read answers the latest; vread and _history every version
    read = gateway.client.get(location, headers=gateway.auth["harbor"])
    assert read.json() == current and read.headers["etag"] == 'W/"4"'
    v2 = gateway.client.get(location + "/_history/2", headers=gateway.auth["harbor"])
    assert (v2.status_code, v2.json()["status"], v2.headers["etag"]) == (200, "accepted",
                                                                         'W/"2"')
    v1 = gateway.client.get(location + "/_history/1", headers=gateway.auth["harbor"]).json()
    assert v1 == task_v1
    history = gateway.client.get(location + "/_history", headers=gateway.auth["harbor"]).json()
    assert (history["type"], history["total"]) == ("history", 4)
    assert [(e["resource"]["meta"]["versionId"], e["resource"]["status"],
             e["request"]["method"], e["response"]["etag"]) for e in history["entry"]] == [
        ("4", "completed", "PUT", 'W/"4"'), ("3", "in-progress", "PUT", 'W/"3"'),
        ("2", "accepted", "PUT", 'W/"2"'), ("1", "requested", "POST", 'W/"1"')]
    # every version is a submission of its own, audited
    audit = [(a["action"], a["target"]) for a in gateway.store.audit_log()
             if a["action"] == "update"]
    assert [t for _, t in audit] == [f"Task/{task_v1['id']}/_history/{n}" for n in (4, 3, 2)]
    # the loop is closed: nothing may follow completed
    again = put(gateway, "harbor", moved(current, "in-progress", "21"), etag)
    assert again.status_code == 422
    assert issues(again) == [("error", "business-rule", "Task.status", "FHIR-LOOP-001")]
    assert again.json()["issue"][0]["details"]["text"] == (
        "a referral Task may not move from completed to in-progress; from completed it may "
        "move to: nothing (the loop is closed)")


def test_an_invalid_transition_names_the_allowed_ones_and_stores_nothing(gateway):
    created = gateway.post("harbor", requested_task())
    before = counts(gateway)
    answer = put(gateway, "harbor", moved(created.json(), "completed", "09", "done"))
    assert answer.status_code == 422
    assert issues(answer) == [("error", "business-rule", "Task.status", "FHIR-LOOP-001")]
    assert answer.json()["issue"][0]["details"]["text"] == (
        "a referral Task may not move from requested to completed; from requested it may "
        "move to: received, accepted, rejected, cancelled")
    assert counts(gateway) == before


def test_a_stale_if_match_is_412_and_stores_nothing(gateway):
    created = gateway.post("harbor", requested_task())
    first = put(gateway, "harbor", moved(created.json(), "accepted", "08"), 'W/"1"')
    assert first.status_code == 200
    gateway.settled(first.headers["x-submission-id"])
    before = counts(gateway)
    stale = put(gateway, "harbor", moved(created.json(), "rejected", "08", "no capacity"),
                'W/"1"')
    assert stale.status_code == 412
    assert stale.headers["etag"] == 'W/"2"'
    assert issues(stale) == [("error", "conflict", "", "FHIR-API-010")]
    assert stale.json()["issue"][0]["details"]["text"] == (
        "the resource is at version 2, not 1: read it again and apply the change to the "
        "latest version")
    bad = put(gateway, "harbor", moved(created.json(), "in-progress", "09"), "yesterday")
    assert bad.status_code == 400
    assert counts(gateway) == before


def test_an_update_of_another_partners_resource_is_404_and_stores_nothing(gateway):
    created = gateway.post("harbor", requested_task())
    before = counts(gateway)
    for other in ("golden-table", "demo-plan"):
        answer = put(gateway, other, moved(created.json(), "accepted", "08"))
        assert answer.status_code == 404
        assert issues(answer) == [("error", "not-found", "", "FHIR-API-002")]
        history = gateway.client.get(f"/fhir/Task/{created.json()['id']}/_history",
                                     headers=gateway.auth[other])
        assert history.status_code == 404
    unknown = put(gateway, "harbor", {**moved(created.json(), "accepted", "08"),
                                      "id": "no-such-task"})
    assert unknown.status_code == 404
    assert counts(gateway) == before


def test_update_refusals_are_precise(gateway):
    created = gateway.post("harbor", requested_task()).json()
    other_id = gateway.client.put(f"/fhir/Task/{created['id']}",
                                  json={**moved(created, "accepted", "08"), "id": "x-1"},
                                  headers=gateway.auth["harbor"])
    assert other_id.status_code == 400
    assert issues(other_id) == [("error", "invalid", "id", "FHIR-API-011")]
    patient = gateway.client.put("/fhir/Patient/abc", json={"resourceType": "Patient",
                                                            "id": "abc"},
                                 headers=gateway.auth["harbor"])
    assert patient.status_code == 405
    invalid = put(gateway, "harbor", {**moved(created, "accepted", "08"), "intent": "bogus"})
    assert invalid.status_code == 422
    assert issues(invalid)[0] == ("error", "value", "Task.intent", "FHIR-PROFILE-003")
    assert gateway.client.get(f"/fhir/Task/{created['id']}",
                              headers=gateway.auth["harbor"]).headers["etag"] == 'W/"1"'


def test_an_update_that_changes_nothing_makes_no_version(gateway):
    created = gateway.post("harbor", requested_task())
    before = counts(gateway)
    same = put(gateway, "harbor", created.json(), 'W/"1"')
    assert same.status_code == 200 and same.headers["etag"] == 'W/"1"'
    assert same.json() == created.json()
    assert counts(gateway) == before


def test_conditional_update_by_identifier(gateway):
    data = requested_task()
    data["identifier"] = [{"system": "urn:harbor:task", "value": "T-100"}]
    created = gateway.post("harbor", data).json()
    changed = moved(created, "accepted", "08")
    changed.pop("id")
    answer = gateway.client.put("/fhir/Task?identifier=urn:harbor:task|T-100", json=changed,
                                headers=gateway.auth["harbor"])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["id"], answer.headers["etag"]) == (created["id"], 'W/"2"')
    # no match: a create
    fresh = {**requested_task(), "identifier": [{"system": "urn:harbor:task", "value": "T-7"}]}
    made = gateway.client.put("/fhir/Task?identifier=urn:harbor:task|T-7", json=fresh,
                              headers=gateway.auth["harbor"])
    assert made.status_code == 201 and made.headers["etag"] == 'W/"1"'
    # several matches: 412
    gateway.settled(made.headers["x-submission-id"])
    twice = gateway.client.put(f"/fhir/Task?patient.identifier={HARBOR_MEMBER}",
                               json=changed, headers=gateway.auth["harbor"])
    assert twice.status_code == 412
    assert issues(twice) == [("error", "multiple-matches", "", "FHIR-API-013")]


def test_an_updated_careplan_and_referral_keep_their_ids_and_route_again(gateway):
    sent = gateway.post("harbor", referral()).json()
    deadline = gateway.client.get(f"/fhir/ServiceRequest/{sent['id']}",
                                  headers=gateway.auth["harbor"]).headers[
        "x-authorization-deadline"]
    changed = {**sent, "note": [{"text": "member prefers phone"}]}
    answer = put(gateway, "harbor", changed, 'W/"1"')
    assert answer.status_code == 200 and answer.headers["etag"] == 'W/"2"'
    gateway.settled(answer.headers["x-submission-id"])
    read = gateway.client.get(f"/fhir/ServiceRequest/{sent['id']}",
                              headers=gateway.auth["harbor"])
    assert read.json()["note"] == [{"text": "member prefers phone"}]
    assert read.headers["x-authorization-deadline"] == deadline  # the first one's
    assert len(gateway.box("demo-plan", "routed-referral")) == 2


# -- search ---------------------------------------------------------------------------------
def test_search_pages_through_count_and_parameters(gateway):
    made = []
    for n in range(5):
        data = requested_task()
        data["identifier"] = [{"system": "urn:harbor:task", "value": f"T-{n}"}]
        made.append(gateway.post("harbor", data).json())
    accepted = put(gateway, "harbor", moved(made[1], "accepted", "08"), 'W/"1"')
    assert accepted.status_code == 200
    h = gateway.auth["harbor"]
    # page through with _count=2: next links until there is none, each resource once
    seen, url, pages = [], "/fhir/Task?_count=2", 0
    while url:
        page = gateway.client.get(url, headers=h).json()
        pages += 1
        assert page["total"] == 5
        seen += [e["resource"]["id"] for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert ("previous" in links) == (pages > 1)
        url = links.get("next")
    assert (pages, seen) == (3, [m["id"] for m in made])
    last = gateway.client.get("/fhir/Task?_count=2&_offset=4", headers=h).json()
    assert {link["relation"]: link["url"] for link in last["link"]}["previous"] == \
        "http://testserver/fhir/Task?_count=2&_offset=2"
    # the latest version is what search finds
    found = gateway.client.get("/fhir/Task?status=accepted", headers=h).json()
    assert [(e["resource"]["id"], e["resource"]["meta"]["versionId"])
            for e in found["entry"]] == [(made[1]["id"], "2")]
    assert gateway.client.get("/fhir/Task?status=requested&_summary=count",
                              headers=h).json() == {"resourceType": "Bundle",
                                                    "type": "searchset", "total": 4}
    ids = f"{made[0]['id']},{made[3]['id']}"
    assert gateway.client.get(f"/fhir/Task?_id={ids}", headers=h).json()["total"] == 2
    assert gateway.client.get("/fhir/Task?identifier=urn:harbor:task|T-3",
                              headers=h).json()["entry"][0]["resource"]["id"] == made[3]["id"]
    assert gateway.client.get(f"/fhir/Task?subject.identifier={HARBOR_MEMBER}",
                              headers=h).json()["total"] == 5
    now = datetime.now(UTC)
    since = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert gateway.client.get(f"/fhir/Task?_lastUpdated=ge{since}&_lastUpdated=lt{later}",
                              headers=h).json()["total"] == 5
    assert gateway.client.get(f"/fhir/Task?_lastUpdated=gt{later}",
                              headers=h).json()["total"] == 0
    assert gateway.client.get("/fhir/Task?_count=0", headers=h).json()["total"] == 5
    for bad in ("_count=-1", "_lastUpdated=ge-tomorrow", "_summary=text", "name=Quill"):
        answer = gateway.client.get(f"/fhir/Task?{bad}", headers=h)
        assert answer.status_code == 400, bad
        assert issues(answer) == [("error", "invalid", "", "FHIR-API-004")]
    # another partner finds none of them
    assert gateway.client.get("/fhir/Task", headers=gateway.auth["golden-table"]
                              ).json()["total"] == 0


def test_search_by_patient_reference(gateway):
    data = requested_task()
    data["for"] = {"reference": "Patient/p-1", "identifier": data["for"]["identifier"]}
    made = gateway.post("harbor", data).json()
    h = gateway.auth["harbor"]
    for query in ("patient=Patient/p-1", "patient=p-1", "subject=Patient/p-1"):
        found = gateway.client.get(f"/fhir/Task?{query}", headers=h).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [made["id"]], query
    assert gateway.client.get("/fhir/Task?patient=p-2", headers=h).json()["total"] == 0


def test_an_update_in_xml_is_answered_in_xml(gateway):
    from gateway.fhir.parse import to_xml_bytes

    created = gateway.post("harbor", requested_task()).json()
    changed = moved(created, "accepted", "08")
    answer = gateway.client.put(f"/fhir/Task/{created['id']}", content=to_xml_bytes(changed),
                                headers={**gateway.auth["harbor"], "If-Match": 'W/"1"',
                                         "Content-Type": "application/fhir+xml",
                                         "Accept": "application/fhir+xml"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/fhir+xml; charset=utf-8"
    assert b'<versionId value="2"/>' in answer.content
    assert answer.headers["etag"] == 'W/"2"'
    stale = gateway.client.put(f"/fhir/Task/{created['id']}", content=to_xml_bytes(changed),
                               headers={**gateway.auth["harbor"], "If-Match": 'W/"1"',
                                        "Content-Type": "application/fhir+xml",
                                        "Accept": "application/fhir+xml"})
    assert stale.status_code == 412 and b"FHIR-API-010" in stale.content


def test_a_resource_purged_under_retention_is_gone_not_an_error(gateway):
    created = gateway.post("harbor", requested_task()).json()
    answer = put(gateway, "harbor", moved(created, "accepted", "08"), 'W/"1"')
    gateway.settled(answer.headers["x-submission-id"])
    later = datetime.now(UTC) + timedelta(days=1)
    for kind in ("payloads", "documents", "findings"):
        gateway.store.expire(kind, later)
    assert all(not r["content"] for r in gateway.store.resource_versions("Task", created["id"]))
    h = gateway.auth["harbor"]
    for path in (f"/fhir/Task/{created['id']}", f"/fhir/Task/{created['id']}/_history",
                 f"/fhir/Task/{created['id']}/_history/1"):
        assert gateway.client.get(path, headers=h).status_code == 404, path
    found = gateway.client.get("/fhir/Task", headers=h)
    assert found.status_code == 200 and found.json()["total"] == 0
    again = put(gateway, "harbor", moved(created, "in-progress", "09"))
    assert again.status_code == 404


def test_a_replayed_update_is_the_same_version_and_makes_no_resource(gateway):
    from gateway.pipeline.process import replay

    created = gateway.post("harbor", requested_task()).json()
    answer = put(gateway, "harbor", moved(created, "accepted", "08"), 'W/"1"')
    sid = answer.headers["x-submission-id"]
    gateway.settled(sid)
    before = len(gateway.box("demo-plan", "routed-rtf"))
    outcome = replay(gateway.store, gateway.app.state.partners, sid, actor="harbor",
                     force=True)
    new_id = outcome.submission_id if hasattr(outcome, "submission_id") else outcome
    gateway.settled(new_id)
    # the same version routed again: an identical RTF file is not delivered twice
    assert len(gateway.box("demo-plan", "routed-rtf")) == before
    h = gateway.auth["harbor"]
    read = gateway.client.get(f"/fhir/Task/{created['id']}", headers=h)
    assert (read.json()["status"], read.headers["etag"]) == ("accepted", 'W/"2"')
    assert gateway.client.get(f"/fhir/Task/{new_id}-0", headers=h).status_code == 404
    assert gateway.client.get("/fhir/Task", headers=h).json()["total"] == 1
