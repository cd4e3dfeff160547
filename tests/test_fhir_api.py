"""The /fhir API end to end, in JSON and in XML: metadata, create, $validate, read, search,
batch and transaction Bundles, partner isolation, and an OperationOutcome for every error."""

import json
import time

import pytest
from conftest import FIXTURES, ROOT
from fastapi.testclient import TestClient
from lxml import etree

from gateway.api import fhir as fhir_api
from gateway.api.app import create_app
from gateway.fhir import CIN_SYSTEM, ECM_PROFILES, RULE_SYSTEM
from gateway.fhir.parse import Collector, decode, model_class, normalise, to_xml_bytes
from gateway.pipeline.partners import issue_demo_tokens
from gateway.pipeline.registries import load_demo_registries
from gateway.pipeline.process import process

RESOURCES = FIXTURES / "fhir" / "resources"
JSON = {"Content-Type": "application/fhir+json"}
XML = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}
FILES = {"CarePlan": "careplan-ecm.json", "ServiceRequest": "referral-ecm.json",
         "Task": "task-ecm.json", "Patient": "patient-ecm.json",
         "Coverage": "coverage-ecm.json"}


@pytest.fixture
def gateway(tmp_path):
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               tmp_path / "partners.yaml")
    app = create_app(store=f"sqlite:///{tmp_path / 'gateway.sqlite'}",
                     partners=tmp_path / "partners.yaml")
    # the demo plan's MIF: the gateway fills in the members' names, so the samples route
    load_demo_registries(app.state.store, app.state.partners)
    client = TestClient(app, raise_server_exceptions=False)
    yield client, {p: {"Authorization": f"Bearer {t}"} for p, t in tokens.items()}, app
    app.state.queue.stop()


def settled(app, submission_id: str, timeout: float = 20.0) -> dict:
    """The submission once its queued run is done (routing runs off the request)."""
    store = app.state.store
    deadline = time.monotonic() + timeout
    while (found := store.submission(submission_id))["run_state"] != "done":
        assert time.monotonic() < deadline, found
        time.sleep(0.01)
    return found


def fixture(name: str) -> dict:
    return json.loads((RESOURCES / name).read_bytes())


def issues(response) -> list[tuple]:
    """(severity, code, expression, rule) of an OperationOutcome answer (JSON or XML)."""
    body = read(response)
    assert body["resourceType"] == "OperationOutcome"
    return [(i["severity"], i["code"], (i.get("expression") or [""])[0],
             i["details"]["coding"][0]["code"]) for i in body["issue"]]


