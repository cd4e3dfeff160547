"""The ECM profiles (profiles/fhir/) and the ECM rules on FHIR: every constraint fires on a
resource that breaks it and stays quiet on the valid fixture; the official R4 examples pass the
base structure and break exactly the ECM rules listed here."""

import json
import shutil

import pytest
from conftest import FIXTURES, ROOT

from gateway.fhir import CIN_SYSTEM, ECM_PROFILES, HCPCS_MODIFIER_EXT
from gateway.fhir.parse import Collector
from gateway.fhir.profiles import ProfileSet, load_profiles
from gateway.fhir.report import looks_like_fhir, validate_fhir_file
from gateway.fhir.validate import check_payload

RESOURCES = FIXTURES / "fhir" / "resources"


def fixture(name: str) -> dict:
    return json.loads((RESOURCES / name).read_bytes())


def findings_of(data: dict) -> list[tuple[str, str]]:
    """(rule, location) of the error and warning findings."""
    checked = check_payload(json.dumps(data).encode(), "json")
    return [(f.rule, f.location) for f in checked.findings if f.severity.value != "info"]


def test_the_profiles_load_with_canonical_urls_and_compiled_invariants():
    profiles = load_profiles()
    assert set(profiles.profiles) == set(ECM_PROFILES.values())
    careplan = profiles.profiles[ECM_PROFILES["CarePlan"]]
    keys = [i.key for r in careplan.rules for i in r.invariants]
    assert keys == ["ecm-cp-1", "ecm-cp-2", "ecm-cp-3"]
    assert all(callable(i.evaluate) for r in careplan.rules for i in r.invariants)
    assert profiles.valuesets["https://ecm-gateway.example.org/fhir/ValueSet/ecm-pof"].has(
        "https://ecm-gateway.example.org/fhir/CodeSystem/ecm-pof", "HOMELESS")


def _set(data: dict, path: str, value) -> dict:
    """Set (or with value None delete) a dotted path like activity.0.detail.status."""
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


