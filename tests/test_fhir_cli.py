"""The FHIR side of the command line: `validate` (kind fhir, sniffed or forced) and `convert`
to and from FHIR through the mappings in mappings/fhir/."""

import csv
import io
import json

from conftest import FIXTURES
from test_cli import run

RESOURCES = FIXTURES / "fhir" / "resources"
MAPPINGS = FIXTURES / "fhir" / "mappings"
EXPECTED = MAPPINGS / "expected"


def _json(done):
    return json.loads(done.stdout)["files"][0]


def test_validate_sniffs_fhir_json_and_xml():
    for name in ("careplan-ecm.json", "careplan-ecm.xml", "referral-ecm.json", "task-ecm.json"):
        done = run("validate", RESOURCES / name, "--format", "json")
        assert done.returncode == 0, done.stdout
        report = _json(done)
        assert (report["kind"], report["valid"]) == ("fhir", True)


def test_validate_reports_profile_errors_at_their_fhirpath(tmp_path):
    careplan = json.loads((RESOURCES / "careplan-ecm.json").read_text())
    careplan["status"] = "bogus"
    careplan["period"] = {"start": "2025-06-01", "end": "2025-01-01"}
    path = tmp_path / "careplan.json"
    path.write_text(json.dumps(careplan))
    done = run("validate", path, "--format", "json")
    assert done.returncode == 1
    found = {(f["rule"], f["location"]) for f in _json(done)["findings"]}
    assert found == {("FHIR-PROFILE-007", "CarePlan"), ("FHIR-PROFILE-004", "CarePlan.status")}


def test_validate_malformed_fhir_is_a_finding_not_a_usage_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"resourceType": "CarePlan", "status": ')
    for extra in ((), ("--kind", "fhir")):
        done = run("validate", path, "--format", "json", *extra)
        assert done.returncode == 1, done.stderr
        assert [f["rule"] for f in _json(done)["findings"]] == ["FHIR-PARSE-001"]
        assert "Traceback" not in done.stderr


def test_convert_careplan_to_837p_gives_a_valid_encounter_file(tmp_path):
    out = tmp_path / "careplan.837"
    done = run("convert", MAPPINGS / "careplan-ecm.json", "--to", "837p", "-o", out)
    assert done.returncode == 0, done.stderr
    checked = run("validate", out, "--format", "json")
    assert checked.returncode == 0
    stats = _json(checked)["stats"]
    assert (stats["claims"], stats["lines"], stats["rejected_claims"]) == (4, 6, 0)


def test_a_careplan_with_no_completed_activity_leaves_no_837p(tmp_path):
    """Nothing to write: no empty file, the findings (info only: exit 0) and one line."""
    plan = json.loads((MAPPINGS / "careplan-ecm.json").read_text())
    for activity in plan["activity"]:
        activity["detail"]["status"] = "scheduled"
    source = tmp_path / "careplan.json"
    source.write_text(json.dumps(plan))
    out = tmp_path / "careplan.837"
    done = run("convert", source, "--to", "837p", "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1] == ("ecm-gateway: no claim to write: no completed ECM/CS activity became "
                         "an encounter line")
    assert {line.split()[1] for line in lines[:-1]} == {"FHIR-MAP-006", "FHIR-MAP-010"}
    assert all(line.startswith("info: ") for line in lines[:-1])
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def _rows(text: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:  # the day the file is produced is today's date
        row.pop("RTF Production Date")
    return rows


def test_convert_careplan_and_task_to_rtf_rows():
    for source, expected in (("careplan-ecm.json", "careplan-ecm.rtf.csv"),
                             ("task-referral-closed.json", "task-referral-closed.rtf.csv")):
        done = run("convert", MAPPINGS / source, "--to", "rtf")
        assert done.returncode == 0, done.stderr
        assert _rows(done.stdout) == _rows((EXPECTED / expected).read_text())


def test_convert_referral_and_encounters_match_the_golden_files():
    done = run("convert", MAPPINGS / "servicerequest-referral.json", "--to", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(
        (EXPECTED / "servicerequest-referral.referral.json").read_text())
    done = run("convert", FIXTURES / "837p" / "ecm-clean.x12", "--to", "fhir")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((EXPECTED / "ecm-clean.bundle.json").read_text())


def test_convert_mif_to_fhir_bundle():
    done = run("convert", MAPPINGS / "mif-members.csv", "--to", "fhir")
    assert done.returncode == 0, done.stderr
    bundle = json.loads(done.stdout)
    expected = json.loads((EXPECTED / "mif-members.bundle.json").read_text())
    assert [e["fullUrl"] for e in bundle["entry"]] == [e["fullUrl"] for e in expected["entry"]]
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {
        "Patient", "Coverage", "Condition", "EpisodeOfCare", "CareTeam", "Organization",
        "Practitioner"}


def test_convert_pairs_that_make_no_sense_are_usage_errors():
    done = run("convert", MAPPINGS / "task-referral-closed.json", "--to", "837p")
    assert done.returncode == 2
    assert done.stderr.strip() == "ecm-gateway: error: cannot convert Task to 837p; " \
        "a Task converts to: rtf"
