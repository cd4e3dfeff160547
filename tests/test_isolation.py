"""Every endpoint, one table: what one partner made, another partner can neither read nor act
on (404, as if it did not exist; 403 where the call is not for its role). The table must name
every authenticated route of the app, so a new endpoint cannot slip in untested."""

import json

import pytest
from conftest import FIXTURES, demo_gateway
from console_helpers import sign_in, token_of
from fastapi.testclient import TestClient

from gateway.fhir import CIN_SYSTEM

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()
CAREPLAN = (FIXTURES / "fhir" / "resources" / "careplan-ecm.json").read_bytes()
OPEN = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/healthz", "/metrics",
        "/fhir/metadata", "/fhir/.well-known/smart-configuration",
        "/auth/token",  # SMART: the client authenticates with its signed assertion
        "/console", "/console/signin", "/static/docs", "/console/static"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Harbor's submission, mailbox document and FHIR resource; the outsider's token."""
    app, auth = demo_gateway(tmp_path_factory.mktemp("isolation"), registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        sent = client.post("/x12", content=MIXED, headers=auth["harbor"]).json()
        document = client.get("/mailbox", headers=auth["harbor"]).json()["documents"][0]
        created = client.post("/fhir/CarePlan", content=CAREPLAN, headers={
            **auth["harbor"], "Content-Type": "application/fhir+json"})
        assert created.status_code == 201, created.text
        ids = {"submission": sent["submission_id"], "document": document["id"],
               "careplan": created.json()["id"],
               "cin": json.loads(CAREPLAN)["subject"]["identifier"]["value"]}
        yield client, auth, ids, app


CASES = [  # (method, route, concrete path, expected status for the outsider)
    ("GET", "/submissions/{submission_id}", "/submissions/{submission}", 404),
    ("POST", "/submissions/{submission_id}/replay",
     "/submissions/{submission}/replay?force=true", 404),
    ("GET", "/mailbox/{document_id}", "/mailbox/{document}", 404),
    ("GET", "/fhir/{resource_type}/{resource_id}", "/fhir/CarePlan/{careplan}", 404),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history",
     "/fhir/CarePlan/{careplan}/_history", 404),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}",
     "/fhir/CarePlan/{careplan}/_history/1", 404),
    ("POST", "/extracts/history", "/extracts/history", 403),  # a plan asks: not a provider
]
CONSOLE_CASES = [  # the console's pages, with a signed-in session instead of a bearer token
    ("GET", "/console/submissions/{submission_id}", "/console/submissions/{submission}", 404),
    ("GET", "/console/submissions/{submission_id}/raw", "/console/submissions/{submission}/raw",
     404),
    ("GET", "/console/submissions/{submission_id}/replay",
     "/console/submissions/{submission}/replay", 404),
    ("POST", "/console/submissions/{submission_id}/replay",
     "/console/submissions/{submission}/replay", 404),
    ("GET", "/console/documents/{document_id}", "/console/documents/{document}", 404),
]


def test_every_authenticated_route_is_in_the_table(made):
    _, _, _, app = made
    routes = {(m, r.path) for r in app.routes if r.path not in OPEN
              for m in (getattr(r, "methods", None) or ()) if m not in ("HEAD", "OPTIONS")}
    listed = {(m, r) for m, r, _, _ in CASES + CONSOLE_CASES} | {
        # calls that touch only the caller's own data (an operator's: everyone's)
        ("POST", "/x12"), ("POST", "/files"), ("GET", "/mailbox"), ("POST", "/fhir"),
        ("POST", "/fhir/{resource_type}"), ("POST", "/fhir/{resource_type}/$validate"),
        ("GET", "/fhir/{resource_type}"), ("GET", "/referrals/overdue"),
        ("GET", "/reports/outreach"),  # a plan's report from its own mailbox and MIFs
        # a plan's own authorizations, a provider's own reports (another plan's: 403, another
        # provider's: none - tests/test_data_sharing_registry.py)
        ("GET", "/registries/data-sharing"),
        # updates need a body: another partner's is 404 in tests/test_fhir_versions.py; a
        # conditional update searches the caller's own only
        ("PUT", "/fhir/{resource_type}/{resource_id}"), ("PUT", "/fhir/{resource_type}"),
        ("GET", "/submissions"),
        ("GET", "/console/"), ("GET", "/console/submissions"), ("GET", "/console/mailbox"),
        ("POST", "/console/signout"),
        ("POST", "/directory/274")}  # a plan's own 274 (another's: 403, test_directory_server)
    catch_all = {(m, "/fhir/{rest:path}") for m in ("GET", "POST", "PUT", "DELETE", "PATCH")}
    assert routes - catch_all == listed


@pytest.mark.parametrize("method, route, path, status", CASES)
def test_another_partner_cannot_read_or_act_on_it(made, method, route, path, status):
    client, auth, ids, _ = made
    outsider = auth["demo-plan"] if route == "/extracts/history" else auth["golden-table"]
    answer = client.request(method, path.format(**ids), headers=outsider)
    assert answer.status_code == status
    owner = client.request(method, path.format(**ids), headers=auth["harbor"])
    assert owner.status_code < 400  # the same call works for its owner


def test_lists_and_searches_show_only_the_callers_own(made):
    client, auth, ids, _ = made
    outsider = auth["golden-table"]
    assert client.get("/mailbox", headers=outsider).json() == {"documents": []}
    search = client.get("/fhir/CarePlan", headers=outsider).json()
    assert search["resourceType"] == "Bundle" and search.get("total", 0) == 0
    by_member = client.get(f"/fhir/CarePlan?patient.identifier={CIN_SYSTEM}|{ids['cin']}",
                           headers=outsider).json()
    assert not by_member.get("entry")
    for query in ("", f"?patient.identifier={CIN_SYSTEM}|{ids['cin']}"):
        own = client.get(f"/fhir/CarePlan{query}", headers=auth["harbor"]).json()
        assert [e["resource"]["id"] for e in own["entry"]] == [ids["careplan"]]


@pytest.mark.parametrize("method, route, path, status", CONSOLE_CASES)
def test_another_partners_console_session_cannot_read_or_act_on_it(made, method, route, path,
                                                                   status):
    client, auth, ids, _ = made
    for partner, expected in (("golden-table", status), ("harbor", None), ("ops", None)):
        session = sign_in(client, token_of(auth, partner))
        data = {"csrf": session["csrf"]} if method == "POST" else None
        answer = client.request(method, path.format(**ids), headers=session["headers"],
                                data=data, follow_redirects=False)
        if expected is None:  # the owner, and an operator, may
            assert answer.status_code < 400, (partner, answer.status_code)
        else:
            assert answer.status_code == expected
            assert ids["submission"] not in answer.text


def test_console_lists_show_only_the_callers_own(made):
    client, auth, ids, _ = made
    outsider = sign_in(client, token_of(auth, "golden-table"))
    for page in ("/console/submissions", "/console/mailbox", "/console/",
                 f"/console/submissions?q={ids['submission']}"):
        answer = client.get(page, headers=outsider["headers"])
        assert answer.status_code == 200
        assert f"/console/submissions/{ids['submission']}" not in answer.text
        assert f"/console/documents/{ids['document']}" not in answer.text
    own = sign_in(client, token_of(auth, "harbor"))
    assert f"/console/submissions/{ids['submission']}" in client.get(
        "/console/submissions", headers=own["headers"]).text


def test_listing_api_shows_only_the_callers_own(made):
    client, auth, ids, _ = made
    for query in ("", f"?q={ids['submission']}", "?partner=harbor"):
        assert client.get(f"/submissions{query}", headers=auth["golden-table"]).json() == {
            "submissions": []}
        own = client.get(f"/submissions{query}", headers=auth["harbor"]).json()
        assert ids["submission"] in [s["id"] for s in own["submissions"]]
        ops = client.get(f"/submissions{query}", headers=auth["ops"]).json()
        assert ids["submission"] in [s["id"] for s in ops["submissions"]]
