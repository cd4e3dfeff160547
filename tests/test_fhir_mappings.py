"""FHIR mappings (mappings/fhir/*.yaml, gateway/fhir/mapping): golden outputs for every mapping,
exact findings for bad input, every FHIR output parsed by fhir.resources R4B, converted 837P
through the project's X12 validator and the ECM rules, and round trips."""

import copy
import io
import json
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from conftest import FIXTURES
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.conversion import canonical_to_837p
from gateway.ecm.rules import EncounterRules
from gateway.fhir.mapping import (
    careplan_to_encounters,
    careplan_to_rtf,
    encounters_to_bundle,
    mif_file_to_bundle,
    mif_to_bundle,
    servicerequest_to_referral,
    task_to_rtf,
    write_encounter_bundle,
    x12_to_bundle,
)
from gateway.fhir.mapping.convert import (
    FHIR_TARGETS,
    FhirConversionUsageError,
    convert_fhir,
)
from gateway.fhir.mapping.engine import (
    FieldSpec,
    MappingSpecError,
    compiled,
    field_specs,
    load_spec,
    location_of,
    render,
    stable_uuid,
)
from gateway.fhir.mapping.referral import add_working_days
from gateway.registry.load import load_registries
from gateway.registry.store import Registry
from gateway.tabular import read_table
from gateway.x12.claims837 import ClaimCollector
from gateway.x12.reader import X12Reader
from gateway.x12.validate import validate_x12
from gateway.x12.writer import ControlNumbers, envelope_settings

HERE = FIXTURES / "fhir" / "mappings"
EXPECTED = HERE / "expected"
sys.path.insert(0, str(HERE))
from make_expected import GOLDEN, convert

SETTINGS = envelope_settings("plan-default")


def load(name: str) -> dict:
    return json.loads((HERE / name).read_text())


def rules_with_registries() -> EncounterRules:
    registry = Registry()
    load_registries(registry, [FIXTURES / "mif" / "mif-clean.csv"],
                    [FIXTURES / "roster" / "providers.csv"], [FIXTURES / "history"])
    return EncounterRules(registry)


def shown(findings) -> list[tuple[str, str, str]]:
    return [(f.rule, f.location, f.message) for f in findings]


def parses_as_r4(data: dict) -> None:
    get_fhir_model_class(data["resourceType"]).model_validate(data)


def encounters_of(x12: str):
    found = []
    with X12Reader(io.BytesIO(x12.encode())) as reader:
        collector = ClaimCollector(reader.delimiters, found.append)
        for seg in reader:
            collector.feed(seg)
        collector.finish()
    return [claim.encounter for claim in found]


# -- golden files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("source,target,name", GOLDEN, ids=[g[2] for g in GOLDEN])
def test_every_mapping_gives_its_golden_output(source, target, name):
    assert convert(source, target) == (EXPECTED / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [g[2] for g in GOLDEN if g[2].endswith(".json")
                                  and "bundle" in g[2]])
def test_every_fhir_output_parses_as_r4(name):
    bundle = json.loads((EXPECTED / name).read_text())
    parses_as_r4(bundle)
    assert bundle["entry"] and all(e["fullUrl"].startswith("urn:uuid:")
                                   for e in bundle["entry"])


@pytest.mark.parametrize("name", [g[2] for g in GOLDEN if g[2].endswith(".x12")])
def test_every_converted_837p_passes_the_x12_validator(name):
    result = validate_x12((EXPECTED / name).read_bytes())
    assert shown(result.findings) == []
    assert len(result.claims) >= 1


@pytest.mark.parametrize("name", [g[2] for g in GOLDEN if g[2].endswith(".rtf.csv")])
def test_every_rtf_output_reads_back_in_the_default_rtf_layout(name):
    result = read_table(EXPECTED / name, "rtf")
    assert result.layout == "default"
    assert shown(result.findings) == []
    assert result.rows_accepted == 1


# -- CarePlan → encounters → 837P ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["careplan-ecm.json", "careplan-defects.json",
                                  "careplan-variants.json"])
def test_the_rules_on_a_careplans_claims_mapped_before_give_what_mapping_again_gives(name):
    """careplan_to_encounters(claims=careplan_claims(...)) — the routing's queued run reusing
    its create's dry-run mapping — answers exactly what mapping the CarePlan again does, with
    the code-set rules and with a fill; the rules leave the mapped claims as they were."""
    from gateway.fhir.mapping.careplan import careplan_claims

    resource = load(name)
    fill = {"member_last_name": "ALVAREZ", "member_first_name": "ROSA",
            "billing_name": "HARBOR ECM", "billing_npi": "1234567893"}
    for given_fill in (None, fill):
        claims = careplan_claims(resource, None, None, given_fill)
        before = copy.deepcopy(claims)
        for _ in range(2):  # the dry run's rules, then the run's
            assert careplan_to_encounters(resource, rules=EncounterRules(None),
                                          claims=claims) == \
                careplan_to_encounters(resource, rules=EncounterRules(None), fill=given_fill)
        assert claims == before


