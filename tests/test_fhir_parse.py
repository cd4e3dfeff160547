"""Reading FHIR payloads: every class of bad input becomes findings with a FHIRPath, and each
maps to the exact OperationOutcome issue (severity, code, expression)."""

import json

import pytest
from conftest import FIXTURES

from gateway.fhir import RULE_SYSTEM
from gateway.fhir import parse as parse_module
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.parse import format_of, normalise, to_xml_bytes
from gateway.fhir.validate import check_payload

RESOURCES = FIXTURES / "fhir" / "resources"
CAREPLAN = json.loads((RESOURCES / "careplan-ecm.json").read_bytes())
PATIENT = json.loads((RESOURCES / "patient-ecm.json").read_bytes())
NS = 'xmlns="http://hl7.org/fhir"'


def issues(payload: bytes, fmt: str = "json", expected: str | None = None) -> list[tuple]:
    """(severity, code, expression, rule) of every issue of the payload's OperationOutcome."""
    checked = check_payload(payload, fmt, expected=expected)
    outcome = operation_outcome(checked.findings)
    return [(i["severity"], i["code"], i.get("expression", [""])[0],
             i["details"]["coding"][0]["code"]) for i in outcome["issue"]]


def careplan(**changes) -> dict:
    data = json.loads(json.dumps(CAREPLAN))
    data.update(changes)
    return data


def dumps(data: dict) -> bytes:
    return json.dumps(data).encode()


def test_the_ecm_fixtures_are_valid_in_json_and_xml():
    for name in ("careplan-ecm.json", "referral-ecm.json", "task-ecm.json", "patient-ecm.json",
                 "coverage-ecm.json", "careplan-ecm.xml"):
        payload = (RESOURCES / name).read_bytes()
        checked = check_payload(payload, format_of(None, payload))
        assert [f.rule for f in checked.findings if f.severity.value != "info"] == [], name


def test_xml_and_json_read_to_the_same_resource():
    xml = check_payload((RESOURCES / "careplan-ecm.xml").read_bytes(), "xml")
    assert xml.entries[0].data == normalise(check_payload(dumps(CAREPLAN), "json")
                                            .entries[0].model)
    assert xml.entries[0].data == CAREPLAN


def test_malformed_json():
    assert issues(b'{"resourceType": "CarePlan",', expected="CarePlan") == [
        ("fatal", "structure", "CarePlan", "FHIR-PARSE-001")]
    checked = check_payload(b'{"resourceType": "CarePlan",', "json")
    assert checked.findings[0].message == ("the body is not well-formed JSON: Expecting "
                                           "property name enclosed in double quotes at line 1 "
                                           "column 29")


@pytest.mark.parametrize("body", [b'{"resourceType": "Patient", "x": NaN}', b"\xff\xfe{}",
                                  b"[" * 5000 + b"]" * 5000,
                                  b'{"a":' * 100 + b"1" + b"}" * 100])
def test_json_that_is_not_a_resource_document(body):
    assert issues(body) == [("fatal", "structure", "Resource", "FHIR-PARSE-001")]


def test_json_array_and_empty_body():
    assert issues(b"[1, 2]") == [("fatal", "structure", "Resource", "FHIR-PARSE-009")]
    assert issues(b"  \n") == [("fatal", "required", "Resource", "FHIR-PARSE-008")]


def test_malformed_xml():
    assert issues(f"<CarePlan {NS}><status value='active'/>".encode(), "xml") == [
        ("fatal", "structure", "Resource", "FHIR-PARSE-002")]


def test_xml_with_a_doctype_or_entities_is_refused_and_nothing_is_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE CarePlan [<!ENTITY x SYSTEM "file://{secret}">]>'
           f'<CarePlan {NS}><status value="&x;"/></CarePlan>').encode()
    checked = check_payload(xxe, "xml")
    assert [(f.rule, f.location) for f in checked.findings] == [("FHIR-PARSE-003", "Resource")]
    assert "top secret" not in json.dumps(operation_outcome(checked.findings))
    assert issues(xxe, "xml") == [("fatal", "security", "Resource", "FHIR-PARSE-003")]
    bomb = b'<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><Patient ' + \
        NS.encode() + b'><id value="&b;"/></Patient>'
    assert issues(bomb, "xml")[0][3] == "FHIR-PARSE-003"