REFERRAL = [
    ("subject.identifier.value", "9100000B", [("FHIR-PROFILE-007", "ServiceRequest")]),
    ("subject.identifier.system", "urn:other", [("FHIR-PROFILE-007", "ServiceRequest")]),
    ("status", "bogus", [("FHIR-PROFILE-004", "ServiceRequest.status")]),
    ("intent", "option", [("FHIR-PROFILE-004", "ServiceRequest.intent")]),
    ("priority", None, [("FHIR-PROFILE-001", "ServiceRequest.priority")]),
    ("priority", "stat", [("FHIR-PROFILE-004", "ServiceRequest.priority")]),
    ("reasonCode", None, [("FHIR-PROFILE-001", "ServiceRequest.reasonCode")]),
    ("reasonCode.0.coding.0.code", "LONELY", [("FHIR-PROFILE-004",
                                                "ServiceRequest.reasonCode[0]")]),
    ("requester", None, [("FHIR-PROFILE-001", "ServiceRequest.requester")]),
]
CAREPLAN = [
    ("subject", {"reference": "Patient/p1"}, [("FHIR-PROFILE-007", "CarePlan")]),
    ("contained.0.participant.0.role.0.coding.0.code", "CM", [("FHIR-PROFILE-007",
                                                               "CarePlan")]),
    ("contained.0.participant.0.member", None, [("FHIR-PROFILE-007", "CarePlan")]),
    ("period.end", "2026-08-31", [("FHIR-PROFILE-007", "CarePlan")]),
    ("status", "bogus", [("FHIR-PROFILE-004", "CarePlan.status")]),
    ("intent", "directive", [("FHIR-PROFILE-004", "CarePlan.intent")]),
    ("period", None, [("FHIR-PROFILE-001", "CarePlan.period")]),
    ("period.start", None, [("FHIR-PROFILE-001", "CarePlan.period.start")]),
    ("careTeam", None, [("FHIR-PROFILE-001", "CarePlan.careTeam")]),
    ("careTeam", [{"reference": "#team"}, {"reference": "CareTeam/b"}],
     [("FHIR-PROFILE-002", "CarePlan.careTeam")]),
    ("goal", None, [("FHIR-PROFILE-001", "CarePlan.goal")]),
    ("activity.1.detail", None, [("FHIR-PROFILE-001", "CarePlan.activity[1].detail")]),
    ("activity.1.detail.code", None, [("FHIR-PROFILE-001",
                                       "CarePlan.activity[1].detail.code")]),
    ("activity.1.detail.code.coding.0.code", "99213",
     [("FHIR-PROFILE-004", "CarePlan.activity[1].detail.code")]),
    ("activity.1.detail.status", "done", [("FHIR-PROFILE-004",
                                           "CarePlan.activity[1].detail.status")]),
    # ECM rules on completed activities (performed services)
    ("activity.0.detail.extension.0.valueCode", "U6",
     [("FHIR-ECM-001", "CarePlan.activity[0].detail.code")]),
    ("activity.0.detail.scheduledPeriod.start", "2021-06-01",
     [("FHIR-ECM-001", "CarePlan.activity[0].detail.code")]),
    ("activity.0.detail.scheduledPeriod", None,
     [("FHIR-ECM-002", "CarePlan.activity[0].detail")]),
]
TASK = [
    ("statusReason", None, [("FHIR-PROFILE-007", "Task")]),
    ("focus.reference", "Patient/p1", [("FHIR-PROFILE-007", "Task")]),
    ("status", "draft", [("FHIR-PROFILE-004", "Task.status")]),
    ("intent", "plan", [("FHIR-PROFILE-003", "Task.intent")]),
    ("focus", None, [("FHIR-PROFILE-007", "Task"), ("FHIR-PROFILE-001", "Task.focus")]),
    ("lastModified", None, [("FHIR-PROFILE-001", "Task.lastModified")]),
]
PATIENT = [
    ("identifier.0.system", "urn:mrn", [("FHIR-PROFILE-007", "Patient")]),
    ("identifier.0.value", "91000003", [("FHIR-PROFILE-007", "Patient")]),
    ("identifier", None, [("FHIR-PROFILE-007", "Patient"),
                          ("FHIR-PROFILE-001", "Patient.identifier")]),
    ("gender", "f", [("FHIR-PROFILE-004", "Patient.gender")]),
]
COVERAGE = [
    ("subscriberId", "X1", []),  # not a CIN, but the beneficiary identifier is one
    ("status", "inactive", [("FHIR-PROFILE-004", "Coverage.status")]),
]
CASES = ([("referral-ecm.json", *c) for c in REFERRAL] + [("careplan-ecm.json", *c)
                                                          for c in CAREPLAN]
         + [("task-ecm.json", *c) for c in TASK] + [("patient-ecm.json", *c) for c in PATIENT]
         + [("coverage-ecm.json", *c) for c in COVERAGE])


@pytest.mark.parametrize("name", ["referral-ecm.json", "careplan-ecm.json", "task-ecm.json",
                                  "patient-ecm.json", "coverage-ecm.json"])
def test_the_valid_fixtures_break_no_constraint(name):
    assert findings_of(fixture(name)) == []


@pytest.mark.parametrize("name, path, value, expected", CASES,
                         ids=[f"{c[0].split('-')[0]}:{c[1]}={c[2]}" for c in CASES])
def test_each_constraint_fires(name, path, value, expected):
    assert findings_of(_set(fixture(name), path, value)) == expected


def test_invariant_messages_name_the_key_and_the_rule():
    data = _set(fixture("task-ecm.json"), "statusReason", None)
    [finding] = [f for f in check_payload(json.dumps(data).encode(), "json").findings
                 if f.is_error]
    assert finding.message == ("ecm-task-1: a rejected, cancelled or completed referral says "
                               "why (statusReason)")
    assert finding.severity.value == "error"


