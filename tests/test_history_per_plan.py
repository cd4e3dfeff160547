"""Encounter history is kept per plan (issue 14 item 7): a plan's claims-extract loads and the
837Ps it sends the state are that plan's history (replace-by-source per plan), and a provider's
extract gives its assigned members' history of the ASSIGNING plan only — a member who moved
between plans shows each plan's provider that plan's lines (ECM Policy Guide 002:1695
"Historical encounters/claims data for assigned Members")."""

from datetime import UTC, date, datetime

import pytest
import yaml
from conftest import FIXTURES
from server_world import MIXED, World, make_world
from sqlalchemy import func, select

from gateway.pipeline.history_extracts import extract_history
from gateway.pipeline.partners import Partners
from gateway.pipeline.process import replay
from gateway.pipeline.registries import load_plan_members
from gateway.registry.store import history
from gateway.tabular import read_table

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
CIN = "91230000A"  # assigned to Harbor by demo-plan's MIF (fixtures/mif/mif-clean.csv)
CLAIMS = ("Member CIN,Claim ID,Line Number,Claim Type,Service Date,Service End Date,"
          "Procedure Code,Modifiers,Units,Place of Service,Billing Provider NPI,"
          "Rendering Provider NPI,Diagnosis Codes\n"
          f"{CIN},COAST-1,1,P,2025-08-04,,99213,,1,11,1999999992,,F32.9;Z59.00\n"
          f"{CIN},COAST-2,1,I,2025-08-10,,99222,,1,21,1999999992,,I50.9\n")


@pytest.fixture
def two_plans(tmp_path) -> World:
    """The demo world with a second plan, coast-plan, that assigns the same member (who moved
    to it) to Golden Table and sends its own claims extract."""
    world = make_world(tmp_path)
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text(encoding="utf-8"))
    data["partners"].append({"id": "coast-plan", "name": "Coast Health Plan", "role": "plan",
                             "identifiers": {"plan_code": "COASTPLAN", "county_code": "002",
                                             "payer_ids": ["COASTPLAN"],
                                             "x12_sender_ids": ["COASTPLAN"]},
                             "envelope": "plan-default"})
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data, sort_keys=False),
                                            encoding="utf-8")
    world = World(world.store, Partners.load(tmp_path / "partners.yaml"))
    rows = [row for _, row in read_table(FIXTURES / "mif" / "mif-clean.csv", "mif").rows
            if row["member_cin"] == CIN]
    for row in rows:
        row.update(ecm_provider_npi="1234737579", ecm_provider_tin="941203039",
                   ecm_provider_name="Golden Table Meals", ecm_benefit_start=date(2025, 8, 1),
                   reporting_period=date(2025, 8, 1))
    load_plan_members(world.registry, "coast-plan", rows)
    outcome = world.upload("coast-plan", FIXTURES / "none.csv", name="coast-claims.csv",
                           payload=CLAIMS.encode())
    assert world.store.submission(outcome.submission_id)["status"] != "rejected"
    return world


def _extract(world: World, provider: str) -> list[tuple[str, str, str]]:
    document = world.store.document(extract_history(world.store, world.partners, provider, NOW))
    return [(row[0], row[1], row[9]) for row in world.rows(document)[1:]]


def _lines_of(world: World, prefix: str) -> int:
    with world.registry.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(history)
                            .where(history.c.source.like(f"{prefix}%"))).scalar()


def test_each_plans_provider_gets_that_plans_history_of_the_member_only(two_plans):
    world = two_plans
    world.send("demo-plan", MIXED)  # demo-plan's 837P to the state: demo-plan's history
    assert _lines_of(world, "plan:demo-plan:submission:") == 4
    assert _lines_of(world, "plan:coast-plan:claims:coast-claims.csv") == 2
    assert _lines_of(world, "submission:") == 0  # nothing outside a plan
    harbor = [r for r in _extract(world, "harbor") if r[0] == CIN]
    assert harbor == [(CIN, "demo-plan", "HIST-0002"), (CIN, "demo-plan", "MIX-A-GOOD")]
    golden = [r for r in _extract(world, "golden-table") if r[0] == CIN]
    assert golden == [(CIN, "coast-plan", "COAST-1"), (CIN, "coast-plan", "COAST-2")]


def test_a_plans_new_claims_extract_replaces_only_its_own_lines(two_plans):
    world = two_plans
    world.send("demo-plan", MIXED)
    again = CLAIMS.rsplit("\n", 2)[0] + "\n"  # the same file name, now without COAST-2
    world.upload("coast-plan", FIXTURES / "none.csv", name="coast-claims.csv",
                 payload=again.encode())
    assert _lines_of(world, "plan:coast-plan:") == 1
    assert _lines_of(world, "plan:demo-plan:submission:") == 4
    assert [r[2] for r in _extract(world, "golden-table") if r[0] == CIN] == ["COAST-1"]


def test_a_replayed_837p_does_not_double_the_plans_history(two_plans):
    world = two_plans
    outcome = world.send("demo-plan", MIXED)
    before = _lines_of(world, "plan:demo-plan:")
    replay(world.store, world.partners, outcome.submission_id, actor="operator", force=True)
    assert _lines_of(world, "plan:demo-plan:") == before
    assert _lines_of(world, "plan:demo-plan:submission:") == 4
    harbor = [r for r in _extract(world, "harbor") if r[0] == CIN]
    assert harbor == [(CIN, "demo-plan", "HIST-0002"), (CIN, "demo-plan", "MIX-A-GOOD")]


def test_lines_kept_before_history_was_per_plan_are_replaced_on_replay(two_plans):
    """A line an earlier version kept under ``submission:<id>`` is cleared when that 837P is
    run again, so an upgrade does not double it either."""
    world = two_plans
    outcome = world.send("demo-plan", MIXED)
    sid = outcome.submission_id
    world.registry.load_history([{"cin": CIN, "service_date": date(2025, 6, 3),
                                  "claim_id": "MIX-A-GOOD", "line_number": 1}],
                                source=f"submission:{sid}")
    replay(world.store, world.partners, sid, actor="operator", force=True)
    assert _lines_of(world, "submission:") == 0
    assert _lines_of(world, "plan:demo-plan:submission:") == 4
