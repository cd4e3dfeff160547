"""One assigned ECM provider at a time (ECM Policy Guide 002:1544-1545): what a provider that a
plan's later MIF superseded still receives, and where a provider's RTF/OTF rows go.

* the history extract gives a provider a member's lines only while it is the covering assignee
  (the assignment covering the date, newest benefit start wins, as claim checking decides) and
  in the lookback before ITS benefit start; a line dated after another provider took over goes
  to that provider only (audit: Harbor kept receiving a member's F11.20 line after Sunrise);
* an RTF/OTF row goes to the plan whose MIF assigns the member to the submitting provider, not
  to the plan its MCP column names; a row about another provider's member is refused.

The partners, MIFs and claims are the audit's (synthetic members)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from server_world import World

from gateway.ecm.data_sharing import authorization_rows
from gateway.pipeline.history_extracts import extract_history
from gateway.pipeline.partners import Partners
from gateway.pipeline.registries import plan_data_sharing
from gateway.pipeline.store import Store

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
PARTNERS = """
partners:
- {id: plan-a, name: Plan A, role: plan, envelope: plan-default,
   identifiers: {plan_code: PLANA, county_code: '001', payer_ids: [PLANA], x12_sender_ids: [PLANA]}}
- {id: plan-b, name: Plan B, role: plan, envelope: plan-default,
   identifiers: {plan_code: PLANB, county_code: '002', payer_ids: [PLANB], x12_sender_ids: [PLANB]}}
- {id: harbor, name: Harbor Community Health Center, role: provider,
   identifiers: {npis: ['1234500001'], tins: ['941200000'], x12_sender_ids: [HARBOR]}}
- {id: sunrise, name: Sunrise Behavioral Health, role: provider,
   identifiers: {npis: ['1234579195'], tins: ['941201013'], x12_sender_ids: [SUNRISE]}}
