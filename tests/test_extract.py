"""Encounter-history extracts: a provider gets the history of its own assigned members only,
within their benefit periods, on demand and on a schedule."""

from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import FIXTURES
from server_world import MIXED, make_world

from gateway.pipeline.steps.extract import ExtractError
from gateway.pipeline.history_extracts import (
    HistorySchedule,
    extract_all,
    extract_history,
    interval_seconds,
)
from gateway.pipeline.partners import Partners
from gateway.pipeline.registries import load_plan_members
from gateway.pipeline.process import run_step
from gateway.tabular import read_table

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
HEADER = ["member_cin", "plan", "service_date", "procedure_code", "modifiers", "units",
          "place_of_service", "billing_npi", "rendering_npi", "claim_id", "line_number",
          "diagnoses", "period"]


@pytest.fixture
def world(tmp_path):
    world = make_world(tmp_path)
    world.send("demo-plan", MIXED)  # MIX-A..D become history (4 lines)
    return world


def test_a_provider_gets_the_history_of_its_assigned_members_only(world):
    document_id = extract_history(world.store, world.partners, "harbor", NOW)
    [document] = world.box("harbor")
    assert document["id"] == document_id
    assert (document["role"], document["name"], document["media_type"]) == (
        "history-extract", "history-harbor-20261123T020000Z.csv", "text/csv")
    # harbor's members: 91230000A (HIST-0002 and MIX-A-GOOD) and 91258326G (HIST-0001);
    # MIX-B..D belong to other providers' members
    assert world.rows(document) == [
        HEADER,
        ["91230000A", "demo-plan", "2025-05-21", "G9008", "U1", "1", "11", "1234500001", "",
         "HIST-0002", "1", "", "during"],
        ["91230000A", "demo-plan", "2025-06-03", "G9008", "U1", "1", "11", "1234500001", "",
         "MIX-A-GOOD", "1", "Z5900", "during"],
        ["91258326G", "demo-plan", "2025-05-20", "G9012", "U8", "1", "11", "1234500001", "",
         "HIST-0001", "1", "", "during"],
    ]
    assert world.box("golden-table") == []
    assert all(d["role"] != "history-extract" for d in world.box("demo-plan"))


def test_another_provider_sees_none_of_it(world):
    # Fairweather (91253605F) is reassigned to Golden Table from 2025-06-01 by the plan
    rows = [row for _, row in read_table(FIXTURES / "mif" / "mif-clean.csv", "mif").rows]
    for row in rows:
        if row["member_cin"] == "91253605F":
            row.update(ecm_provider_npi="1234737579", ecm_provider_tin="941203039",
                       ecm_benefit_start=date(2025, 6, 1))
    load_plan_members(world.registry, "demo-plan", rows)
    extract_history(world.store, world.partners, "golden-table", NOW)
    [document] = world.box("golden-table")
    assert world.rows(document) == [HEADER, [
        "91253605F", "demo-plan", "2025-06-04", "S5170", "U6", "1", "11", "1234737579", "",
        "MIX-B-CS-GOOD", "1", "Z5900", "during"]]
    harbor = world.rows(world.store.document(
        extract_history(world.store, world.partners, "harbor", NOW)))
    assert "91253605F" not in {row[0] for row in harbor}


def test_lines_outside_the_assignment_period_are_left_out(world):
    rows = [row for _, row in read_table(FIXTURES / "mif" / "mif-clean.csv", "mif").rows]
    for row in rows:
        if row["member_cin"] == "91230000A":
            row["ecm_benefit_end"] = date(2025, 5, 31)
    load_plan_members(world.registry, "demo-plan", rows)
    document = world.store.document(extract_history(world.store, world.partners, "harbor", NOW))
    assert [(r[0], r[9]) for r in world.rows(document)[1:]] == [
        ("91230000A", "HIST-0002"), ("91258326G", "HIST-0001")]


