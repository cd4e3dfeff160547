"""Deployment: the container image's default command starts a working gateway from the
documented partners path (ECM_GATEWAY_PARTNERS=/config/partners.yaml), a clear error names that
path when the file is absent, and the compose file's mounted config folder exists with a
sample that loads. (The image itself is not built here: its command and environment are read
from the Dockerfile and run as the image would run them.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from fastapi.testclient import TestClient

from gateway.cli import main
from gateway.pipeline.partners import Partners


def _dockerfile() -> tuple[dict[str, str], list[str]]:
    env, cmd, lines = {}, [], (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in lines.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
        elif line.startswith("CMD "):
            cmd = json.loads(line[4:])
    return env, cmd


def _as_the_image(tmp_path, monkeypatch) -> tuple[list[str], Path]:
    """The image's command and environment, with /data and /config under ``tmp_path``."""
    env, cmd = _dockerfile()
    assert env["ECM_GATEWAY_PARTNERS"] == "/config/partners.yaml"
    assert cmd[0] == "serve"
    for key, value in env.items():
        if key.startswith("ECM_GATEWAY_") and key != "ECM_GATEWAY_HOME":
            monkeypatch.setenv(key, value.replace("/config", str(tmp_path / "config"))
                               .replace("/data", str(tmp_path / "data")))
    args = [a.replace("/data", str(tmp_path / "data")) for a in cmd]
    return args, tmp_path / "config" / "partners.yaml"


def test_without_a_partner_file_the_image_says_where_it_looked(tmp_path, monkeypatch, capsys):
    args, expected = _as_the_image(tmp_path, monkeypatch)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"no trading-partner file at {expected} (ECM_GATEWAY_PARTNERS)" in err
    assert "deploy/config/partners.yaml is a sample" in err


def test_with_the_sample_mounted_the_image_serves(tmp_path, monkeypatch):
    args, target = _as_the_image(tmp_path, monkeypatch)
    target.parent.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "config" / "partners.yaml", target)
    started = {}

    def run(server, *args, **kwargs):  # uvicorn.Server.run: the app is not served here
        started.update(app=server.config.app, host=server.config.host,
                       port=server.config.port)

    monkeypatch.setattr("uvicorn.Server.run", run)
    assert main(args) == 0
    assert (started["host"], started["port"]) == ("0.0.0.0", 8080)
    with TestClient(started["app"]) as client:
        assert client.get("/healthz").status_code == 200
        token = {"Authorization": "Bearer change-me-plan"}
        assert client.get("/mailbox", headers=token).status_code == 200
    assert (tmp_path / "data" / "gateway.sqlite").is_file()  # the store under /data


def test_the_compose_config_folder_exists_with_a_sample_that_loads():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    volumes = compose["x-gateway"]["volumes"]
    assert "./config:/config:ro" in volumes
    sample = ROOT / "deploy" / "config" / "partners.yaml"
    partners = Partners.load(sample)
    assert {p.role for p in partners.partners.values()} == {"plan", "provider", "state"}
    plan = partners.partners["sample-plan"]
    assert (plan.plan_code, plan.county_code, plan.test_mode) == ("SAMPLEHP1", "034", True)
    assert "--partners ${PARTNERS:-/config/partners.yaml}" in \
        " ".join(compose["services"]["worker"]["command"])


@pytest.mark.parametrize("argv", [["serve"], ["serve", "--partners", "nowhere.yaml"]])
def test_serve_names_what_is_missing(argv, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("ECM_GATEWAY_PARTNERS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ("ECM_GATEWAY_PARTNERS" in err) if len(argv) == 1 else ("nowhere.yaml (--partners)"
                                                                   in err)
