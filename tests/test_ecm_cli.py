"""End to end: an 837P with good and bad claims, checked against a MIF, a roster and history;
the accepted/rejected split, and the 277CA carrying the ECM reasons."""

import json

from conftest import FIXTURES
from test_cli import run

MIXED = FIXTURES / "837p" / "ecm-mixed.x12"
REGISTRIES = ["--members", FIXTURES / "mif" / "mif-clean.csv",
              "--providers", FIXTURES / "roster" / "providers.csv",
              "--history", FIXTURES / "history"]
REJECTED = {  # claim id -> (rule, 277CA claim status)
    "MIX-E-NOMEMBER": ("ECM-MEM-002", "A7:33:IL"),
    "MIX-F-ENDED": ("ECM-MEM-003", "A7:109:IL"),
    "MIX-G-NOTASSIGNED": ("ECM-PRV-001", "A7:97:85"),
    "MIX-H-DUPFILE": ("ECM-DUP-001", "A7:78"),
    "MIX-I-DUPHISTORY": ("ECM-DUP-002", "A7:78"),
    "MIX-J-BADCODE": ("ECM-CODE-001", "A7:454"),
}
ACCEPTED = ["MIX-A-GOOD", "MIX-B-CS-GOOD", "MIX-C-GOOD", "MIX-D-WARN"]


def test_validate_applies_every_registry():
    done = run("validate", MIXED, *REGISTRIES, "--format", "json")
    assert done.returncode == 1
    files = json.loads(done.stdout)["files"]
    assert [(f["kind"], f["valid"]) for f in files] == [
        ("mif", True), ("roster", True), ("history", True), ("837p", False)]
    claims = files[-1]
    assert claims["stats"]["accepted_claims"] == 4 and claims["stats"]["rejected_claims"] == 6
    errors = sorted(f["rule"] for f in claims["findings"] if f["severity"] == "error")
    assert errors == sorted(["ECM-MEM-002", "ECM-MEM-003", "ECM-PGM-001", "ECM-PRV-001",
                             "ECM-DUP-001", "ECM-DUP-002", "ECM-CODE-001"])
    dup = next(f for f in claims["findings"] if f["rule"] == "ECM-DUP-001")
    assert dup["location"] == "ISA#1/GS#1/ST#7/2400[2]/SV101-2"
    assert "duplicates claim MIX-A-GOOD line 1" in dup["message"]
    # no member data in any message
    text = json.dumps(files)
    for secret in ("91230000A", "ALVAREZ", "Alvarez", "Marisol"):
        assert secret not in text


def test_ack_277ca_names_each_claim_and_the_ecm_reason(tmp_path):
    done = run("ack", MIXED, "-o", tmp_path, *REGISTRIES)
    assert done.returncode == 1
    text = (tmp_path / "ecm-mixed.277ca.x12").read_text()
    segments = text.split("~\n")
    statuses = {}
    for index, segment in enumerate(segments):
        if segment.startswith("TRN*2*MIX-"):
            statuses[segment.split("*")[2]] = segments[index + 1]
    assert sorted(statuses) == sorted(ACCEPTED + list(REJECTED))
    for claim in ACCEPTED:
        assert statuses[claim].startswith("STC*A2:20*")
    for claim, (rule, status) in REJECTED.items():
        assert statuses[claim].startswith(f"STC*{status}*"), claim
        assert rule in statuses[claim]
    # business rules are not syntax errors: the 999 accepts the sets
    assert "IK3" not in (tmp_path / "ecm-mixed.999.x12").read_text()
    assert run("validate", tmp_path / "ecm-mixed.277ca.x12").returncode == 0


def test_split_writes_only_the_accepted_claims(tmp_path):
    out = tmp_path / "clean.x12"
    done = run("convert", MIXED, "--to", "837p", "--envelope", "dhcs-encounters", "-o", out,
               *REGISTRIES)
    assert done.returncode == 1  # the input had errors
    assert "4 claim(s) accepted and written, 6 rejected" in done.stderr
    text = out.read_text()
    assert sorted(s.split("*")[1] for s in text.split("~\n") if s.startswith("CLM*")) == \
        sorted(ACCEPTED)
    assert "*ZZ*CALIFORNIA-DHCS*" in text
    assert run("validate", out, *REGISTRIES).returncode == 0


def test_registry_file_problems_are_findings_not_crashes(tmp_path):
    bad = tmp_path / "weird.csv"
    bad.write_text("Alpha,Beta\n1,2\n")
    done = run("validate", MIXED, "--members", bad, "--format", "json")
    files = json.loads(done.stdout)["files"]
    assert files[0]["kind"] == "mif" and files[0]["findings"][0]["rule"] == "REG-FILE-001"
    assert "Alpha" in files[0]["findings"][0]["message"]  # names the columns found
    assert done.returncode == 1


def test_validate_a_member_file_by_itself():
    done = run("validate", FIXTURES / "mif" / "mif-clean.csv", "--format", "json")
    assert done.returncode == 0
    report = json.loads(done.stdout)["files"][0]
    assert report["kind"] == "mif" and report["stats"]["rows"] == 31
    done = run("validate", FIXTURES / "mif" / "mif-defects.csv")
    assert done.returncode == 1


def test_partner_overrides_change_severity_and_turn_rules_off():
    base = json.loads(run("validate", MIXED, *REGISTRIES, "--format", "json").stdout)
    plan = json.loads(run("validate", MIXED, *REGISTRIES, "--partner", "demo-plan",
                          "--format", "json").stdout)
    rules = lambda doc: [(f["rule"], f["severity"]) for f in doc["files"][-1]["findings"]]  # noqa: E731
    assert ("ECM-CODE-004", "warning") in rules(base)
    assert ("ECM-CODE-004", "error") in rules(plan)
    assert any(r == "ECM-POF-001" for r, _ in rules(base))
    assert not any(r == "ECM-POF-001" for r, _ in rules(plan))
    assert plan["files"][-1]["stats"]["rejected_claims"] == 7  # MIX-D-WARN now rejected
    done = run("validate", MIXED, *REGISTRIES, "--partner", "nobody")
    assert done.returncode == 2
    assert "no rule overrides or plan settings for partner 'nobody' (expected " \
           "profiles/rules/overrides/nobody.yaml or profiles/plans/nobody.yaml)" in done.stderr


def test_a_plan_with_settings_and_no_overrides_is_a_partner_without_overrides(tmp_path,
                                                                               monkeypatch):
    """profiles/plans/ID.yaml alone: the default rules (not a usage error), its settings
    applied."""
    import shutil

    from gateway.paths import HOME

    for folder in ("profiles", "mappings"):
        shutil.copytree(HOME / folder, tmp_path / folder)
    (tmp_path / "profiles" / "plans" / "other-plan.yaml").write_text(
        "history_extract:\n  lookback_months: 6\n")
    monkeypatch.setenv("ECM_GATEWAY_HOME", str(tmp_path))
    base = run("validate", MIXED, *REGISTRIES, "--format", "json")
    done = run("validate", MIXED, *REGISTRIES, "--partner", "other-plan", "--format", "json")
    assert done.returncode == 1 and done.stderr == ""
    assert json.loads(done.stdout) == json.loads(base.stdout)
    done = run("validate", MIXED, *REGISTRIES, "--partner", "nobody")
    assert done.returncode == 2 and "no rule overrides or plan settings" in done.stderr