def test_careplan_completed_ecm_activities_become_one_claim_per_day():
    encounters, findings = careplan_to_encounters(load("careplan-ecm.json"))
    assert shown(findings) == [
        ("FHIR-MAP-006", "CarePlan.activity[6].detail.status",
         "activity is not reported as an encounter line: its status is not completed")]
    claims = [(e.claim.id, [(line.procedure_code, line.modifiers, line.units, line.charge,
                             line.service_date, line.service_date_end,
                             line.place_of_service) for line in e.claim.lines])
              for e in encounters]
    assert claims == [
        ("cp-alvarez-2025-20250602",
         [("G9008", ["U1"], 1, 0, date(2025, 6, 2), date(2025, 6, 5), None)]),
        ("cp-alvarez-2025-20250610",
         [("G9008", ["U1"], 1, 0, date(2025, 6, 10), None, None),
          ("G9008", ["U1", "GQ"], 2, 50, date(2025, 6, 10), None, None)]),
        ("cp-alvarez-2025-20250617",
         [("G9012", ["U8"], 1, 0, date(2025, 6, 17), None, None),
          ("H0043", ["U6"], 1, 0, date(2025, 6, 17), None, "27")]),
        ("cp-alvarez-2025-20250620",
         [("G9008", ["U1"], 1, 0, date(2025, 6, 20), None, None)]),
    ]
    first = encounters[0]
    assert (first.member.cin, first.member.last_name, first.member.gender,
            first.billing_provider.npi, first.billing_provider.tin,
            first.billing_provider.address.postal_code, first.claim.diagnosis_codes,
            first.claim.prior_authorization, first.claim.place_of_service,
            first.claim.lines[0].rendering_provider.npi, first.payer.id) == (
        "91230000A", "ALVAREZ", "F", "1234500001", "941200000", "925011234", ["Z5900"],
        "AUTH20250601", "99", "1234506008", "DEMOPLAN")


def test_careplan_encounters_pass_the_ecm_rules_with_the_registries():
    rules = rules_with_registries()
    encounters, findings = careplan_to_encounters(load("careplan-ecm.json"), rules=rules)
    # assignment, provider roster, programs and history duplicates pass; the POF evidence
    # check only warns (the fixture history has no SMI/SUD events for the member)
    # no CS registry given: the CS rules are said not to run (once, as for an 837P or invoice)
    assert [(f.rule, f.severity.value) for f in findings] == [
        ("ECM-REG-001", "info"), ("FHIR-MAP-006", "info"), ("ECM-POF-001", "warning")]
    assert findings[0].message == ("Community Supports authorization rules not applied: no CS "
                                   "authorization file or MIF CS columns given or applied")
    assert len(encounters) == 4


def test_the_rules_a_careplan_bundle_cannot_run_are_said_once():
    """A Bundle of two CarePlans: one ECM-REG-001 per missing registry for the call; none
    without registries (the code-set rules alone) or when the caller said it already."""
    plan = load("careplan-ecm.json")
    other = {**copy.deepcopy(plan), "id": "cp-other"}
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": plan}, {"resource": other}]}
    _, findings = careplan_to_encounters(bundle, rules=rules_with_registries())
    assert [f.rule for f in findings].count("ECM-REG-001") == 1
    _, findings = careplan_to_encounters(bundle, rules=rules_with_registries(), notes=False)
    assert "ECM-REG-001" not in [f.rule for f in findings]
    _, findings = careplan_to_encounters(bundle)
    assert "ECM-REG-001" not in [f.rule for f in findings]


def test_careplan_without_a_diagnosis_gets_the_plan_default():
    plan = load("careplan-ecm.json")
    del plan["addresses"]
    encounters, _ = careplan_to_encounters(plan)
    assert {tuple(e.claim.diagnosis_codes) for e in encounters} == {("Z7189",)}


def test_careplan_modifier_forms_and_bundle_references_are_read():
    encounters, findings = careplan_to_encounters(load("careplan-variants.json"))
    assert findings == []
    assert [(line.procedure_code, line.modifiers, line.service_date)
            for e in encounters for line in e.claim.lines] == [
        ("G9008", ["U1"], date(2025, 6, 24)), ("G9008", ["U1", "GQ"], date(2025, 6, 24))]
    assert encounters[0].member.cin == "91230000A"