def as_sent(resource: dict) -> dict:
    """A created resource without what the server adds: its id, meta.versionId and
    meta.lastUpdated (the client's meta.profile stays)."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    return {k: v for k, v in resource.items() if k not in ("id", "meta")} | \
        ({"meta": meta} if meta else {})


def read(response) -> dict:
    if "xml" in response.headers["content-type"]:
        data = decode(response.content, "xml", Collector())
        assert data is not None, response.text
        return normalise(model_class(data["resourceType"]).model_validate(data))
    assert response.headers["content-type"].startswith("application/fhir+json")
    return response.json()


def test_metadata_is_an_honest_capability_statement_without_a_token(gateway):
    client, _, _ = gateway
    answer = client.get("/fhir/metadata")
    assert answer.status_code == 200
    body = answer.json()
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
    assert body["format"] == ["application/fhir+json", "application/fhir+xml", "json", "xml"]
    [rest] = body["rest"]
    assert [(r["type"], r["profile"]) for r in rest["resource"]] == [
        (t, ECM_PROFILES[t]) for t in ("ServiceRequest", "CarePlan", "Task", "Patient",
                                       "Coverage")] + [
        ("Consent", "http://hl7.org/fhir/StructureDefinition/Consent")]  # no ECM profile
    assert [i["code"] for i in rest["resource"][0]["interaction"]] == [
        "create", "read", "vread", "history-instance", "search-type", "update"]
    assert [i["code"] for i in rest["resource"][3]["interaction"]] == [  # Patient
        "create", "read", "vread", "history-instance", "search-type"]
    assert [p["name"] for p in rest["resource"][2]["searchParam"]] == [  # Task
        "_id", "_lastUpdated", "identifier", "patient", "patient.identifier", "subject",
        "subject.identifier", "status"]
    assert (rest["resource"][2]["versioning"], rest["resource"][2]["conditionalUpdate"],
            rest["resource"][2]["readHistory"]) == ("versioned-update", True, True)
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert rest["security"]["extension"][0]["extension"] == [
        {"url": "token", "valueUri": "http://testserver/auth/token"}]
    assert [i["code"] for i in rest["interaction"]] == ["batch", "transaction"]
    xml = client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"})
    assert xml.headers["content-type"] == "application/fhir+xml; charset=utf-8"
    root = etree.fromstring(xml.content)
    assert root.tag == "{http://hl7.org/fhir}CapabilityStatement"
    assert read(xml) == body
    assert read(client.get("/fhir/metadata?_format=xml")) == body


@pytest.mark.parametrize("resource_type", sorted(FILES))
def test_create_and_read_back_in_json(gateway, resource_type):
    client, auth, app = gateway
    sent = fixture(FILES[resource_type])
    answer = client.post(f"/fhir/{resource_type}", content=json.dumps(sent),
                         headers={**auth["harbor"], **JSON})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    sid = answer.headers["x-submission-id"]
    assert created["id"] == f"{sid}-0"  # the gateway's id, known before the queued run
    assert answer.headers["location"] == \
        f"http://testserver/fhir/{resource_type}/{created['id']}/_history/1"
    assert answer.headers["etag"] == 'W/"1"'
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"].endswith("Z")
    assert as_sent(created) == {k: v for k, v in sent.items() if k != "id"}
    # read at once (the run may not have stored it yet) and once the run is done
    again = client.get(answer.headers["location"], headers=auth["harbor"])
    assert again.status_code == 200 and again.json() == created
    assert again.headers["x-submission-id"] == sid
    submission = settled(app, sid)
    again = client.get(answer.headers["location"], headers=auth["harbor"])
    assert again.status_code == 200 and again.json() == created
    # every ECM sample routes to the only plan (the gateway fills in the member's name from
    # the plan's MIF and the billing provider from Harbor's partner entry); a Patient or a
    # Coverage is kept only
    routed = resource_type in ("ServiceRequest", "Task", "CarePlan")
    assert (submission["kind"], submission["status"]) == ("fhir",
                                                          "routed" if routed else "validated")
    assert submission["summary"]["resources"] == [f"{resource_type}/{created['id']}"]


@pytest.mark.parametrize("resource_type", sorted(FILES))
def test_create_and_read_back_in_xml(gateway, resource_type):
    client, auth, _ = gateway
    sent = fixture(FILES[resource_type])
    answer = client.post(f"/fhir/{resource_type}", content=to_xml_bytes(sent),
                         headers={**auth["harbor"], **XML})
    assert answer.status_code == 201, answer.text
    assert answer.headers["content-type"] == "application/fhir+xml; charset=utf-8"
    created = read(answer)
    assert created["meta"]["versionId"] == "1"
    assert as_sent(created) == {k: v for k, v in sent.items() if k != "id"}
    back = client.get(answer.headers["location"], headers={**auth["harbor"],
                                                           "Accept": "application/xml"})
    assert read(back) == created
    assert client.get(answer.headers["location"] + "?_format=json",
                      headers=auth["harbor"]).json() == created


def test_an_invalid_resource_is_422_with_its_issues_and_kept_as_rejected(gateway):
    client, auth, app = gateway
    data = fixture("careplan-ecm.json")
    data["status"] = "bogus"
    data["activity"][0]["detail"]["extension"] = []
    answer = client.post("/fhir/CarePlan", json=data, headers=auth["harbor"])
    assert answer.status_code == 422
    assert issues(answer) == [
        ("error", "code-invalid", "CarePlan.status", "FHIR-PROFILE-004"),
        ("error", "code-invalid", "CarePlan.activity[0].detail.code", "FHIR-ECM-001")]
    assert read(answer)["issue"][1]["details"]["text"] == (
        "G9008 with modifiers (none) is not an ECM or Community Supports service on "
        "2026-09-10")
    sid = answer.headers["x-submission-id"]
    assert app.state.store.submission(sid)["status"] == "rejected"
    status = client.get(f"/submissions/{sid}", headers=auth["harbor"]).json()
    assert [f["rule"] for f in status["findings"]] == ["FHIR-PROFILE-004", "FHIR-ECM-001"]
    xml = client.post("/fhir/CarePlan", content=to_xml_bytes(data),
                      headers={**auth["harbor"], **XML})
    assert xml.status_code == 422 and issues(xml) == issues(answer)


def test_unreadable_bodies_are_400(gateway):
    client, auth, _ = gateway
    answer = client.post("/fhir/Patient", content=b'{"resourceType": ',
                         headers={**auth["harbor"], **JSON})
    assert answer.status_code == 400
    assert issues(answer) == [("fatal", "structure", "Patient", "FHIR-PARSE-001")]
    answer = client.post("/fhir/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'>",
                         headers={**auth["harbor"], **XML})
    assert answer.status_code == 400
    assert issues(answer) == [("fatal", "structure", "Patient", "FHIR-PARSE-002")]
    wrong = client.post("/fhir/Patient", content=to_xml_bytes(fixture("patient-ecm.json"))
                        .replace(b"http://hl7.org/fhir", b"http://hl7.org/fhir/x"),
                        headers={**auth["harbor"], **XML})
    assert wrong.status_code == 422
    assert issues(wrong) == [("error", "structure", "Patient", "FHIR-PARSE-004")]
    other = client.post("/fhir/CarePlan", json=fixture("patient-ecm.json"),
                        headers=auth["harbor"])
    assert other.status_code == 422
    assert issues(other) == [("error", "invalid", "Patient", "FHIR-PARSE-010")]


def test_media_type_size_method_and_url_errors_are_operation_outcomes(gateway, monkeypatch):
    client, auth, _ = gateway
    h = auth["harbor"]
    answer = client.post("/fhir/Patient", content=b"{}", headers={**h,
                                                                 "Content-Type": "text/csv"})
    assert answer.status_code == 415
    assert issues(answer) == [("fatal", "not-supported", "", "FHIR-PARSE-012")]
    monkeypatch.setattr(fhir_api, "MAX_BODY_BYTES", 50)
    big = client.post("/fhir/Patient", content=b" " * 51, headers={**h, **JSON})
    assert big.status_code == 413
    assert issues(big) == [("fatal", "too-long", "", "FHIR-PARSE-007")]
    assert client.delete("/fhir/Patient/1", headers=h).status_code == 405
    assert issues(client.put("/fhir/Patient/1", headers=h)) == [
        ("error", "not-supported", "", "FHIR-API-003")]
    for path in ("/fhir/Patient/1/_history", "/fhir/", "/fhir/Observation/1"):
        answer = client.get(path, headers=h)
        assert answer.status_code == 404, path
        assert issues(answer)[0][0] == "error"
    observation = client.post("/fhir/Observation", json={}, headers=h)
    assert observation.status_code == 404
    assert issues(observation) == [("error", "not-supported", "Observation",
                                    "FHIR-PROFILE-010")]
    wrong_format = client.get("/fhir/metadata?_format=text/html")
    assert wrong_format.status_code == 406
    assert issues(wrong_format) == [("error", "not-supported", "", "FHIR-API-005")]


@pytest.mark.parametrize("method, path", [
    ("post", "/fhir/CarePlan"), ("post", "/fhir"), ("post", "/fhir/Task/$validate"),
    ("get", "/fhir/Task/abc"), ("get", "/fhir/Task?identifier=x")])
def test_every_call_but_metadata_needs_a_partner_token(gateway, method, path):
    client, _, _ = gateway
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        answer = getattr(client, method)(path, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert issues(answer) == [("error", "login", "", "FHIR-API-001")]
    xml = getattr(client, method)(path, headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 401 and issues(xml) == [("error", "login", "", "FHIR-API-001")]


def test_the_rest_of_the_api_keeps_its_json_errors(gateway):
    client, _, _ = gateway
    answer = client.get("/submissions/x")
    assert answer.status_code == 401
    assert answer.json() == {"detail": "a valid bearer token of a trading partner is required"}
    assert client.get("/nowhere").json() == {"detail": "Not Found"}


def test_request_validation_errors_under_fhir_are_operation_outcomes(gateway):
    client, _, app = gateway

    @app.get("/fhir/_test/{number}")
    def typed(number: int) -> dict:
        return {}

    app.router.routes.insert(0, app.router.routes.pop())  # before the /fhir catch-all

    answer = client.get("/fhir/_test/abc")
    assert answer.status_code == 400
    assert issues(answer) == [("error", "invalid", "", "FHIR-API-004")]


def test_partners_see_only_their_own_resources(gateway):
    client, auth, app = gateway
    answer = client.post("/fhir/ServiceRequest", json=fixture("referral-ecm.json"),
                         headers=auth["harbor"])
    location = answer.headers["location"]
    hidden = client.get(location, headers=auth["golden-table"])  # before its run, too
    assert hidden.status_code == 404
    settled(app, answer.headers["x-submission-id"])
    for other in ("golden-table", "demo-plan"):
        hidden = client.get(location, headers=auth[other])
        assert hidden.status_code == 404
        assert issues(hidden) == [("error", "not-found", "", "FHIR-API-002")]
        search = client.get(f"/fhir/ServiceRequest?patient.identifier={CIN_SYSTEM}|91000002B",
                            headers=auth[other]).json()
        assert (search["total"], "entry" in search) == (0, False)
    assert client.get(location, headers=auth["harbor"]).status_code == 200


def test_search_by_member_and_by_identifier_in_json_and_xml(gateway):
    client, auth, app = gateway
    h = auth["harbor"]
    patient = fixture("patient-ecm.json")
    patient["identifier"].append({"system": "urn:harbor:mrn", "value": "MRN-77"})
    ids = {}
    for rtype, data in (("Patient", patient), ("Coverage", fixture("coverage-ecm.json")),
                        ("ServiceRequest", fixture("referral-ecm.json"))):
        answer = client.post(f"/fhir/{rtype}", json=data, headers=h)
        ids[rtype] = answer.json()["id"]
        settled(app, answer.headers["x-submission-id"])  # search sees what runs have stored
    found = client.get(f"/fhir/Coverage?patient.identifier={CIN_SYSTEM}|91000003C",
                       headers=h).json()
    assert found["total"] == 1
    assert found["entry"][0]["fullUrl"] == f"http://testserver/fhir/Coverage/{ids['Coverage']}"
    assert found["entry"][0]["search"] == {"mode": "match"}
    assert client.get("/fhir/Patient?identifier=urn:harbor:mrn|MRN-77",
                      headers=h).json()["total"] == 1
    assert client.get("/fhir/Patient?identifier=MRN-77", headers=h).json()["total"] == 1
    assert client.get("/fhir/Patient?identifier=urn:other|MRN-77",
                      headers=h).json()["total"] == 0
    assert client.get("/fhir/ServiceRequest?patient.identifier=91000003C",
                      headers=h).json()["total"] == 0
    xml = client.get("/fhir/Patient?patient.identifier=91000003C&_format=xml", headers=h)
    bundle = read(xml)
    assert bundle["type"] == "searchset" and bundle["entry"][0]["resource"]["id"] == \
        ids["Patient"]
    bad = client.get("/fhir/Patient?name=Quill", headers=h)
    assert bad.status_code == 400
    assert issues(bad) == [("error", "invalid", "", "FHIR-API-004")]


class HeldQueue:
    """A queue that keeps what it is given: the test runs the queued step itself."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def enqueue(self, submission_id: str) -> None:
        self.held.append(submission_id)

    def stop(self) -> None:
        pass


