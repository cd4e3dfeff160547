"""SMART Backend Services through the real API: the EHR registers its public keys (JWKS) in
the partner file, signs a client assertion (RS384 or ES384), gets a short-lived access token
with the system/ scopes it may have, and each FHIR interaction checks them. Every bad
assertion is a precise OAuth error and issues nothing; static partner tokens keep working."""

import time
import uuid

import pytest
import yaml
from conftest import ROOT
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from test_fhir_routing import referral, task

from gateway.api.app import create_app
from gateway.pipeline.partners import PartnerConfigError, Partners, issue_demo_tokens

TOKEN_URL = "http://testserver/auth/token"
CLIENT_ID = "harbor-ehr"
RSA_KEY = RSAKey.generate_key(2048, {"kid": "harbor-rsa-1"})
EC_KEY = ECKey.generate_key("P-384", {"kid": "harbor-ec-1"})
OTHER_KEY = RSAKey.generate_key(2048, {"kid": "harbor-rsa-1"})  # same kid, another key
SCOPES = ["system/Task.cru", "system/ServiceRequest.crs", "system/CarePlan.read"]


def jwks(*keys) -> dict:
    return {"keys": [k.as_dict(private=False) for k in keys]}


@pytest.fixture
def gateway(tmp_path):
    tokens = issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml",
                               tmp_path / "partners.yaml")
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    harbor = next(p for p in data["partners"] if p["id"] == "harbor")
    harbor["smart"] = {"client_id": CLIENT_ID, "jwks": jwks(RSA_KEY, EC_KEY), "scopes": SCOPES}
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
    app = create_app(store=f"sqlite:///{tmp_path / 'gateway.sqlite'}",
                     partners=tmp_path / "partners.yaml")
    # the demo plan's MIF names the Task's member: the gateway can route it (a create of a
    # resource that cannot be routed is a 422)
    from gateway.pipeline.registries import load_demo_registries

    load_demo_registries(app.state.store, app.state.partners)
    client = TestClient(app, raise_server_exceptions=False)
    yield client, {p: {"Authorization": f"Bearer {t}"} for p, t in tokens.items()}, app
    app.state.queue.stop()


def assertion(key=RSA_KEY, alg="RS384", **claims) -> str:
    now = int(time.time())
    body = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": TOKEN_URL, "exp": now + 240,
            "jti": uuid.uuid4().hex, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, body, key, algorithms=[alg])


def token_request(client, signed: str, scope: str = "system/Task.cru",
                  **form) -> object:
    return client.post("/auth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed, **form})


def bearer(answer) -> dict:
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_smart_configuration_names_the_token_endpoint_and_methods(gateway):
    client, _, _ = gateway
    config = client.get("/fhir/.well-known/smart-configuration")
    assert config.status_code == 200
    body = config.json()
    assert body["token_endpoint"] == TOKEN_URL
    assert body["grant_types_supported"] == ["client_credentials"]
    assert body["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert body["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client-confidential-asymmetric" in body["capabilities"]


@pytest.mark.parametrize("key, alg", [(RSA_KEY, "RS384"), (EC_KEY, "ES384")])
def test_a_signed_assertion_gets_a_short_lived_token_with_the_granted_scopes(gateway, key,
                                                                             alg):
    client, _, app = gateway
    answer = token_request(client, assertion(key, alg),
                           scope="system/Task.cru system/Patient.read system/CarePlan.read")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        "bearer", 300, "system/Task.cru system/CarePlan.read")  # Patient is not granted
    assert answer.headers["cache-control"] == "no-store"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    created = client.post("/fhir/Task", json=task(), headers=auth)
    assert created.status_code == 201, created.text
    assert client.get(created.headers["location"], headers=auth).status_code == 200
    # the token names the partner: the resource is harbor's
    assert app.state.store.submission(created.headers["x-submission-id"])["partner"] == \
        "harbor"
    assert [a["action"] for a in app.state.store.audit_log() if a["actor"] == "harbor"][-1] \
        == "token"


def test_scopes_are_checked_per_interaction(gateway):
    client, auth, _ = gateway
    scoped = bearer(token_request(client, assertion(),
                                  scope="system/Task.cru system/ServiceRequest.c"))
    answer = client.get("/fhir/Patient?identifier=x", headers=scoped)
    assert answer.status_code == 403
    body = answer.json()
    assert [(i["severity"], i["code"], i["details"]["coding"][0]["code"])
            for i in body["issue"]] == [("error", "forbidden", "FHIR-API-012")]
    assert body["issue"][0]["details"]["text"] == (
        "the access token's scopes do not allow this: search of Patient needs "
        "system/Patient.s (or system/Patient.read)")
    assert client.post("/fhir/Patient", json={"resourceType": "Patient"},
                       headers=scoped).status_code == 403
    made = client.post("/fhir/ServiceRequest", json=referral(), headers=scoped)
    assert made.status_code == 201
    assert client.get(made.headers["location"], headers=scoped).status_code == 403  # c only
    assert client.get("/fhir/Task?_count=1", headers=scoped).status_code == 403  # no s
    # a transaction entry the scopes do not cover
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST",
                                                              "url": "Patient"}}]}
    batch = client.post("/fhir", json=bundle, headers=scoped).json()
    assert batch["entry"][0]["response"]["outcome"]["issue"][-1]["details"]["coding"][0][
        "code"] == "FHIR-API-012"
    # the static token of the same partner keeps every scope
    assert client.get("/fhir/Patient?identifier=x", headers=auth["harbor"]).status_code == 200


