"""`POST /extracts/history`: a provider asks for the encounter history of its own assigned
members; the extract lands in its mailbox, and only there."""

import csv
import io

import pytest
from conftest import FIXTURES, demo_gateway
from fastapi.testclient import TestClient

MIXED = (FIXTURES / "837p" / "ecm-mixed.x12").read_bytes()


@pytest.fixture
def gateway(tmp_path):
    app, auth = demo_gateway(tmp_path, registries=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, auth


def test_a_provider_gets_its_members_history_in_its_mailbox(gateway):
    client, auth = gateway
    sent = client.post("/x12", content=MIXED, headers=auth["demo-plan"])  # → history
    assert sent.status_code == 200 and sent.json()["status"] == "routed"
    answer = client.post("/extracts/history", headers=auth["harbor"])
    assert answer.status_code == 201
    href = answer.json()["href"]
    rows = list(csv.reader(io.StringIO(client.get(href, headers=auth["harbor"]).text)))
    assert [(r[0], r[9]) for r in rows[1:]] == [
        ("91230000A", "HIST-0002"), ("91230000A", "MIX-A-GOOD"), ("91258326G", "HIST-0001")]
    assert client.get(href, headers=auth["golden-table"]).status_code == 404
    names = [d["name"] for d in client.get("/mailbox", headers=auth["harbor"]).json()[
        "documents"]]
    assert len(names) == 1 and names[0].startswith("history-harbor-")


def test_the_fhir_extract_is_a_bundle(gateway):
    client, auth = gateway
    answer = client.post("/extracts/history?format=fhir", headers=auth["harbor"])
    assert answer.status_code == 201
    bundle = client.get(answer.json()["href"], headers=auth["harbor"]).json()
    assert bundle["resourceType"] == "Bundle"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} >= {"Encounter", "Claim"}


def test_extracts_are_for_providers_only(gateway):
    client, auth = gateway
    assert client.post("/extracts/history", headers=auth["demo-plan"]).status_code == 403
    assert client.post("/extracts/history").status_code == 401
    assert client.post("/extracts/history?format=pdf",
                       headers=auth["harbor"]).status_code == 422