def test_read_and_search_find_a_created_resource_before_and_after_its_run(gateway):
    client, auth, app = gateway
    app.state.queue = queue = HeldQueue()
    h = auth["harbor"]
    answer = client.post("/fhir/Coverage", json=fixture("coverage-ecm.json"), headers=h)
    assert answer.status_code == 201
    sid = answer.headers["x-submission-id"]
    assert queue.held == [sid] and app.state.store.documents(sid) == []
    query = f"/fhir/Coverage?patient.identifier={CIN_SYSTEM}|91000003C"
    for moment in ("queued", "done"):
        found = client.get(query, headers=h).json()
        assert [e["resource"] for e in found["entry"]] == [answer.json()], moment
        assert client.get(answer.headers["location"], headers=h).json() == answer.json()
        assert client.get(query, headers=auth["golden-table"]).json()["total"] == 0
        if moment == "queued":
            assert process(app.state.store, app.state.partners, sid).status == "validated"
    [stored] = app.state.store.documents(sid)
    assert (stored["role"], stored["name"]) == ("fhir-resource", f"Coverage/{sid}-0")


def test_validate_answers_200_with_the_outcome_and_stores_nothing(gateway):
    client, auth, app = gateway
    h = auth["harbor"]
    ok = client.post("/fhir/Task/$validate", json=fixture("task-ecm.json"), headers=h)
    assert ok.status_code == 200
    assert issues(ok) == [("information", "informational", "Task.owner", "FHIR-PROFILE-006")]
    data = fixture("task-ecm.json")
    del data["statusReason"]
    bad = client.post("/fhir/Task/$validate", content=to_xml_bytes(data),
                      headers={**h, **XML})
    assert bad.status_code == 200
    assert issues(bad) == [("error", "invariant", "Task", "FHIR-PROFILE-007"),
                           ("information", "informational", "Task.statusReason",
                            "FHIR-PROFILE-006"),
                           ("information", "informational", "Task.owner", "FHIR-PROFILE-006")]
    broken = client.post("/fhir/Task/$validate", content=b"{", headers={**h, **JSON})
    assert broken.status_code == 400
    assert app.state.store.submissions_for("harbor") == []


