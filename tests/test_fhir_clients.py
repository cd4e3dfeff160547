"""The FHIR API driven by real client libraries against a real server (``ecm-gateway serve``
on a free port): the SMART ``fhirclient`` reads the CapabilityStatement; an EHR discovers the
token endpoint (``.well-known/smart-configuration``), gets an access token with a signed
assertion (SMART Backend Services), and ``fhirpy`` creates, reads, updates with If-Match,
reads the history and searches with paging and a count."""

import time
import uuid

import pytest
import requests
import yaml
from conftest import ROOT
from fhirclient import client as smart_client
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import (
    ForbiddenError,
    MultipleResourcesFound,
    OperationOutcome,
    ResourceNotFound,
)
from joserfc import jwt
from joserfc.jwk import ECKey
from servers import Gateway
from test_fhir_routing import referral, task

from gateway.pipeline.partners import issue_demo_tokens

KEY = ECKey.generate_key("P-384", {"kid": "harbor-ehr-2026"})
CLIENT_ID = "harbor-ehr"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fhir-clients")
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               folder / "partners.yaml")
    data = yaml.safe_load((folder / "partners.yaml").read_text())
    harbor = next(p for p in data["partners"] if p["id"] == "harbor")
    harbor["smart"] = {"client_id": CLIENT_ID,
                       "jwks": {"keys": [KEY.as_dict(private=False)]},
                       "scopes": ["system/Task.cruds", "system/ServiceRequest.cruds"]}
    (folder / "partners.yaml").write_text(yaml.safe_dump(data))
    # the demo plan's MIF names the Tasks' member: the gateway can route them (a create of a
    # resource that cannot be routed is a 422)
    from gateway.pipeline.partners import Partners
    from gateway.pipeline.registries import load_demo_registries
    from gateway.pipeline.store import Store

    store = Store(f"sqlite:///{folder / 'gateway.sqlite'}")
    load_demo_registries(store, Partners.load(folder / "partners.yaml"))
    store.close()
    gateway = Gateway(f"sqlite:///{folder / 'gateway.sqlite'}", folder / "partners.yaml",
                      folder / "server.log", env={"ECM_GATEWAY_VAR": str(folder / "var")})
    yield gateway, tokens
    gateway.stop()