def test_careplan_activity_defects_are_reported_and_the_good_claim_kept():
    encounters, findings = careplan_to_encounters(load("careplan-defects.json"))
    assert shown(findings) == [
        ("FHIR-MAP-001", "CarePlan.activity[0].detail",
         "service date is required but the resource has no value for it (looked at "
         "detail.scheduledPeriod.start | detail.scheduledString | detail.extension.where(url "
         "= %performed_extension).valueDateTime)"),
        ("FHIR-MAP-002", "CarePlan.activity[1].detail.code.coding",
         "HCPCS code is not a HCPCS code (with optional two-character modifiers)"),
        ("ECM-CODE-001", "CarePlan.activity[2].detail.code",
         "G9008 with modifiers none is not an ECM or Community Supports service on "
         "2025-06-12"),
        ("FHIR-MAP-008", "CarePlan",
         "claim cp-alvarez-defects-20250612 is not converted: ECM-CODE-001 at "
         "CarePlan.activity[2].detail.code"),
    ]
    assert [e.claim.id for e in encounters] == ["cp-alvarez-defects-20250613"]


def test_careplan_member_and_provider_defects_stop_the_conversion():
    plan = load("careplan-ecm.json")
    patient, org = plan["contained"][0], plan["contained"][1]
    patient["identifier"][0]["value"] = "9123A"
    org["identifier"] = [i for i in org["identifier"] if "npi" not in i["system"]]
    encounters, findings = careplan_to_encounters(plan)
    assert encounters == []
    assert shown(findings)[:2] == [
        ("FHIR-MAP-002", "CarePlan.subject",
         "member CIN is not a Medi-Cal CIN (8 digits and a letter)"),
        ("FHIR-MAP-001", "CarePlan.author.identifier",
         "billing provider NPI is required but the resource has no value for it (looked at "
         "identifier.where(system = %npi_system).value)"),
    ]
    assert not any(f.rule == "FHIR-MAP-010" for f in findings)
    # findings never carry the member's data
    assert "9123A" not in json.dumps([f.as_dict() for f in findings])


def test_careplan_with_nothing_billable_says_so():
    plan = load("careplan-ecm.json")
    plan["activity"] = plan["activity"][-1:]  # only a scheduled activity
    encounters, findings = careplan_to_encounters(plan)
    assert encounters == []
    assert [f.rule for f in findings] == ["FHIR-MAP-006", "FHIR-MAP-010"]


def test_not_a_careplan_is_refused_with_a_finding():
    encounters, findings = careplan_to_encounters(load("servicerequest-referral.json"))
    assert encounters == []
    assert shown(findings) == [("FHIR-MAP-005", "ServiceRequest",
                                "the input is a ServiceRequest, not a CarePlan (or a Bundle "
                                "holding one)")]


def test_careplans_in_a_bundle_are_located_by_entry():
    plan = load("careplan-defects.json")
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": load("careplan-ecm.json")}, {"resource": plan}]}
    encounters, findings = careplan_to_encounters(bundle)
    assert len(encounters) == 5
    assert findings[1].location == "Bundle.entry[1].resource.activity[0].detail"


def test_long_careplan_ids_give_38_character_claim_ids():
    plan = load("careplan-ecm.json")
    plan["id"] = "a" * 60
    encounters, _ = careplan_to_encounters(plan)
    assert {len(e.claim.id) for e in encounters} == {38}
    assert len({e.claim.id for e in encounters}) == 4


# -- round trips ---------------------------------------------------------------------------------
def line_fields(encounter):
    return [(line.procedure_code, line.modifiers, line.units, line.charge, line.service_date,
             line.service_date_end) for line in encounter.claim.lines]


def test_careplan_to_837p_reads_back_as_the_same_encounters():
    encounters, _ = careplan_to_encounters(load("careplan-ecm.json"))
    back = encounters_of((EXPECTED / "careplan-ecm.837p.x12").read_text())
    assert [line_fields(e) for e in back] == [line_fields(e) for e in encounters]
    assert [(e.member, e.billing_provider, e.claim.diagnosis_codes) for e in back] == \
        [(e.member, e.billing_provider, e.claim.diagnosis_codes) for e in encounters]


def claim_fields_from_bundle(bundle: dict) -> list[tuple]:
    resources = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    out = []
    for claim in (r for r in resources.values() if r["resourceType"] == "Claim"):
        patient = resources[claim["patient"]["reference"]]
        provider = resources[claim["provider"]["reference"]]
        out.append((
            claim["identifier"][0]["value"], patient["identifier"][0]["value"],
            patient["name"][0]["family"], patient.get("birthDate"),
            [i["value"] for i in provider["identifier"]],
            [d["diagnosisCodeableConcept"]["coding"][0]["code"].replace(".", "")
             for d in claim["diagnosis"]],
            (claim["insurance"][0].get("preAuthRef") or [None])[0],
            Decimal(str(claim["total"]["value"])),
            [(item["productOrService"]["coding"][0]["code"],
              [m["coding"][0]["code"] for m in item.get("modifier", [])],
              Decimal(str(item["quantity"]["value"])), Decimal(str(item["net"]["value"])),
              item.get("servicedDate") or item["servicedPeriod"]["start"],
              item["locationCodeableConcept"]["coding"][0]["code"])
             for item in claim["item"]]))
    return out