def test_resubmitting_the_same_resource_answers_the_original(gateway):
    client, auth, _ = gateway
    body = json.dumps(fixture("patient-ecm.json"))
    first = client.post("/fhir/Patient", content=body, headers={**auth["harbor"], **JSON})
    second = client.post("/fhir/Patient", content=body, headers={**auth["harbor"], **JSON})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.headers["location"] == second.headers["location"]


def test_prefer_operation_outcome_returns_the_validation_issues(gateway):
    client, auth, app = gateway
    answer = client.post("/fhir/Task", json=fixture("task-ecm.json"),
                         headers={**auth["harbor"], "Prefer": "return=OperationOutcome"})
    assert answer.status_code == 201
    sid = answer.headers["x-submission-id"]
    assert answer.headers["location"] == f"http://testserver/fhir/Task/{sid}-0/_history/1"
    # the validation issues only (routing runs queued: its problems are not known yet), then
    # the create itself as information; a created resource never shows an error
    assert issues(answer) == [
        ("information", "informational", "Task.owner", "FHIR-PROFILE-006"),
        ("information", "informational", "", "FHIR-API-009")]
    assert read(answer)["issue"][1]["details"]["text"] == (
        f"created /fhir/Task/{sid}-0; routed to the member's plan next: see "
        f"/submissions/{sid}")
    # the Task's RTF row went on (the member's name from the plan's MIF)
    settled(app, sid)
    status = client.get(f"/submissions/{sid}", headers=auth["harbor"]).json()
    assert [(f["rule"], f["severity"], f["location"]) for f in status["findings"]] == [
        ("FHIR-PROFILE-006", "info", "Task.owner")]
    assert status["status"] == "routed"
    none = client.post("/fhir/Patient", json=fixture("patient-ecm.json"),
                       headers={**auth["harbor"], "Prefer": "return=OperationOutcome"})
    assert none.status_code == 201
    assert issues(none) == [("information", "informational", "", "FHIR-API-009")]


