"""No member id in any log line, whatever the request (every endpoint, a FHIR search by CIN);
partner onboarding from the command line (token shown once, stored hashed, audited, effective
in seconds)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import servers
import yaml
from servers import ROOT

from gateway.fhir import CIN_SYSTEM
from gateway.pipeline.partners import token_hash

CIN = "98765432Z"  # CIN-shaped, sent in every path parameter and query string


def test_every_endpoint_and_a_fhir_search_by_cin_leave_no_member_id_in_the_logs(served):
    auth = served.auth("harbor")
    paths = served.client.get("/openapi.json").json()["paths"]
    assert "/fhir/{resource_type}" in paths and "/files" in paths
    called = 0
    for template, methods in paths.items():
        for method in methods:
            path = re.sub(r"\{[^}]+\}", CIN, template)
            if "{resource_type}" in template:
                path = template.replace("{resource_type}", "CarePlan")
                path = re.sub(r"\{[^}]+\}", CIN, path)
            answer = served.client.request(method.upper(), path, headers=auth, params={
                "patient.identifier": f"{CIN_SYSTEM}|{CIN}", "member": CIN})
            assert answer.status_code < 500, (method, path, answer.text)
            called += 1
    search = served.client.get("/fhir/CarePlan", headers=auth,
                               params={"patient.identifier": f"{CIN_SYSTEM}|{CIN}"})
    assert search.status_code == 200
    served.client.get(f"/fhir/Patient/{CIN}", headers=auth)
    served.client.get(f"/nowhere/{CIN}?cin={CIN}")
    assert called >= len(paths)
    text = servers.wait_for(lambda: (t := served.log_text()) and '"route": "/fhir/' in t and t,
                            10)
    assert CIN not in text
    assert "patient.identifier" not in text  # no query string at all
    access = [json.loads(line) for line in text.splitlines()
              if line.startswith("{") and '"gateway.access"' in line]
    assert {"method", "route", "status", "duration_ms"} <= set(access[-1])
    assert any(e["route"] == "/fhir/{resource_type}" for e in access)


def _cli(served, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **served.env}, cwd=ROOT)


def _status(served, token: str) -> int:
    return httpx.get(f"{served.base}/mailbox", headers={"Authorization": f"Bearer {token}"},
                     timeout=10, trust_env=False).status_code


def test_partners_add_rotate_disable(served):
    base = ["partners", "--partners", str(served.partners_file), "--store", served.url]
    added = _cli(served, *base, "add", "newbie", "--role", "provider", "--npi", "1999999993",
                 "--name", "Newbie Care")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    kept = yaml.safe_load(served.partners_file.read_text())
    entry = next(p for p in kept["partners"] if p["id"] == "newbie")
    assert entry["token_sha256"] == token_hash(token) and token not in \
        served.partners_file.read_text()
    assert oct(served.partners_file.stat().st_mode & 0o777) == "0o600"
    assert servers.wait_for(lambda: _status(served, token) == 200, 15)  # no restart
    assert _status(served, served.tokens["harbor"]) == 200  # the others keep working
    rotated = _cli(served, *base, "rotate-token", "newbie")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip().splitlines()[-1]
    assert new != token
    assert servers.wait_for(lambda: _status(served, token) == 401, 15)
    assert _status(served, new) == 200
    assert _cli(served, *base, "disable", "newbie").returncode == 0
    assert servers.wait_for(lambda: _status(served, new) == 401, 15)
    again = _cli(served, *base, "add", "newbie", "--role", "provider")
    assert again.returncode == 2 and "exists already" in again.stderr
    audit = [(e["action"], e["target"]) for e in served.store.audit_log(200)
             if e["target"] == "newbie"]
    assert audit == [("partner-disable", "newbie"), ("partner-rotate-token", "newbie"),
                     ("partner-add", "newbie")]
    assert not any(token in e["detail"] or new in e["detail"]
                   for e in served.store.audit_log(200))