def access_token(base: str, scope: str) -> dict:
    """SMART Backend Services as an EHR does it: discover, sign, ask."""
    config = requests.get(f"{base}/fhir/.well-known/smart-configuration", timeout=10).json()
    token_url = config["token_endpoint"]
    assertion = jwt.encode({"alg": "ES384", "kid": KEY.kid, "typ": "JWT"}, {
        "iss": CLIENT_ID, "sub": CLIENT_ID, "aud": token_url,
        "exp": int(time.time()) + 300, "jti": uuid.uuid4().hex}, KEY, algorithms=["ES384"])
    answer = requests.post(token_url, data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_fhirclient_reads_the_capability_statement(server):
    gateway, _ = server
    smart = smart_client.FHIRClient(settings={"app_id": "ecm-gateway-tests",
                                              "api_base": f"{gateway.base}/fhir/"})
    statement = smart.server.capabilityStatement
    assert statement.fhirVersion == "4.0.1"
    rest = statement.rest[0]
    task_entry = next(r for r in rest.resource if r.type == "Task")
    assert [i.code for i in task_entry.interaction] == [
        "create", "read", "vread", "history-instance", "search-type", "update"]
    assert task_entry.versioning == "versioned-update" and task_entry.conditionalUpdate
    assert {p.name for p in task_entry.searchParam} >= {"_id", "_lastUpdated", "identifier",
                                                       "patient", "status"}
    [oauth] = rest.security.extension
    assert oauth.extension[0].valueUri == f"{gateway.base}/auth/token"
    assert rest.security.service[0].coding[0].code == "SMART-on-FHIR"


def test_fhirpy_through_create_read_update_history_and_search(server):
    gateway, _ = server
    token = access_token(gateway.base, "system/Task.cruds system/ServiceRequest.cruds")
    assert token["scope"] == "system/Task.cruds system/ServiceRequest.cruds"
    fhir_url = f"{gateway.base}/fhir"
    auth = f"Bearer {token['access_token']}"
    ehr = SyncFHIRClient(fhir_url, authorization=auth)

    sent = ehr.resource("ServiceRequest", **referral())
    sent.save()
    assert sent.id and sent["meta"]["versionId"] == "1"
    data = task()
    data.update(status="requested", focus={"reference": f"ServiceRequest/{sent.id}"})
    data.pop("statusReason")
    created = ehr.resource("Task", **data)
    created.save()
    assert created["meta"]["versionId"] == "1"
    read = ehr.reference("Task", created.id).to_resource()
    assert read["status"] == "requested" and read["meta"]["versionId"] == "1"

    # update with If-Match: the version read
    read["status"] = "accepted"
    SyncFHIRClient(fhir_url, authorization=auth,
                   extra_headers={"If-Match": 'W/"1"'}).resource("Task", **read).save()
    again = ehr.reference("Task", created.id).to_resource()
    assert (again["status"], again["meta"]["versionId"]) == ("accepted", "2")
    # a stale If-Match: 412 (fhirpy's exception for it), nothing changed
    stale = SyncFHIRClient(fhir_url, authorization=auth, extra_headers={"If-Match": 'W/"1"'})
    with pytest.raises(MultipleResourcesFound, match="FHIR-API-010"):
        stale.resource("Task", **{**read, "status": "rejected",
                                  "statusReason": {"text": "no capacity"}}).save()
    # an invalid transition: 422 OperationOutcome
    with pytest.raises(OperationOutcome, match="FHIR-LOOP-001"):
        ehr.resource("Task", **{**again, "status": "requested"}).save()
    assert ehr.reference("Task", created.id).to_resource()["meta"]["versionId"] == "2"

    # history and vread
    history = ehr.execute(f"Task/{created.id}/_history", method="get")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    first = ehr.execute(f"Task/{created.id}/_history/1", method="get")
    assert first["status"] == "requested"

    # search: paging through next links, count, parameters
    for n in range(4):
        more = ehr.resource("Task", **{**data, "identifier": [
            {"system": "urn:harbor:task", "value": f"T-{n}"}]})
        more.save()
    tasks = ehr.resources("Task")
    assert tasks.count() == 5
    assert tasks.search(status="requested").count() == 4
    pages = tasks.limit(2)
    assert len(pages.fetch()) == 2
    everything = pages.fetch_all()
    assert len(everything) == 5 and len({t.id for t in everything}) == 5
    assert tasks.search(identifier="urn:harbor:task|T-2").get()["identifier"][0]["value"] \
        == "T-2"
    assert tasks.search(_id=created.id).get().id == created.id
    summary = tasks.search(_summary="count").fetch_raw()
    assert summary["total"] == 5 and "entry" not in summary


def test_the_token_allows_only_its_scopes_and_other_partners_see_nothing(server):
    gateway, tokens = server
    token = access_token(gateway.base, "system/Task.rs")
    ehr = SyncFHIRClient(f"{gateway.base}/fhir", authorization=f"Bearer {token['access_token']}")
    assert isinstance(ehr.resources("Task").count(), int)
    with pytest.raises(ForbiddenError, match="FHIR-API-012"):
        ehr.resource("Task", **task()).save()
    with pytest.raises(ForbiddenError):
        ehr.resources("ServiceRequest").fetch()
    other = SyncFHIRClient(f"{gateway.base}/fhir",
                           authorization=f"Bearer {tokens['golden-table']}")
    assert other.resources("Task").count() == 0
    mine = SyncFHIRClient(f"{gateway.base}/fhir", authorization=f"Bearer {tokens['harbor']}")
    own = mine.resource("Task", **task())
    own.save()
    assert mine.reference("Task", own.id).to_resource()["status"] == "rejected"
    with pytest.raises(ResourceNotFound):
        other.reference("Task", own.id).to_resource()