def _bundle(kind: str, *entries) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"fullUrl": full_url, "resource": resource,
         "request": {"method": "POST", "url": resource["resourceType"]}}
        for full_url, resource in entries]}


def test_batch_answers_each_entry_on_its_own(gateway):
    client, auth, _ = gateway
    bad = fixture("patient-ecm.json")
    bad["gender"] = "f"
    bundle = _bundle("batch", ("urn:uuid:1", fixture("careplan-ecm.json")), ("urn:uuid:2", bad))
    bundle["entry"].append({"resource": fixture("task-ecm.json"),
                            "request": {"method": "DELETE", "url": "Task/1"}})
    answer = client.post("/fhir", json=bundle, headers=auth["harbor"])
    assert answer.status_code == 200
    body = answer.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "422 Unprocessable Entity"]
    created = body["entry"][0]["response"]["location"]
    assert client.get(created, headers=auth["harbor"]).status_code == 200
    outcome = body["entry"][1]["response"]["outcome"]
    assert [(i["code"], i["expression"]) for i in outcome["issue"]] == [
        ("code-invalid", ["Bundle.entry[1].resource.gender"])]
    assert [i["expression"] for i in body["entry"][2]["response"]["outcome"]["issue"]] == [
        ["Bundle.entry[2].request"]]


