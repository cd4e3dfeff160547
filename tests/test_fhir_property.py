"""Garbage against /fhir: whatever the method, path, media types, token and body, the answer
is never a 5xx, and every error is an OperationOutcome (in the format asked for)."""

import json

import pytest
from conftest import FIXTURES, ROOT
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from gateway.api.app import create_app
from gateway.fhir.parse import to_xml_bytes
from gateway.pipeline.partners import issue_demo_tokens

RESOURCES = FIXTURES / "fhir" / "resources"
CAREPLAN = json.loads((RESOURCES / "careplan-ecm.json").read_bytes())
TYPES = ["CarePlan", "ServiceRequest", "Task", "Patient", "Coverage", "Bundle", "Observation",
         "Nope", "", "$validate", "metadata", "a..b", "%2e%2e", "%00", "CarePlan/$validate"]
FIELDS = ["resourceType", "status", "intent", "subject", "activity", "detail", "entry",
          "resource", "request", "contained", "extension", "url", "valueCode", "identifier",
          "value", "system", "period", "start", "_status", "id", "meta", "profile", "type",
          "div", "text", "coding", "code"]
MEDIA = ["application/fhir+json", "application/fhir+xml", "application/json",
         "application/xml", "text/plain", "multipart/form-data",
         "application/fhir+json; charset=latin-1", "", "*/*", "garbage/x;;=",
         "application/fhir+xml, */*;q=0.1"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fhir-property")
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               folder / "partners.yaml")
    app = create_app(store=f"sqlite:///{folder / 'gateway.sqlite'}",
                     partners=folder / "partners.yaml")
    yield TestClient(app, raise_server_exceptions=False), tokens["harbor"]
    app.state.queue.stop()  # a valid create hands its routing to the queue's worker


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) |
    st.text(max_size=12) | st.sampled_from(TYPES),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=25)


def _mutated_careplan(key: str, value) -> bytes:
    data = json.loads(json.dumps(CAREPLAN))
    data[key] = value
    return json.dumps(data).encode()


def _truncated(cut: int, xml: bool) -> bytes:
    whole = to_xml_bytes(CAREPLAN) if xml else json.dumps(CAREPLAN).encode()
    return whole[:cut]


bodies = (st.binary(max_size=300)
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(
              lambda d: json.dumps({"resourceType": "CarePlan", **d}).encode())
          | st.builds(_mutated_careplan, st.sampled_from(FIELDS), json_values)
          | st.builds(_truncated, st.integers(0, 3000), st.booleans())
          | st.text(max_size=200).map(lambda t: f"<CarePlan xmlns='http://hl7.org/fhir'>"
                                                f"{t}</CarePlan>".encode()))


def assert_operation_outcome(answer) -> None:
    media = answer.headers.get("content-type", "")
    if "xml" in media:
        root = etree.fromstring(answer.content)
        assert root.tag == "{http://hl7.org/fhir}OperationOutcome", answer.text
        assert root.find("{http://hl7.org/fhir}issue") is not None
    else:
        assert media.startswith("application/fhir+json"), media
        body = answer.json()
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"] and all(i["severity"] in ("fatal", "error", "warning",
                                                        "information") for i in body["issue"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH"]),
       path=st.one_of(st.sampled_from(TYPES).map(lambda t: f"/fhir/{t}" if t else "/fhir"),
                      st.tuples(st.sampled_from(TYPES), st.text(
                          alphabet="abcXYZ019-._~$%/?=&|", max_size=20)).map(
                          lambda p: f"/fhir/{p[0]}/{p[1]}")),
       content_type=st.sampled_from(MEDIA), accept=st.sampled_from(MEDIA),
       token=st.booleans(), body=bodies)
def test_garbage_never_gets_a_5xx_and_errors_are_operation_outcomes(
        gateway, method, path, content_type, accept, token, body):
    client, harbor = gateway
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    if token:
        headers["Authorization"] = f"Bearer {harbor}"
    answer = client.request(method, path, content=body, headers=headers)
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    if answer.status_code >= 400:
        assert_operation_outcome(answer)