def test_xml_in_a_wrong_namespace():
    assert issues(b'<CarePlan xmlns="http://example.org/fhir"><status value="active"/>'
                  b'</CarePlan>', "xml") == [("error", "structure", "CarePlan", "FHIR-PARSE-004")]
    assert issues(b'<CarePlan><status value="active"/></CarePlan>', "xml") == [
        ("error", "structure", "CarePlan", "FHIR-PARSE-004")]
    nested = (RESOURCES / "careplan-ecm.xml").read_text().replace(
        '<intent value="plan"/>', '<intent xmlns="urn:other" value="plan"/>')
    assert ("error", "structure", "CarePlan.intent", "FHIR-PARSE-004") in issues(
        nested.encode(), "xml")


def test_unknown_resource_type_top_level_in_a_bundle_and_contained():
    assert issues(b'{"resourceType": "Careplan"}') == [
        ("error", "structure", "Resource", "FHIR-PARSE-005")]
    assert issues(f'<Careplan {NS}/>'.encode(), "xml") == [
        ("error", "structure", "Resource", "FHIR-PARSE-005")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": PATIENT}, {"resource": {"resourceType": "Frobnicate"}},
        {"resource": careplan(contained=[{"resourceType": "Nope"}])}]}
    assert issues(dumps(bundle)) == [
        ("error", "structure", "Bundle.entry[1].resource", "FHIR-PARSE-005"),
        ("error", "structure", "Bundle.entry[2].resource.contained[0]", "FHIR-PARSE-005")]
    assert issues(b'{"status": "active"}') == [
        ("error", "structure", "Resource", "FHIR-PARSE-006")]


def test_unknown_elements_in_json_and_xml():
    data = careplan()
    data["activity"][0]["detail"]["statusx"] = "done"
    assert issues(dumps(data)) == [
        ("error", "structure", "CarePlan.activity[0].detail.statusx", "FHIR-STRUCT-002")]
    xml = (RESOURCES / "careplan-ecm.xml").read_text().replace(
        '<intent value="plan"/>', '<intent value="plan"/><bogus value="1"/>')
    assert issues(xml.encode(), "xml") == [("error", "structure", "CarePlan.bogus",
                                            "FHIR-STRUCT-002")]


def test_pydantic_errors_become_fhirpath_locations_in_json_and_xml():
    data = careplan()
    del data["status"]
    data["activity"][1]["detail"]["scheduledPeriod"]["start"] = "2026-13-01"
    assert issues(dumps(data)) == [
        ("error", "required", "CarePlan.status", "FHIR-STRUCT-001"),
        ("error", "value", "CarePlan.activity[1].detail.scheduledPeriod.start",
         "FHIR-STRUCT-003")]
    xml = (RESOURCES / "careplan-ecm.xml").read_text().replace(
        '<status value="active"/>', "").replace('"2026-10-01"', '"2026-13-01"')
    assert issues(xml.encode(), "xml") == issues(dumps(data))


def test_an_element_repeated_in_xml_that_allows_one():
    xml = (RESOURCES / "careplan-ecm.xml").read_text().replace(
        '<intent value="plan"/>', '<intent value="plan"/><intent value="order"/>')
    assert issues(xml.encode(), "xml") == [("error", "structure", "CarePlan.intent",
                                            "FHIR-STRUCT-004")]