def claim_fields_from_encounters(encounters) -> list[tuple]:
    return [(
        e.claim.id, e.member.cin, e.member.last_name,
        e.member.birth_date.isoformat() if e.member.birth_date else None,
        [e.billing_provider.npi, e.billing_provider.tin], e.claim.diagnosis_codes,
        e.claim.prior_authorization, e.claim.total_charge,
        [(line.procedure_code, line.modifiers, line.units, line.charge,
          line.service_date.isoformat(), line.place_of_service or e.claim.place_of_service)
         for line in e.claim.lines]) for e in encounters]


def test_837p_to_bundle_keeps_every_claim_field():
    encounters = encounters_of((FIXTURES / "837p" / "ecm-clean.x12").read_text())
    bundle = json.loads((EXPECTED / "ecm-clean.bundle.json").read_text())
    assert claim_fields_from_bundle(bundle) == claim_fields_from_encounters(encounters)


def test_careplan_to_837p_to_bundle_round_trip(tmp_path):
    encounters, _ = careplan_to_encounters(load("careplan-ecm.json"))
    x12_file = tmp_path / "careplan.x12"
    with open(x12_file, "w") as out:
        canonical_to_837p(encounters, out, SETTINGS, ControlNumbers(1, 1),
                          datetime(2025, 7, 1))
    bundle_text = io.StringIO()
    count, findings = x12_to_bundle(x12_file, bundle_text)
    assert findings == []
    bundle = json.loads(bundle_text.getvalue())
    parses_as_r4(bundle)
    assert count == len(bundle["entry"])
    assert claim_fields_from_bundle(bundle) == claim_fields_from_encounters(encounters)


def test_streamed_bundle_equals_the_built_bundle_and_shares_resources():
    encounters = encounters_of((FIXTURES / "837p" / "ecm-clean.x12").read_text())
    out = io.StringIO()
    written = write_encounter_bundle(encounters, out)
    built = encounters_to_bundle(encounters)
    assert json.loads(out.getvalue()) == built
    assert written == len(built["entry"])
    kinds = [e["resource"]["resourceType"] for e in built["entry"]]
    assert kinds.count("Claim") == kinds.count("Encounter") == len(encounters)
    assert kinds.count("Patient") == len({e.member.cin for e in encounters})
    assert len({e["fullUrl"] for e in built["entry"]}) == len(built["entry"])


def test_a_void_claim_is_a_cancelled_claim_resource():
    encounter = encounters_of((FIXTURES / "837p" / "ecm-clean.x12").read_text())[0]
    void = encounter.model_copy(update={"claim": encounter.claim.model_copy(
        update={"frequency_code": "8", "payer_claim_control_number": "DHCS123"})})
    bundle = encounters_to_bundle([void])
    claim = next(e["resource"] for e in bundle["entry"]
                 if e["resource"]["resourceType"] == "Claim")
    assert claim["status"] == "cancelled"
    assert claim["identifier"][1]["value"] == "DHCS123"
    parses_as_r4(bundle)


# -- CarePlan / Task → RTF -----------------------------------------------------------------------
def test_careplan_rtf_row_values():
    row, findings = careplan_to_rtf(load("careplan-ecm.json"), today=date(2025, 7, 3))
    assert findings == []
    assert {k: v for k, v in row.items() if v} == {
        "Primary Payer (MCP) Identifier": "DEMOPLAN", "MCP Name": "DEMO HEALTH PLAN",
        "Member CIN": "91230000A", "Member Last Name": "Alvarez",
        "Member First Name": "Marisol", "Member Residential Address": "100 Alder St",
        "Member City": "Riverside", "Member State": "CA", "Member Zip": "92501",
        "Member Phone Number": "5595550100", "Member ECM Status": "ENROLLED",
        "ECM Enrollment Start Date": "2025-06-01",
        "Date of Latest Care Plan Revision": "2025-06-21",
        "Date of Most Recent Care Conference": "2025-06-20",
        "Date Assessment Started": "2025-06-02",
        "Date of Most Recent Completed Assessment": "2025-06-05",
        "Date of Most Recent Encounter with Member": "2025-06-20",
        "ECM Lead Care Manager Name": "Noemi Tranquilino",
        "ECM Lead Care Manager Phone Number": "9165550400",
        "ECM Lead Care Manager Email": "noemi@example.org",
        "RTF Production Date": "2025-07-03",
        "ECM Provider Name": "Harbor Community Health Center",
        "ECM Provider NPI": "1234500001", "ECM Provider TIN": "941200000",
        "ECM Provider Phone Number": "5595550999"}


def test_careplan_lead_care_manager_from_a_bundle_care_team():
    row, findings = careplan_to_rtf(load("careplan-variants.json"), today=date(2025, 7, 3))
    assert findings == []
    assert (row["ECM Lead Care Manager Name"], row["ECM Lead Care Manager Email"],
            row["Date Assessment Started"], row["Date of Most Recent Completed Assessment"]) \
        == ("Noemi Tranquilino", "noemi@example.org", "2025-06-23", "")