def test_asking_twice_for_the_same_moment_gives_the_same_extract(world):
    first = extract_history(world.store, world.partners, "harbor", NOW)
    assert extract_history(world.store, world.partners, "harbor", NOW) == first
    later = extract_history(world.store, world.partners, "harbor", NOW + timedelta(hours=1))
    assert later != first and len(world.box("harbor")) == 2


def test_rerunning_the_extract_step_writes_the_same_csv(world):
    document_id = extract_history(world.store, world.partners, "harbor", NOW)
    sid = world.store.document(document_id)["submission_id"]
    harbor = world.partners.partners["harbor"]
    run_step(world.store, world.partners, sid)
    contents = {world.store.document(d["id"])["content"]
                for d in world.store.documents(sid) if d["role"] == "history-extract"}
    assert len(contents) == 1


def test_extracts_are_for_providers_only(world):
    with pytest.raises(ExtractError, match="'demo-plan' is not a provider partner"):
        extract_history(world.store, world.partners, "demo-plan", NOW)
    with pytest.raises(ExtractError, match="'nobody' is not a provider partner"):
        extract_history(world.store, world.partners, "nobody", NOW)


def test_extract_all_sends_one_to_every_provider(world):
    sent = extract_all(world.store, world.partners, NOW)
    assert sorted(sent) == ["golden-table", "harbor"]
    assert world.rows(world.store.document(sent["golden-table"])) == [HEADER]


def test_the_schedule_runs_when_due_and_remembers_its_last_run(world):
    schedule = HistorySchedule.from_partners(world.store, world.partners)
    assert schedule.interval == timedelta(days=1)
    assert sorted(schedule.tick(NOW)) == ["golden-table", "harbor"]
    assert schedule.tick(NOW + timedelta(hours=23)) == {}
    # a new schedule object (a restarted server) reads the last run back from the store
    restarted = HistorySchedule.from_partners(world.store, world.partners)
    assert restarted.last_run() == NOW
    assert restarted.tick(NOW + timedelta(hours=23)) == {}
    assert sorted(restarted.tick(NOW + timedelta(days=1))) == ["golden-table", "harbor"]
    assert len(world.box("harbor")) == 2


def test_schedule_intervals_and_no_schedule(world):
    assert [interval_seconds(v) for v in ("hourly", "daily", "weekly", "90")] == [
        3600, 86400, 604800, 90]
    for bad in ("sometimes", "0", "-5"):
        with pytest.raises(ExtractError):
            interval_seconds(bad)
    quiet = Partners(partners=world.partners.partners, routes=world.partners.routes)
    assert HistorySchedule.from_partners(world.store, quiet) is None


def test_without_a_history_route_no_extract_is_delivered(world):
    no_route = Partners(partners=world.partners.partners,
                        routes=[r for r in world.partners.routes if r.kind != "history"])
    assert extract_history(world.store, no_route, "harbor", NOW) is None
    assert world.box("harbor") == []


def test_the_whole_ecm_flow_logs_no_member_data(tmp_path, caplog):
    import csv
    import logging

    caplog.set_level(logging.DEBUG)
    world = make_world(tmp_path / "flow")
    mif = FIXTURES / "mif" / "mif-clean.csv"
    world.upload("demo-plan", mif)
    world.send("harbor", MIXED)
    world.send("demo-plan", MIXED)
    world.upload("dhcs", FIXTURES / "state" / "response-mixed.xml")
    world.upload("harbor", FIXTURES / "rtf" / "rtf-clean.csv")
    HistorySchedule.from_partners(world.store, world.partners).tick(NOW)
    assert caplog.records  # the flow did log
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    with open(mif, encoding="utf-8") as handle:
        people = [(row["Member CIN"], row["Member Last Name"]) for row in csv.DictReader(handle)]
    for cin, last_name in people:
        assert cin not in text and last_name not in text and last_name.upper() not in text