def test_the_cin_may_come_from_a_contained_patient():
    data = fixture("referral-ecm.json")
    data["contained"] = [{"resourceType": "Patient", "id": "m",
                          "identifier": [{"system": CIN_SYSTEM, "value": "91000002B"}]}]
    data["subject"] = {"reference": "#m"}
    assert findings_of(data) == []


def test_coverage_needs_a_cin_somewhere():
    data = fixture("coverage-ecm.json")
    data["subscriberId"] = "X1"
    data["beneficiary"] = {"reference": "Patient/p1"}
    assert findings_of(data) == [("FHIR-PROFILE-007", "Coverage")]


def test_task_states_that_need_no_reason():
    for status in ("requested", "accepted", "in-progress"):
        data = _set(fixture("task-ecm.json"), "statusReason", None)
        data["status"] = status
        assert findings_of(data) == [], status


def test_must_support_is_information():
    checked = check_payload((RESOURCES / "task-ecm.json").read_bytes(), "json")
    assert [(f.rule, f.severity.value, f.location, f.message) for f in checked.findings] == [
        ("FHIR-PROFILE-006", "info", "Task.owner",
         "Task.owner is must-support in ECM referral status (closed loop) and is not present")]


def test_profile_selection_by_meta_profile():
    data = fixture("patient-ecm.json")
    data["meta"] = {"profile": ["http://example.org/StructureDefinition/other"]}
    assert findings_of(data) == [("FHIR-PROFILE-009", "Patient.meta.profile")]
    data["meta"] = {"profile": [ECM_PROFILES["Patient"] + "|1.0.0"]}
    assert findings_of(data) == []


def test_a_completed_activity_with_two_modifiers_in_any_order_is_an_ecm_service():
    data = fixture("careplan-ecm.json")
    data["activity"][0]["detail"]["extension"] = [
        {"url": HCPCS_MODIFIER_EXT, "valueCode": "GQ"},
        {"url": HCPCS_MODIFIER_EXT, "valueCode": "U2"}]
    assert findings_of(data) == []


def test_xml_gets_the_same_profile_findings():
    xml = (RESOURCES / "careplan-ecm.xml").read_text().replace(
        '<code value="LCM"/>', '<code value="CM"/>')
    checked = check_payload(xml.encode(), "xml")
    assert [(f.rule, f.location) for f in checked.findings] == [("FHIR-PROFILE-007",
                                                                  "CarePlan")]


def test_generic_checks_pattern_max_extensible_and_warning_invariants(tmp_path):
    """The validator on a StructureDefinition made for the test: patternCodeableConcept,
    max, an extensible binding and a warning-level invariant."""
    folder = tmp_path / "fhir"
    folder.mkdir()
    for vs in (ROOT / "profiles" / "fhir").glob("ValueSet-*.json"):
        shutil.copy(vs, folder)
    sd = {"resourceType": "StructureDefinition", "url": "http://t/sd", "name": "T",
          "title": "Test profile", "kind": "resource", "type": "ServiceRequest",
          "differential": {"element": [
              {"path": "ServiceRequest", "constraint": [
                  {"key": "t-1", "severity": "warning", "human": "has a note",
                   "expression": "note.exists()"}]},
              {"path": "ServiceRequest.category", "max": "1", "patternCodeableConcept": {
                  "coding": [{"system": "http://snomed.info/sct", "code": "306206005"}]}},
              {"path": "ServiceRequest.reasonCode", "binding": {
                  "strength": "extensible",
                  "valueSet": "https://ecm-gateway.example.org/fhir/ValueSet/ecm-pof"}}]}}
    (folder / "StructureDefinition-t.json").write_text(json.dumps(sd))
    profiles = ProfileSet(folder, ROOT / "profiles" / "codesets")
    data = fixture("referral-ecm.json")
    data["category"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
                        {"coding": [{"system": "http://snomed.info/sct", "code": "306206005",
                                     "display": "Referral to service"}]}]
    data["reasonCode"][0]["coding"][0]["code"] = "OTHER"
    col = Collector()
    profiles.validate(data, col, "ServiceRequest", profiles.profiles["http://t/sd"])
    assert [(f.rule, f.severity.value, f.location) for f in col.findings] == [
        ("FHIR-PROFILE-008", "warning", "ServiceRequest"),
        ("FHIR-PROFILE-002", "error", "ServiceRequest.category"),
        ("FHIR-PROFILE-003", "error", "ServiceRequest.category[0]"),
        ("FHIR-PROFILE-005", "warning", "ServiceRequest.reasonCode[0]")]