def test_revoked_careplan_is_a_discontinuation_with_its_date_and_reason():
    plan = load("careplan-ecm.json")
    plan["status"] = "revoked"
    plan["period"]["end"] = "2025-06-30"
    row, findings = careplan_to_rtf(plan, today=date(2025, 7, 3))
    assert (row["Member ECM Status"], row["Discontinuation Date"],
            row["ECM Enrollment End Date"]) == ("DISCONTINUED", "2025-06-30", "2025-06-30")
    # the RTF needs a reason code with the date; R4 CarePlan has no status reason
    assert shown(findings) == [
        ("FHIR-MAP-007", "CarePlan", "RTF column Discontinuation Reason Code is required but "
         "the resource supplies no value for it (mapping target discontinuation_reason_code)")]
    plan["extension"] = [{
        "url": "https://ecm-gateway.example.org/fhir/StructureDefinition/"
               "ecm-discontinuation-reason",
        "valueCoding": {"code": "1", "display": "Member has met all care plan goals"}}]
    row, findings = careplan_to_rtf(plan, today=date(2025, 7, 3))
    assert findings == []
    assert (row["Discontinuation Reason Code"], row["Discontinuation Reason"]) == (
        "1", "Member has met all care plan goals")


def test_careplan_without_the_rtf_required_columns_is_reported():
    plan = load("careplan-ecm.json")
    plan["status"] = "entered-in-error"
    del plan["author"]
    row, findings = careplan_to_rtf(plan, today=date(2025, 7, 3))
    assert row["Member ECM Status"] == ""
    assert shown(findings) == [
        ("FHIR-MAP-004", "CarePlan.status",
         "CarePlan status: the code has no translation in the mapping; the value is left out"),
        ("FHIR-MAP-007", "CarePlan", "RTF column Member ECM Status is required but the "
         "resource supplies no value for it (mapping target member_ecm_status)"),
        ("FHIR-MAP-007", "CarePlan", "RTF column ECM Provider Name is required but the "
         "resource supplies no value for it (mapping target ecm_provider_name)"),
        ("FHIR-MAP-007", "CarePlan", "RTF column ECM Provider NPI is required but the "
         "resource supplies no value for it (mapping target ecm_provider_npi)"),
        ("FHIR-MAP-007", "CarePlan", "RTF column ECM Provider TIN is required but the "
         "resource supplies no value for it (mapping target ecm_provider_tin)"),
    ]


def task_bundle(status: str, reason: str | None = "Closed", business: str | None = None):
    bundle = load("task-referral-closed.json")
    task = bundle["entry"][0]["resource"]
    task["status"] = status
    task.pop("businessStatus", None)
    task.pop("output", None)
    if reason is None:
        task.pop("statusReason", None)
    else:
        task["statusReason"] = {"text": reason}
    if business:
        task["businessStatus"] = {"coding": [{
            "system": "https://ecm-gateway.example.org/fhir/CodeSystem/ecm-status",
            "code": business}]}
    return bundle


@pytest.mark.parametrize("status,referral,ecm", [
    ("requested", "PENDING", "PENDING"), ("received", "PENDING", "PENDING"),
    ("accepted", "ACCEPTED", "PENDING"), ("in-progress", "ACCEPTED", "PENDING"),
    ("rejected", "DECLINED", "DECLINED"), ("cancelled", "CLOSED", "PENDING"),
    ("failed", "CLOSED", "UNABLE_TO_REACH")])
def test_task_status_gives_the_referral_status(status, referral, ecm):
    row, findings = task_to_rtf(task_bundle(status), today=date(2025, 7, 9))
    assert (row["Referral Status"], row["Member ECM Status"],
            row["Date of Referral Status Update"], row["Reason for Referral (Loop) Closure"]) \
        == (referral, ecm, "2025-07-08", "Closed")
    assert findings == []


def test_closed_task_without_a_reason_misses_the_rtf_closure_reason():
    row, findings = task_to_rtf(task_bundle("completed", reason=None, business="PENDING"),
                                today=date(2025, 7, 9))
    assert row["Referral Status"] == "CLOSED"
    assert shown(findings) == [
        ("FHIR-MAP-007", "Bundle.entry[0].resource",
         "RTF column Reason for Referral (Loop) Closure is required but the resource "
         "supplies no value for it (mapping target referral_closure_reason)")]


def test_task_business_status_outside_the_code_set_is_reported():
    row, findings = task_to_rtf(task_bundle("accepted", business="ACTIVE"),
                                today=date(2025, 7, 9))
    assert row["Member ECM Status"] == ""
    assert [(f.rule, f.location) for f in findings] == [
        ("FHIR-MAP-003", "Bundle.entry[0].resource.businessStatus.coding"),
        ("FHIR-MAP-007", "Bundle.entry[0].resource")]