def test_an_access_token_is_for_fhir_only_and_static_tokens_keep_working(gateway):
    client, auth, _ = gateway
    scoped = bearer(token_request(client, assertion()))
    assert client.get("/mailbox", headers=scoped).status_code == 401
    assert client.post("/x12", content=b"ISA*", headers=scoped).status_code == 401
    assert client.get("/mailbox", headers=auth["harbor"]).status_code == 200


@pytest.mark.parametrize("change, error, description", [
    ({"aud": "https://elsewhere.example/token"}, "invalid_client",
     "aud must be the token endpoint http://testserver/auth/token"),
    ({"exp": int(time.time()) - 10}, "invalid_client", "the assertion has expired"),
    ({"exp": int(time.time()) + 3600}, "invalid_client",
     "exp may be at most five minutes ahead"),
    ({"jti": None}, "invalid_client", "jti is required"),
    ({"iss": "someone-else", "sub": "someone-else"}, "invalid_client",
     "iss is not a registered client id"),
    ({"sub": "another"}, "invalid_client", "sub must be the client id (as iss)"),
])
def test_bad_assertions_are_refused_with_an_oauth_error(gateway, change, error, description):
    client, _, app = gateway
    answer = token_request(client, assertion(**change))
    assert answer.status_code == 401
    assert answer.json() == {"error": error, "error_description": description}
    assert not any(a["action"] == "token" for a in app.state.store.audit_log())


def test_replayed_jti_unknown_kid_wrong_key_and_algorithm_are_refused(gateway):
    client, _, _ = gateway
    signed = assertion()
    assert token_request(client, signed).status_code == 200
    replay = token_request(client, signed)
    assert (replay.status_code, replay.json()["error_description"]) == (
        401, "jti was used before (a replayed assertion)")
    unknown = RSAKey.generate_key(2048, {"kid": "not-registered"})
    answer = token_request(client, assertion(unknown))
    assert answer.json() == {"error": "invalid_client", "error_description":
                             "kid names no key registered for this client"}
    forged = token_request(client, assertion(OTHER_KEY))
    assert forged.json()["error_description"] == \
        "the signature does not verify with the registered key"
    weak = token_request(client, assertion(RSA_KEY, "RS256"))
    assert weak.json()["error_description"] == \
        "client_assertion must be signed with RS384 or ES384"
    garbage = token_request(client, "not.a.jwt")
    assert garbage.json()["error"] == "invalid_client"


def test_request_errors(gateway):
    client, _, _ = gateway
    wrong_grant = token_request(client, assertion(), grant_type="password")
    assert (wrong_grant.status_code, wrong_grant.json()["error"]) == (
        400, "unsupported_grant_type")
    no_scope = token_request(client, assertion(), scope="")
    assert (no_scope.status_code, no_scope.json()["error"]) == (400, "invalid_scope")
    nothing = token_request(client, assertion(), scope="system/Patient.read")
    assert (nothing.status_code, nothing.json()["error"]) == (400, "invalid_scope")
    wrong_type = token_request(client, assertion(), client_assertion_type="basic")
    assert (wrong_type.status_code, wrong_type.json()["error"]) == (400, "invalid_request")
    # an unknown, made-up or expired access token is a 401 OperationOutcome
    answer = client.get("/fhir/Task", headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401
    assert answer.json()["issue"][0]["code"] == "login"


def test_an_expired_access_token_is_refused(gateway):
    client, _, app = gateway
    from datetime import UTC, datetime, timedelta

    from gateway.pipeline.partners import token_hash

    app.state.store.add_access_token(token_hash("old-token"), "harbor", "system/Task.cru",
                                     datetime.now(UTC) - timedelta(seconds=1))
    answer = client.get("/fhir/Task", headers={"Authorization": "Bearer old-token"})
    assert answer.status_code == 401


def test_the_partner_file_refuses_private_keys_and_keys_without_kid(tmp_path):
    base = {"partners": [{"id": "x", "role": "provider", "smart": {
        "jwks": {"keys": [RSA_KEY.as_dict(private=True)]}, "scopes": ["system/Task.cru"]}}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(PartnerConfigError, match="private key"):
        Partners.load(tmp_path / "p.yaml")
    key = RSA_KEY.as_dict(private=False)
    key.pop("kid")
    base["partners"][0]["smart"]["jwks"] = {"keys": [key]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(PartnerConfigError, match="kid"):
        Partners.load(tmp_path / "p.yaml")


def test_a_disabled_partner_gets_no_token_and_its_tokens_stop(gateway, tmp_path):
    client, _, app = gateway
    scoped = bearer(token_request(client, assertion()))
    assert client.post("/fhir/Task", json=task(), headers=scoped).status_code == 201
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    next(p for p in data["partners"] if p["id"] == "harbor")["disabled"] = True
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
    app.state.partners = Partners.load(tmp_path / "partners.yaml")
    assert client.post("/fhir/Task", json=task(), headers=scoped).status_code == 401
    assert client.get("/fhir/Task", headers=scoped).status_code == 401
    refused = token_request(client, assertion())
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