# -- the official R4 examples ------------------------------------------------------------------

EXAMPLES = {
    "CarePlan-example.json": [
        ("FHIR-PROFILE-007", "CarePlan"), ("FHIR-PROFILE-007", "CarePlan"),
        ("FHIR-PROFILE-001", "CarePlan.period.start"),
        ("FHIR-PROFILE-004", "CarePlan.activity[0].detail.code")],
    "CarePlan-f001.json": [
        ("FHIR-PROFILE-007", "CarePlan"), ("FHIR-PROFILE-007", "CarePlan"),
        ("FHIR-PROFILE-004", "CarePlan.activity[0].detail.code")],
    "ServiceRequest-example.json": [
        ("FHIR-PROFILE-007", "ServiceRequest"), ("FHIR-PROFILE-001", "ServiceRequest.priority"),
        ("FHIR-PROFILE-001", "ServiceRequest.reasonCode"),
        ("FHIR-PROFILE-001", "ServiceRequest.requester")],
    "ServiceRequest-physiotherapy.json": [
        ("FHIR-PROFILE-007", "ServiceRequest"), ("FHIR-PROFILE-001", "ServiceRequest.priority"),
        ("FHIR-PROFILE-001", "ServiceRequest.reasonCode")],
    "Task-example1.json": [],
    "Task-example3.json": [("FHIR-PROFILE-007", "Task"), ("FHIR-PROFILE-004", "Task.status")],
    "Patient-example.json": [("FHIR-PROFILE-007", "Patient")],
    "Patient-pat1.json": [("FHIR-PROFILE-007", "Patient")],
    "Coverage-9876B1.json": [("FHIR-PROFILE-007", "Coverage")],
    "Coverage-SP1234.json": [("FHIR-PROFILE-007", "Coverage")],
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_official_r4_examples_parse_and_break_only_the_ecm_rules(name):
    path = RESOURCES / "r4-examples" / name
    assert looks_like_fhir(path.read_bytes()[:4096])
    report = validate_fhir_file(path)
    assert not any(f.rule.startswith(("FHIR-PARSE", "FHIR-STRUCT")) for f in report.findings)
    assert [(f.rule, f.location) for f in report.findings
            if f.severity.value != "info"] == EXAMPLES[name]
    assert report.stats["resources"] == 1 and report.kind == "fhir"
    assert report.valid is (EXAMPLES[name] == [])


def test_modifiers_and_dates_in_the_other_forms_the_mappings_read():
    data = fixture("careplan-ecm.json")
    detail = data["activity"][0]["detail"]
    detail["extension"] = [{"url": "https://ecm-gateway.example.org/fhir/StructureDefinition/"
                                   "performed-date", "valueDateTime": "2026-09-12T10:00:00Z"}]
    del detail["scheduledPeriod"]
    detail["code"]["coding"].append({"system": "https://ecm-gateway.example.org/fhir/"
                                               "CodeSystem/hcpcs-modifier", "code": "U1"})
    assert findings_of(data) == []
    detail["code"]["coding"][1]["code"] = "U6"
    assert findings_of(data) == [("FHIR-ECM-001", "CarePlan.activity[0].detail.code")]