def test_oversized_body_and_too_many_entries(monkeypatch):
    monkeypatch.setattr(parse_module, "MAX_BODY_BYTES", 100)
    assert issues(b" " * 101, expected="Patient") == [
        ("fatal", "too-long", "Patient", "FHIR-PARSE-007")]
    monkeypatch.setattr(parse_module, "MAX_BUNDLE_ENTRIES", 3)
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"resource": {"resourceType": "Patient"}}] * 4}
    assert issues(json.dumps(bundle, separators=(",", ":")).encode()[:100]) != []
    monkeypatch.setattr(parse_module, "MAX_BODY_BYTES", 10_000)
    assert issues(dumps(bundle)) == [("fatal", "too-costly", "Bundle.entry", "FHIR-PARSE-011")]


def test_a_resource_of_another_type_than_expected():
    assert issues((RESOURCES / "patient-ecm.json").read_bytes(), expected="CarePlan") == [
        ("error", "invalid", "Patient", "FHIR-PARSE-010")]


def test_messages_never_echo_member_values():
    data = careplan()
    data["subject"]["identifier"]["value"] = "SECRETCIN"
    data["period"]["start"] = "Ondine Quill"
    text = json.dumps(operation_outcome(check_payload(dumps(data), "json").findings))
    assert "SECRETCIN" not in text and "Ondine" not in text


def test_outcome_issue_shape():
    checked = check_payload(b"{", "json", expected="Task")
    [issue] = operation_outcome(checked.findings)["issue"]
    assert issue == {
        "severity": "fatal", "code": "structure",
        "details": {"coding": [{"system": RULE_SYSTEM, "code": "FHIR-PARSE-001"}],
                    "text": "the body is not well-formed JSON: Expecting property name "
                            "enclosed in double quotes at line 1 column 2"},
        "diagnostics": "FHIR R4 JSON format (https://hl7.org/fhir/R4/json.html)",
        "expression": ["Task"]}
    assert operation_outcome([])["issue"][0]["severity"] == "information"


def test_a_10000_entry_bundle_is_checked_entry_by_entry(monkeypatch):
    """Bounded memory: fhir.resources never sees the Bundle with its entries' resources (the
    shell is validated without them, each resource on its own and then dropped), and the
    findings of the last entry carry its index."""
    validated = []
    real = parse_module.validate_one

    def spy(data, path, col, expected=None):
        entry = data.get("entry") or []
        validated.append((path, sum(1 for e in entry if "resource" in e)))
        return real(data, path, col, expected)

    monkeypatch.setattr(parse_module, "validate_one", spy)
    entries = [{"fullUrl": f"urn:uuid:{i:032x}",
                "resource": {"resourceType": "Patient", "gender": "female",
                             "identifier": [{"system": "https://ecm-gateway.example.org/fhir/"
                                             "sid/medi-cal-cin", "value": f"9{i:07d}A"}]}}
               for i in range(10_000)]
    entries[9999]["resource"]["birthDate"] = "1990-02-31"
    entries[4321]["resource"]["gender"] = "bogus"
    payload = dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    seen = []
    checked = check_payload(payload, "json", keep=False, on_entry=lambda e: seen.append(e.index))
    assert seen == list(range(10_000))
    assert checked.entries == []
    assert validated[0] == ("Bundle", 0)  # the shell, without any resource
    assert len(validated) == 10_001 and all(n == 0 for _, n in validated)
    # name and birthDate are must-support; entry 9999 (broken structure) gets no profile check
    assert len([f for f in checked.findings if f.rule == "FHIR-PROFILE-006"]) == 19_998
    assert [(f.rule, f.location) for f in checked.findings if f.is_error] == [
        ("FHIR-PROFILE-004", "Bundle.entry[4321].resource.gender"),
        ("FHIR-STRUCT-003", "Bundle.entry[9999].resource.birthDate")]


def test_resources_serialise_to_xml_in_the_fhir_namespace():
    xml = to_xml_bytes(CAREPLAN)
    assert xml.startswith(b"<?xml") and b'<CarePlan xmlns="http://hl7.org/fhir">' in xml
    assert check_payload(xml, "xml").entries[0].data == CAREPLAN