def test_task_alone_with_member_identifier_only():
    task = load("task-referral-closed.json")["entry"][0]["resource"]
    task["for"] = {"identifier": {"system": "https://ecm-gateway.example.org/fhir/sid/"
                                            "medi-cal-cin", "value": "91234721B"}}
    row, findings = task_to_rtf(task, today=date(2025, 7, 9))
    assert row["Member CIN"] == "91234721B"
    assert [f.message.split(" is required")[0] for f in findings] == [
        "RTF column Member Last Name", "RTF column Member First Name",
        "RTF column ECM Provider Name", "RTF column ECM Provider NPI",
        "RTF column ECM Provider TIN"]


# -- ServiceRequest → referral ---------------------------------------------------------------------
def test_routine_referral_deadline_skips_the_weekend_and_independence_day():
    referral, findings = servicerequest_to_referral(load("servicerequest-referral.json"))
    assert findings == []
    # authored Friday 2025-06-27 16:00 -07:00; working days Jun 30, Jul 1, 2, 3, (4th a
    # holiday) 7
    assert referral.authorization_deadline == datetime(2025, 7, 7, 16, 0,
                                                       tzinfo=timezone(timedelta(hours=-7)))
    assert (referral.priority, referral.pof_codes, referral.payer_id, referral.requester_npi) \
        == ("routine", ["SMI_SUD", "HIGH_UTILIZER"], "VHP01", "1234506016")


@pytest.mark.parametrize("priority", ["urgent", "asap", "stat"])
def test_expedited_referral_deadline_is_72_hours(priority):
    request = load("servicerequest-referral.json")
    request["priority"] = priority
    referral, findings = servicerequest_to_referral(request)
    assert findings == []
    assert referral.priority == "expedited" and referral.fhir_priority == priority
    assert referral.authorization_deadline - referral.referral_date == timedelta(hours=72)


def test_referral_defects():
    request = load("servicerequest-referral.json")
    request["priority"] = "someday"
    request["reasonCode"] = [{"coding": [{"system": "https://ecm-gateway.example.org/fhir/"
                                                    "CodeSystem/ecm-pof", "code": "NOT_A_POF"}]}]
    del request["authoredOn"]
    referral, findings = servicerequest_to_referral(request)
    assert shown(findings) == [
        ("FHIR-MAP-001", "ServiceRequest.authoredOn",
         "authoredOn is required but the resource has no value for it (looked at authoredOn)"),
        ("FHIR-MAP-003", "ServiceRequest.reasonCode.coding",
         "Population of Focus (reasonCode) holds a code that is not in code set pof"),
        ("FHIR-MAP-004", "ServiceRequest.priority",
         "priority: the code has no translation in the mapping; the default is used"),
    ]
    assert (referral.priority, referral.authorization_deadline, referral.pof_codes) == \
        ("routine", None, [])


def test_referral_without_priority_is_routine():
    request = load("servicerequest-referral.json")
    del request["priority"]
    referral, findings = servicerequest_to_referral(request)
    assert findings == [] and referral.priority == "routine"


def test_working_days_count_weekends_and_listed_holidays_out():
    friday = datetime(2025, 11, 21, 9, 30)
    assert add_working_days(friday, 5, frozenset()) == datetime(2025, 11, 28, 9, 30)
    # Thanksgiving and the day after are state holidays
    assert add_working_days(friday, 5) == datetime(2025, 12, 2, 9, 30)
    saturday = datetime(2025, 6, 28, 8, 0)
    assert add_working_days(saturday, 1, frozenset()) == datetime(2025, 6, 30, 8, 0)


# -- MIF → Bundle --------------------------------------------------------------------------------
def test_mif_bundle_has_one_patient_and_episode_per_member():
    bundle = mif_to_bundle(HERE / "mif-members.csv", today=date(2025, 7, 1))
    kinds = [(e["resource"]["resourceType"], e["resource"].get("status"))
             for e in bundle["entry"]]
    assert kinds == [
        ("Patient", None), ("Organization", None), ("Coverage", "active"),
        ("Organization", None), ("Practitioner", None), ("Condition", None),
        ("Condition", None), ("CareTeam", "active"), ("EpisodeOfCare", "active"),
        ("Patient", None), ("Coverage", "active"), ("Condition", None), ("Condition", None),
        ("EpisodeOfCare", "finished")]
    parses_as_r4(bundle)


def test_mif_rows_already_read_give_the_same_bundle():
    rows = [values for _, values in read_table(HERE / "mif-members.csv", "mif").rows]
    assert mif_to_bundle(rows, today=date(2025, 7, 1)) == \
        mif_to_bundle(HERE / "mif-members.csv", today=date(2025, 7, 1))