routes:
- {kind: rtf, from: provider, to: plan}
- {kind: otf, from: provider, to: plan}
- {kind: fhir, from: provider, to: plan}
- {kind: mif, from: plan, to: provider}
- {kind: history, from: gateway, to: provider}
"""
MIF_HEADER = ("Member CIN,Member Last Name,Member First Name,Member Date of Birth,Member Gender,"
              "Member Phone Number,Member Residential Address,Member City,Member State,"
              "Member Zip,Member POF,ECM Authorization Date,ECM Provider Assignment Date,"
              "ECM Benefit Start Date,ECM Benefit End Date,ECM Provider Name,ECM Provider NPI,"
              "ECM Provider TIN,ECM Lead Care Manager Name,ECM Lead Care Manager Phone Number,"
              "ECM Lead Care Manager Email,Other Program,Other Program Start Date,"
              "Other Program End Date,MIF Reporting Period\n")
HARBOR = "Harbor Community Health Center,1234500001,941200000"
SUNRISE = "Sunrise Behavioral Health,1234579195,941201013"


def mif(*rows: str) -> bytes:
    return (MIF_HEADER + "".join(rows)).encode()


def mif_row(cin: str, name: str, start: str, provider: str, period: str) -> str:
    return (f"{cin},{name},1970-04-02,U,,,,,,HIGH_UTILIZER,{start},{start},{start},,"
            f"{provider},,,,,,,{period}\n")


CLAIMS_HEADER = ("Member CIN,Claim ID,Line Number,Claim Type,Service Date,Service End Date,"
                 "Procedure Code,Modifiers,Units,Place of Service,Billing Provider NPI,"
                 "Rendering Provider NPI,Diagnosis Codes\n")


def claims(*rows: str) -> bytes:
    return (CLAIMS_HEADER + "".join(rows)).encode()


@pytest.fixture
def world(tmp_path) -> World:
    (tmp_path / "partners.yaml").write_text(PARTNERS, encoding="utf-8")
    return World(Store(f"sqlite:///{tmp_path / 'gateway.sqlite'}"),
                 Partners.load(tmp_path / "partners.yaml"))


def upload(world: World, partner: str, name: str, content: bytes) -> dict:
    """The submission as its sender sees it, with its findings."""
    outcome = world.send(partner, content, kind="file", filename=name)
    return {**world.store.submission(outcome.submission_id),
            "findings": world.store.findings(outcome.submission_id)}


def extract(world: World, provider: str) -> list[list[str]]:
    document = world.store.document(extract_history(world.store, world.partners, provider, NOW))
    return [[r[0], r[1], r[2], r[9], r[11], r[12]] for r in world.rows(document)[1:]]


# -- 1. history: the covering assignee only, plus the lookback before its own start ------------
@pytest.fixture
def handed_over(world) -> World:
    """plan-b assigns 94100002B to Harbor from 2026-03-02 (MIF 2026-09), then to Sunrise from
    2026-06-01 (MIF 2026-10: Harbor's row stays in the 2026-09 MIF, open-ended), and sends
    claims before, during Harbor's period and after the hand-over."""
    upload(world, "plan-b", "mif-b-09.csv",
           mif(mif_row("94100002B", "Quillfeather,Anselm", "2026-03-02", HARBOR, "2026-09")))
    upload(world, "plan-b", "mif-b-10.csv",
           mif(mif_row("94100002B", "Quillfeather,Anselm", "2026-06-01", SUNRISE, "2026-10")))
    sent = upload(world, "plan-b", "claims-b.csv", claims(
        "94100002B,OLD-1,1,P,2025-02-11,,99213,,1,11,1999999992,,Z59.01\n",  # before lookback
        "94100002B,PRE-1,1,P,2026-02-11,,99213,,1,11,1999999992,,B20\n",
        "94100002B,HARB-1,1,P,2026-04-15,,99213,,1,11,1999999992,,I50.9\n",
        "94100002B,LAST-1,1,P,2026-05-31,,99213,,1,11,1999999992,,I50.9\n",
        "94100002B,SUN-1,1,P,2026-06-01,,99213,,1,11,1999999992,,F11.20\n",
        "94100002B,PLANB-9,1,P,2026-08-01,,99213,,1,11,1999999992,,F11.20\n"))
    assert sent["status"] != "rejected"
    return world


def test_a_superseded_provider_gets_nothing_dated_after_the_hand_over(handed_over):
    assert extract(handed_over, "harbor") == [
        ["94100002B", "plan-b", "2026-02-11", "PRE-1", "B20", "before"],
        ["94100002B", "plan-b", "2026-04-15", "HARB-1", "I509", "during"],
        ["94100002B", "plan-b", "2026-05-31", "LAST-1", "I509", "during"],
    ]


def test_the_new_provider_gets_the_history_before_its_start_including_the_previous_providers(
        handed_over):
    # the lookback (12 months, the default) runs back from Sunrise's OWN start, 2026-06-01
    assert extract(handed_over, "sunrise") == [
        ["94100002B", "plan-b", "2026-02-11", "PRE-1", "B20", "before"],
        ["94100002B", "plan-b", "2026-04-15", "HARB-1", "I509", "before"],
        ["94100002B", "plan-b", "2026-05-31", "LAST-1", "I509", "before"],
        ["94100002B", "plan-b", "2026-06-01", "SUN-1", "F1120", "during"],
        ["94100002B", "plan-b", "2026-08-01", "PLANB-9", "F1120", "during"],
    ]


def test_a_provider_assigned_again_gets_its_new_period_and_not_the_gap(handed_over):
    # Harbor takes the member back from 2026-07-15 (MIF 2026-11): the gap (Sunrise's) is
    # history before Harbor's new start; what comes after is Harbor's again
    world = handed_over
    upload(world, "plan-b", "mif-b-11.csv",
           mif(mif_row("94100002B", "Quillfeather,Anselm", "2026-07-15", HARBOR, "2026-11")))
    assert extract(world, "harbor") == [
        ["94100002B", "plan-b", "2026-02-11", "PRE-1", "B20", "before"],
        ["94100002B", "plan-b", "2026-04-15", "HARB-1", "I509", "during"],
        ["94100002B", "plan-b", "2026-05-31", "LAST-1", "I509", "during"],
        ["94100002B", "plan-b", "2026-06-01", "SUN-1", "F1120", "before"],
        ["94100002B", "plan-b", "2026-08-01", "PLANB-9", "F1120", "during"],
    ]
    assert [r[3] for r in extract(world, "sunrise")] == [
        "PRE-1", "HARB-1", "LAST-1", "SUN-1"]  # PLANB-9 is Harbor's again


# -- 2. RTF/OTF rows go to the member's plan; another provider's member is refused -------------
RTF_HEADER = ("Primary Payer (MCP) Identifier,MCP Name,Member CIN,Member Last Name,"
              "Member First Name,Member New Address Indicator,Member Homelessness Indicator,"
              "Member Residential Address,Member City,Member State,Member Zip,"
              "Member New Phone Number Indicator,Member Phone Number,Member POF Indicator,"
              "Member POF,Member ECM Status,Member Acuity Level,ECM Enrollment Start Date,"
              "ECM Enrollment End Date,Date of Latest Care Plan Revision,"
              "Date of Most Recent Care Conference,Date Assessment Started,"
              "Date of Most Recent Completed Assessment,"
              "Date of Most Recent Encounter with Member,ECM Lead Care Manager Name,"
              "ECM Lead Care Manager Phone Number,ECM Lead Care Manager Email,"
              "Discontinuation Date,Discontinuation Reason Code,Discontinuation Reason,"
              "In Person,Telephonic/Video,RTF Production Date,MIF Reporting Period,"
              "ECM Provider Name,ECM Provider NPI,ECM Provider TIN,ECM Provider Phone Number,"
              "Referral Status,Date of Referral Status Update,"
              "Reason for Referral (Loop) Closure,Data Sharing Authorization On File,"
              "Data Sharing Authorization Date,Data Sharing Authorization Scope,"
              "Data Sharing Authorization Expiry Date\n")


def rtf_row(code: str, cin: str, provider: str, on_file: str, dated: str, expiry: str,
            produced: str = "2026-11-30") -> str:
    plan = {"PLANA": "Plan A", "PLANB": "Plan B"}.get(code, "")
    return (f"{code},{plan},{cin},Doe,Pat,N,N,100 Alder St,Riverside,CA,92501,N,5595550100,N,,"
            "ENROLLED,Medium,2026-03-02,,2026-04-01,,2026-03-05,2026-03-10,2026-11-20,"
            "Noemi Tranquilino,9165550400,noemi@example.org,,,,0,0,"
            f"{produced},2026-11,{provider},5595550999,ACCEPTED,2026-03-01,,{on_file},{dated},"
            f"GENERAL;SUD_PART2,{expiry}\n")


def rtf(*rows: str) -> bytes:
    return (RTF_HEADER + "".join(rows)).encode()


OTF_HEADER = ("MCP Identifier,MCP Name,ECM Provider Name,ECM Provider NPI,ECM Provider TIN,"
              "Member Name,Member CIN,Provider Type,Date of Outreach Attempt,"
              "Outreach Attempt Method,Outreach Attempt Successful,"
              "Time Spent Performing Outreach\n")


@pytest.fixture
def two_plans(world) -> World:
    """plan-a assigns 94100002B and 94100005E to Harbor, plan-b assigns 94200001A to
    Sunrise (the audit's mif-a.csv and mif-b.csv)."""
    upload(world, "plan-a", "mif-a.csv", mif(
        mif_row("94100002B", "Quillfeather,Anselm", "2026-03-02", HARBOR, "2026-11"),
        mif_row("94100005E", "Umberfield,Delphine", "2026-01-02", HARBOR, "2026-11")))
    upload(world, "plan-b", "mif-b.csv",
           mif(mif_row("94200001A", "Secretson,Private", "2026-03-02", SUNRISE, "2026-11")))
    return world


def findings(found: dict) -> list[tuple[str, str, str, str]]:
    return [(f["rule"], f["severity"], f["location"], f["message"]) for f in found["findings"]
            if not f["rule"].startswith(("ECM-REG", "TAB-"))]


def routed(world: World, submission: dict) -> dict[str, int]:
    return submission["summary"].get("forwarded_rows", {})


def test_an_rtf_row_goes_to_the_members_plan_whatever_its_mcp_column_says(two_plans):
    world = two_plans
    found = upload(world, "harbor", "ds-harbor-wrongplan.csv", rtf(
        rtf_row("PLANB", "94100002B", HARBOR, "Y", "2026-06-02", "2027-06-01")))
    assert findings(found) == [(
        "GATEWAY-ROUTE-003", "warning", "row 2",
        "the row's MCP identifier PLANB does not name the plan that assigns the member to you: "
        "the row went to the assigning plan")]
    assert routed(world, found) == {"plan-a": 1}
    assert world.box("plan-b") == []
    registry = world.registry
    assert [(r["plan"], r["member_cin"], r["status"]) for r in authorization_rows(
        plan_data_sharing(registry, None), datetime(2026, 8, 1).date())] == [
        ("plan-a", "94100002B", "active")]


def test_an_rtf_row_about_another_providers_member_is_refused(two_plans):
    world = two_plans
    for name, code in (("ds-harbor-foreign.csv", "PLANA"), ("ds-nopayer.csv", "")):
        found = upload(world, "harbor", name, rtf(
            rtf_row(code, "94200001A", HARBOR, "Y", "2026-06-02", "2027-06-01")))
        assert found["status"] == "rejected"
        assert findings(found) == [(
            "GATEWAY-AUTH-003", "error", "row 2",
            "the row's member is not assigned to the submitting partner harbor by any plan: "
            "the row was not forwarded or recorded")]
        assert routed(world, found) == {}
    assert world.box("plan-a") == [] and world.box("plan-b") == []
    assert plan_data_sharing(world.registry, None) == []


def test_a_row_about_a_member_no_mif_knows_goes_to_the_plan_its_mcp_column_names(two_plans):
    world = two_plans
    found = upload(world, "harbor", "ds-new.csv", rtf(
        rtf_row("PLANB", "94999999Z", HARBOR, "Y", "2026-06-02", "2027-06-01")))
    assert findings(found) == []
    assert routed(world, found) == {"plan-b": 1}


def test_an_otf_row_about_another_providers_member_is_refused_and_not_reported(two_plans):
    world = two_plans
    found = upload(world, "harbor", "otf-h.csv", (OTF_HEADER + (
        f"PLANA,Plan A,{HARBOR},Private Secretson,94200001A,FQHC,2026-11-02,TELEPHONE,Y,15\n"
        f"PLANA,Plan A,{HARBOR},Delphine Umberfield,94100005E,FQHC,2026-11-03,TELEPHONE,Y,15\n"
    )).encode())
    assert findings(found) == [(
        "GATEWAY-AUTH-003", "error", "row 2",
        "the row's member is not assigned to the submitting partner harbor by any plan: "
        "the row was not forwarded or recorded")]
    assert routed(world, found) == {"plan-a": 1}
    [document] = world.box("plan-a")
    assert [row[6] for row in world.rows(document)] == ["Member CIN", "94100005E"]


def consent_about(cin: str) -> bytes:
    """The data-sharing Consent fixture about the member ``cin`` (by identifier), naming no
    organization: the sender's own."""
    import json

    from conftest import FIXTURES

    bundle = json.loads((FIXTURES / "fhir" / "mappings" / "consent-data-sharing.json")
                        .read_text(encoding="utf-8"))
    consent = bundle["entry"][0]["resource"]
    consent["patient"] = {"identifier": {
        "system": "https://ecm-gateway.example.org/fhir/sid/medi-cal-cin", "value": cin}}
    del consent["organization"]
    return json.dumps(consent).encode()


def post_fhir(world: World, partner: str, content: bytes) -> dict:
    outcome = world.send(partner, content, kind="fhir", filename="Consent.json")
    return {**world.store.submission(outcome.submission_id),
            "findings": world.store.findings(outcome.submission_id)}


def test_a_fhir_consent_about_another_providers_member_is_refused(two_plans):
    # as an uploaded RTF row: the FHIR channel refused nothing (an audit's follow-up)
    world = two_plans
    refused = post_fhir(world, "harbor", consent_about("94200001A"))
    assert [(f["rule"], f["location"]) for f in refused["findings"]
            if f["rule"].startswith("GATEWAY-")] == [("GATEWAY-AUTH-003", "Consent.organization")]
    assert world.box("plan-a") == [] and world.box("plan-b") == []
    assert plan_data_sharing(world.registry, None) == []
    # nor is the sender told which plan has the member
    assert refused["summary"]["routing"] == [{"resource": refused["summary"]["resources"][0],
                                             "plan": None}]
    mine = post_fhir(world, "harbor", consent_about("94100002B"))
    assert not [f for f in mine["findings"] if f["rule"].startswith("GATEWAY-")]
    assert [(r.source.split(":")[1], r.cin) for r in plan_data_sharing(world.registry, None)] \
        == [("plan-a", "94100002B")]