def test_transaction_is_all_or_nothing_and_resolves_references(gateway):
    client, auth, app = gateway
    task = fixture("task-ecm.json")
    task["focus"] = {"reference": "urn:uuid:5f1c6a3e-0000-4000-8000-000000000001"}
    bundle = _bundle("transaction",
                     ("urn:uuid:5f1c6a3e-0000-4000-8000-000000000001",
                      fixture("referral-ecm.json")),
                     ("urn:uuid:5f1c6a3e-0000-4000-8000-000000000002", task))
    answer = client.post("/fhir", content=to_xml_bytes(bundle),
                         headers={**auth["harbor"], **XML})
    assert answer.status_code == 200, answer.text
    body = read(answer)
    assert body["type"] == "transaction-response"
    locations = [e["response"]["location"] for e in body["entry"]]
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * 2
    stored_task = client.get(locations[1], headers=auth["harbor"]).json()
    assert "/fhir/" + stored_task["focus"]["reference"] == locations[0]
    # one bad entry: nothing is stored
    before = len(app.state.store.submissions_for("harbor"))
    task["status"] = "draft"
    task["id"] = "another"
    bundle = _bundle("transaction", ("urn:uuid:a", fixture("patient-ecm.json")),
                     ("urn:uuid:b", task))
    failed = client.post("/fhir", json=bundle, headers=auth["harbor"])
    assert failed.status_code == 422
    assert issues(failed) == [
        ("error", "processing", "Bundle", "FHIR-API-006"),
        ("error", "code-invalid", "Bundle.entry[1].resource.status", "FHIR-PROFILE-004")]
    assert len(app.state.store.submissions_for("harbor")) == before


def test_bundle_errors(gateway):
    client, auth, _ = gateway
    h = auth["harbor"]
    collection = client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"},
                             headers=h)
    assert collection.status_code == 422
    assert issues(collection) == [("error", "invalid", "Bundle.type", "FHIR-API-004")]
    not_bundle = client.post("/fhir", json=fixture("patient-ecm.json"), headers=h)
    assert not_bundle.status_code == 400
    assert issues(not_bundle) == [("error", "invalid", "Patient", "FHIR-PARSE-010")]
    unknown = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Nope"}, "request": {"method": "POST", "url": "Nope"}}]},
        headers=h)
    assert unknown.status_code == 200
    outcome = unknown.json()["entry"][0]["response"]["outcome"]
    assert [i["details"]["coding"][0]["code"] for i in outcome["issue"]] == [
        "FHIR-PARSE-005", "FHIR-API-008"]
    assert outcome["issue"][0]["details"]["coding"][0]["system"] == RULE_SYSTEM


def test_an_internal_error_under_fhir_is_an_operation_outcome_without_details(gateway,
                                                                              monkeypatch):
    client, auth, _ = gateway

    def broken(*args, **kwargs):
        raise RuntimeError("member 91000002B secret")

    monkeypatch.setattr(fhir_api, "check_payload", broken)
    answer = client.post("/fhir/Task/$validate", json=fixture("task-ecm.json"),
                         headers=auth["harbor"])
    assert answer.status_code == 500
    assert answer.json() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "fatal", "code": "exception",
         "diagnostics": "internal error; the request was logged"}]}
