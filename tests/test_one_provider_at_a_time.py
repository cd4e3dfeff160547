"""One assigned ECM provider at a time (ECM Policy Guide 002:1544-1545): what a provider that a
plan's later MIF superseded still receives.

* the history extract gives a provider a member's lines only while it is the covering assignee
  (the assignment covering the date, newest benefit start wins, as claim checking decides) and
  in the lookback before ITS benefit start; a line dated after another provider took over goes
  to that provider only (audit: Harbor kept receiving a member's F11.20 line after Sunrise).

The partners, MIFs and claims are the audit's (synthetic members)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from server_world import World

from gateway.pipeline.history_extracts import extract_history
from gateway.pipeline.partners import Partners
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