def test_mif_csv_and_xlsx_give_the_same_bundle_and_it_parses():
    csv_bundle, csv_findings = mif_file_to_bundle(FIXTURES / "mif" / "mif-clean.csv",
                                                  today=date(2025, 7, 1))
    xlsx_bundle, _ = mif_file_to_bundle(FIXTURES / "mif" / "mif-clean.xlsx",
                                        today=date(2025, 7, 1))
    assert csv_findings == []
    assert csv_bundle == xlsx_bundle
    parses_as_r4(csv_bundle)
    patients = [e for e in csv_bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert len(patients) == 30


def test_mif_rows_with_errors_are_left_out_and_reported():
    bundle, findings = mif_file_to_bundle(FIXTURES / "mif" / "mif-defects.csv",
                                          today=date(2025, 7, 1))
    assert findings and all(f.rule.startswith(("ROW-", "FILE-")) for f in findings)
    parses_as_r4(bundle)


def test_mif_patient_and_coverage_pass_the_ecm_profiles():
    from gateway.fhir.validate import check_payload

    bundle = mif_to_bundle(HERE / "mif-members.csv", today=date(2025, 7, 1))
    checked = check_payload(json.dumps(bundle).encode(), "json")
    assert checked.valid
    # Coverage.period (Medi-Cal eligibility) is not in a MIF: only must-support notes
    assert {f.rule for f in checked.findings} <= {"FHIR-PROFILE-006"}


def test_fixture_inputs_pass_the_ecm_profiles():
    from gateway.fhir.validate import check_payload

    for name in ("careplan-ecm.json", "servicerequest-referral.json",
                 "task-referral-closed.json"):
        checked = check_payload((HERE / name).read_bytes(), "json")
        assert shown(checked.findings) == [], name


# -- the convert facade --------------------------------------------------------------------------
def test_convert_reads_fhir_xml_like_json(tmp_path):
    model = get_fhir_model_class("CarePlan").model_validate(load("careplan-ecm.json"))
    xml = tmp_path / "careplan.xml"
    xml.write_bytes(model.model_dump_xml())
    for target, golden in (("837p", "careplan-ecm.837p.x12"), ("rtf", "careplan-ecm.rtf.csv")):
        assert convert(xml, target) == (EXPECTED / golden).read_text()


def test_convert_canonical_json_to_fhir(tmp_path):
    encounters, _ = careplan_to_encounters(load("careplan-ecm.json"))
    source = tmp_path / "encounters.json"
    source.write_text(json.dumps({"encounters": [json.loads(e.model_dump_json())
                                                 for e in encounters]}))
    out = io.StringIO()
    done = convert_fhir(source, "fhir", out)
    assert (done.kind, done.written) == ("json", len(json.loads(out.getvalue())["entry"]))
    assert json.loads(out.getvalue()) == encounters_to_bundle(encounters)


@pytest.mark.parametrize("name,target,message", [
    ("servicerequest-referral.json", "rtf",
     "cannot convert ServiceRequest to rtf; a ServiceRequest converts to: json"),
    ("careplan-ecm.json", "fhir", "cannot convert CarePlan to fhir; a CarePlan converts to: "
                                  "rtf, 837p"),
    ("task-referral-closed.json", "837p", "cannot convert Task to 837p; a Task converts to: "
                                          "rtf"),
])
def test_pairs_that_make_no_sense_are_usage_errors(name, target, message):
    with pytest.raises(FhirConversionUsageError) as caught:
        convert_fhir(HERE / name, target, io.StringIO())
    assert str(caught.value) == message


@pytest.mark.parametrize("content,message", [
    ('{"resourceType": "Patient", "id": "x"}',
     "cannot convert Patient to rtf; FHIR conversions take: CarePlan → rtf/837p, "
     "ServiceRequest → json, Task → rtf, Consent → rtf, mif → fhir, 837p → fhir, json → fhir"),
    ('{"resourceType": "CarePlan", "status": 7}', "the FHIR resource does not parse as R4: "),
    ('{"resourceType": "NoSuchThing"}', "the file is not a readable FHIR resource"),
    ('<CarePlan xmlns="http://hl7.org/fhir"><status value="active"', "the file is not a "
                                                                      "readable FHIR resource: "),
    ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><CarePlan '
     'xmlns="http://hl7.org/fhir"/>', "the file is not a readable FHIR resource: "),
])
def test_bad_fhir_input_is_a_usage_error_without_a_traceback(tmp_path, content, message):
    source = tmp_path / "input"
    source.write_text(content)
    with pytest.raises(FhirConversionUsageError) as caught:
        convert_fhir(source, "rtf", io.StringIO())
    assert str(caught.value).startswith(message)
    assert "passwd" not in str(caught.value)


def test_the_target_table_is_what_the_cli_documents():
    assert FHIR_TARGETS == {"CarePlan": ("rtf", "837p"), "ServiceRequest": ("json",),
                            "Task": ("rtf",), "Consent": ("rtf",), "mif": ("fhir",),
                            "837p": ("fhir",), "json": ("fhir",)}


