"""The command line's start-up: ``ecm-gateway validate`` imports only what it uses.

Issue 11 asks for a start-up under 0.3 s (bench/bench_validate.py measures it; no timing here).
What keeps it there is structural and tested here: the validate path does not import pydantic
(unless an 837P claim needs the encounter model to be judged), pydantic-settings, FastAPI, openpyxl,
SQLAlchemy, the pipeline or the tabular readers. Each check runs in a fresh interpreter, since
this test process has long imported everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT

# never on the validate path, whatever the file
NEVER = ("pydantic_settings", "fastapi", "starlette", "uvicorn", "openpyxl", "sqlalchemy",
         "celery", "redis", "rich", "fhir", "gateway.api", "gateway.pipeline",
         "gateway.conversion", "gateway.tabular", "gateway.ecm", "gateway.registry",
         "gateway.fhir", "gateway.invoice", "gateway.directory")
# only when the file needs them: the encounter model (837P claims), the envelope profiles
PYDANTIC = ("pydantic", "pydantic_core", "gateway.model.encounter", "gateway.x12.writer")

PROBE = """
import io, json, sys, contextlib
import gateway.cli as cli
args = cli._parser().parse_args(sys.argv[1:])
parsed = sorted(sys.modules)
code = None
if args.command == "validate" and "--run" in __import__("os").environ.get("PROBE", ""):
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(sys.argv[1:])
print(json.dumps({"parsed": parsed, "ran": sorted(sys.modules), "code": code}))
"""


def probe(*argv, run: bool, tmp_path) -> dict:
    env = {**os.environ, "PROBE": "--run" if run else "",
           "ECM_GATEWAY_X12_MAP_CACHE": str(tmp_path / "maps")}
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def loaded(modules: list[str], names) -> list[str]:
    return sorted({n for n in names for m in modules if m == n or m.startswith(n + ".")})


def test_parsing_validate_arguments_imports_nothing_heavy(tmp_path):
    found = probe("validate", FIXTURES / "837p" / "ecm-clean.x12", "--jobs", "2",
                  run=False, tmp_path=tmp_path)
    assert loaded(found["parsed"], NEVER + PYDANTIC + ("lxml",)) == []


@pytest.mark.parametrize("fixture", ["acks/ecm-clean.999.x12", "acks/ecm-claim-defects.277ca.x12"])
def test_validating_other_x12_never_imports_pydantic(fixture, tmp_path):
    probe("validate", FIXTURES / fixture, run=True, tmp_path=tmp_path)  # fills the map cache
    found = probe("validate", FIXTURES / fixture, run=True, tmp_path=tmp_path)
    assert found["code"] == 0
    # the compiled map comes from the cache: no lxml either
    assert loaded(found["ran"], NEVER + PYDANTIC + ("lxml",)) == []


@pytest.mark.parametrize("fixture", ["ecm-clean.x12", "ecm-claim-defects.x12",
                                     "ecm-envelope-defects.x12"])
def test_validating_837p_loads_no_more(fixture, tmp_path):
    found = probe("validate", FIXTURES / "837p" / fixture, run=True, tmp_path=tmp_path)
    assert found["code"] == (0 if fixture == "ecm-clean.x12" else 1)
    # claims that are certainly readable are judged without building the encounter model
    # (gateway/x12/claims837.py ClaimCollector._surely_readable)
    assert "gateway.model.encounter" not in found["ran"]
    # nor pydantic at all: the SNIP partner rules read the envelope profile's receiver id as
    # data (gateway/x12/envelope_profiles.py), not through the writer's settings model
    assert loaded(found["ran"], NEVER + PYDANTIC) == []


def test_a_doubtful_claim_loads_the_encounter_model(tmp_path):
    """A claim amount the shortcuts do not vouch for ("NaN") is judged by the model."""
    text = (FIXTURES / "837p" / "ecm-clean.x12").read_text()
    start = text.index("CLM*")
    fields = text[start:text.index("~", start)].split("*")
    doubtful = "*".join([fields[0], fields[1], "NaN", *fields[3:]])
    path = tmp_path / "doubtful.x12"
    path.write_text(text.replace("*".join(fields), doubtful, 1))
    found = probe("validate", path, run=True, tmp_path=tmp_path)
    assert "gateway.model.encounter" in found["ran"]
    assert loaded(found["ran"], NEVER) == []


def test_settings_read_early_agree_with_the_settings_object(tmp_path, monkeypatch):
    """gateway.paths and the map cache read ``home``/``var``/``x12_map_cache`` without
    building the pydantic settings; the values must be the same as the object's."""
    from gateway import settings

    monkeypatch.setenv("ECM_GATEWAY_VAR", str(tmp_path / "v"))
    monkeypatch.setenv("ECM_GATEWAY_X12_MAP_CACHE", "off")
    settings.reset()
    try:
        assert settings.early("var") == tmp_path / "v"
        assert settings.early("x12_map_cache") == "off"
        assert settings.early("home") == settings.current().home
        built = settings.current()
        assert (built.var, built.x12_map_cache) == (tmp_path / "v", "off")
        settings.configure(var=tmp_path / "configured")
        assert settings.early("var") == tmp_path / "configured"  # configured values win
        settings.reset()
        file = tmp_path / "settings.yaml"
        file.write_text("x12_map_cache: /somewhere\n")
        monkeypatch.delenv("ECM_GATEWAY_X12_MAP_CACHE")
        monkeypatch.setenv("ECM_GATEWAY_SETTINGS", str(file))
        assert settings.early("x12_map_cache") == "/somewhere"  # the settings file counts
        file.write_text("no_such_setting: 1\n")
        settings.reset()
        with pytest.raises(settings.SettingsError, match="no_such_setting"):
            settings.early("var")
    finally:
        settings.reset()


def test_usage_errors_of_lazily_loaded_modules_still_exit_2(tmp_path):
    """The command line names its usage errors by module (gateway/cli.py _USAGE_ERRORS), since
    it no longer imports every module up front: an unknown envelope profile is still exit 2."""
    import subprocess

    bin_ = os.path.join(os.path.dirname(sys.executable), "ecm-gateway")
    source = FIXTURES / "837p" / "ecm-clean.x12"
    done = subprocess.run([bin_, "convert", str(source), "--to", "837p", "--envelope", "nosuch",
                           "-o", str(tmp_path / "out.x12")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no envelope profile 'nosuch'" in done.stderr and "Traceback" not in done.stderr