# -- the engine ----------------------------------------------------------------------------------
def test_a_mapping_with_a_broken_fhirpath_is_refused_when_loaded():
    with pytest.raises(MappingSpecError, match="does not compile"):
        FieldSpec.from_dict({"target": "x", "path": "subject.where("}, "test")


@pytest.mark.parametrize("name", sorted(p.stem for p in (FIXTURES.parent / "mappings" / "fhir")
                                        .glob("*-to-*.yaml")))
def test_every_mapping_spec_loads_and_compiles(name):
    spec = load_spec(name)
    for key in ("fields", "claim", "line"):
        field_specs(spec, key, name)
    for expression in list((spec.get("roots") or {}).values()) + (
            [spec["activity_filter"]] if "activity_filter" in spec else []):
        compiled(expression)
    for resource in spec.get("resources") or []:
        assert {"name", "key", "resource"} <= set(resource), resource.get("name")


def test_an_expression_that_fails_on_odd_data_is_a_finding_not_a_crash():
    plan = load("careplan-ecm.json")
    # not R4 (family is one string), but a caller of the function may pass anything
    plan["contained"][2]["name"] = [{"given": ["Noemi"], "family": ["Tran", "Quilino"]}]
    row, findings = careplan_to_rtf(plan, today=date(2025, 7, 3))
    assert shown(findings) == [
        ("FHIR-MAP-011", "CarePlan.careTeam.name",
         "lead_care_manager_name: the mapping expression cannot be evaluated on this resource "
         "(Exception)")]
    assert row["ECM Lead Care Manager Name"] == "" and row["Member CIN"] == "91230000A"


def test_locations_name_the_element_not_the_functions():
    assert location_of("CarePlan", "subject.resolve().identifier.value") == "CarePlan.subject"
    assert location_of("Task", "status") == "Task.status"
    assert location_of("Task", "iif(status = 'x', 1, 2)") == "Task"


def test_templates_drop_empty_values_and_translate_codes():
    template = {"a": "{x}", "b": ["{missing}", "{y}"], "c": {"$value": "{g}",
                                                              "$map": {"F": "female"}},
                "d": "Patient/{missing}", "e": [{"$for_each": "items", "$as": "i",
                                                  "$item": {"n": "{index}", "v": "{i}"}}],
                "f": {"$when": "missing", "z": 1}}
    assert render(template, {"x": 1, "y": "two", "g": "f", "items": ["p", "q"]}) == {
        "a": 1, "b": ["two"], "c": "female", "e": [{"n": 1, "v": "p"}, {"n": 2, "v": "q"}]}
    assert stable_uuid("Patient", "1") == stable_uuid("Patient", "1") != \
        stable_uuid("Patient", "2")


def test_findings_carry_no_member_data():
    plan = copy.deepcopy(load("careplan-defects.json"))
    _, findings = careplan_to_encounters(plan)
    _, more = careplan_to_rtf(plan, today=date(2025, 7, 3))
    text = json.dumps([f.as_dict() for f in findings + more])
    for value in ("91230000A", "Alvarez", "Marisol", "1950-01-01", "1234500001"):
        assert value not in text


# -- hostile input -------------------------------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(
        ["", "x", "2025-06-01", "G9008-U1", "91230000A", "#member", "completed", "U1"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["reference", "identifier", "system", "value", "code", "coding",
                         "detail", "status", "scheduledPeriod", "start", "extension", "url",
                         "valueCode", "name", "family", "given", "resourceType", "id"]),
        children, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kind=st.sampled_from(["CarePlan", "Task", "ServiceRequest", "Bundle"]),
       body=st.dictionaries(st.sampled_from(
           ["subject", "for", "author", "activity", "contained", "status", "priority",
            "authoredOn", "reasonCode", "careTeam", "owner", "entry", "lastModified",
            "period", "addresses", "requester", "insurance"]), _json, max_size=6))
def test_garbage_resources_give_findings_never_exceptions(kind, body):
    resource = {"resourceType": kind, **body}
    careplan_to_encounters(resource)
    careplan_to_rtf(resource, today=date(2025, 7, 3))
    task_to_rtf(resource, today=date(2025, 7, 3))
    servicerequest_to_referral(resource)


@pytest.mark.parametrize("quantity", [float("inf"), 1e20, "2 hours"])
def test_units_that_are_not_a_usable_number_are_reported(quantity):
    plan = load("careplan-ecm.json")
    plan["activity"][1]["detail"]["quantity"]["value"] = quantity
    encounters, findings = careplan_to_encounters(plan)
    assert ("FHIR-MAP-002", "CarePlan.activity[1].detail.quantity.value",
            "units is not a number") \
        in shown(findings)
    assert len(encounters) == 4  # the other activities of that day are still filed
