"""Provider directories in the server: a plan's upload (roster, 274, Plan-Net) becomes its
provider registry; the monthly 274 to the state per plan and county, on request and on a
schedule, with control numbers from the store."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import FIXTURES, demo_gateway
from fastapi.testclient import TestClient
from server_world import make_world
from sqlalchemy import select

from gateway.directory.x274 import read_274
from gateway.pipeline.directory import DirectorySchedule, monthly_274
from gateway.registry.store import providers

DIRECTORY = FIXTURES / "directory"
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def _registry_npis(world) -> list[tuple[str, str, bool, bool]]:
    with world.registry.engine.connect() as conn:
        rows = conn.execute(select(providers.c.npi, providers.c.source, providers.c.ecm,
                                   providers.c.cs).order_by(providers.c.id)).all()
    return [tuple(r) for r in rows]


def test_a_plans_directory_roster_becomes_its_provider_registry(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    done = world.upload("demo-plan", DIRECTORY / "roster.csv")
    assert done.status == "validated"
    summary = world.store.submission(done.submission_id)["summary"]
    assert (summary["kind"], summary["format"], summary["providers"],
            summary["providers_loaded"], summary["counties"]) == (
        "directory", "directory", 5, 5, ["ALAMEDA", "SAN FRANCISCO"])
    assert _registry_npis(world) == [
        ("1234567877", "plan:demo-plan:roster", True, False),
        ("1234567943", "plan:demo-plan:roster", True, True),
        ("1234567877", "plan:demo-plan:roster", True, False),
        ("1234568081", "plan:demo-plan:roster", False, True),
        ("1234568156", "plan:demo-plan:roster", False, True)]


def test_a_274_and_a_plannet_bundle_are_directories_too(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    done = world.send("demo-plan", (DIRECTORY / "roster.274").read_bytes())  # POST /x12
    assert done.status == "validated"
    assert world.store.submission(done.submission_id)["summary"]["format"] == "274"
    done = world.upload("demo-plan", DIRECTORY / "roster.plannet.json")
    summary = world.store.submission(done.submission_id)["summary"]
    assert (done.status, summary["format"], summary["providers_loaded"]) == (
        "validated", "plannet", 5)
    assert len(_registry_npis(world)) == 5  # each upload replaced the plan's registry


def test_a_provider_cannot_send_a_directory(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    done = world.upload("harbor", DIRECTORY / "roster.csv")
    assert done.status == "rejected"
    assert _registry_npis(world) == []


def test_bad_directory_rows_are_findings_and_the_rest_loads(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    text = (DIRECTORY / "roster.csv").read_text().replace("1234568081", "1234568082")
    done = world.upload("demo-plan", DIRECTORY / "bad.csv", payload=text.encode())
    findings = world.store.findings(done.submission_id)
    assert [(f["rule"], f["location"]) for f in findings] == [
        ("ROW-004", "row 5, column Provider NPI")]
    assert world.store.submission(done.submission_id)["summary"]["providers_loaded"] == 4


def test_the_monthly_274_per_county_goes_to_the_state(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    world.upload("demo-plan", DIRECTORY / "roster.csv")
    made = monthly_274(world.store, world.partners, "demo-plan", "2026-12", NOW)
    assert [(d["name"], d["recipient"]) for d in made] == [
        ("274-demo-plan-alameda-2026-12.x12", "dhcs"),
        ("274-demo-plan-san-francisco-2026-12.x12", "dhcs")]
    box = world.box("dhcs")
    assert [d["name"] for d in box] == [d["name"] for d in made]
    alameda, san_francisco = (world.content(d).decode() for d in box)
    for text in (alameda, san_francisco):
        isa = text.split("~")[0].split("*")
        assert (isa[1], isa[6].strip(), isa[8].strip(), isa[12]) == (
            "03", "DEMOPLAN", "DHCS-PROVNETWK", "00405")
        assert "GS*PW*DEMOPLAN*DHCS-PROVNETWK*" in text and "DTM*507*20261201~" in text
        assert "NM1*PR*2*Demo Health Plan*****PI*DEMOPLAN~" in text
    # control numbers from the store: one interchange number per file, never reused
    assert alameda.split("*")[13] == "000000001" and san_francisco.split("*")[13] == "000000002"
    _d, groups, findings = read_274(alameda.encode())
    assert findings == []
    assert [(g.name, [s.county for s in g.sites], g.provider_count()) for g in groups] == [
        ("SUNRISE COMMUNITY CARE", ["ALAMEDA", "ALAMEDA"], 3)]
    _d, groups, findings = read_274(san_francisco.encode())
    assert [(g.name, g.provider_count()) for g in groups] == [
        ("GOLDEN BRIDGE HOUSING SERVICES", 2)]
    # asking again for the same month finds the same files
    again = monthly_274(world.store, world.partners, "demo-plan", "2026-12", NOW)
    assert [d["id"] for d in again] == [d["id"] for d in made]


def test_the_schedule_makes_the_274_once_a_month(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    schedule = DirectorySchedule(world.store, world.partners)
    assert schedule.tick(NOW) == {}  # no directory yet
    world.upload("demo-plan", DIRECTORY / "roster.csv")
    sent = schedule.tick(NOW)
    assert [d["name"] for d in sent["demo-plan"]] == [
        "274-demo-plan-alameda-2026-12.x12", "274-demo-plan-san-francisco-2026-12.x12"]
    assert schedule.tick(NOW.replace(day=20)) == {}
    january = schedule.tick(datetime(2027, 1, 1, 6, 0, tzinfo=UTC))
    assert [d["name"] for d in january["demo-plan"]] == [
        "274-demo-plan-alameda-2027-01.x12", "274-demo-plan-san-francisco-2027-01.x12"]
    assert len(world.box("dhcs")) == 4


def test_the_api_upload_and_the_274_on_request(tmp_path):
    app, headers = demo_gateway(tmp_path)
    with TestClient(app) as client:
        with open(DIRECTORY / "roster.plannet.json", "rb") as handle:
            answer = client.post("/files", headers=headers["demo-plan"],
                                 files={"file": ("directory.json", handle, "application/json")})
        assert answer.status_code in (200, 201, 202), answer.text
        with open(DIRECTORY / "roster.274", "rb") as handle:
            answer = client.post("/files", headers=headers["demo-plan"],
                                 files={"file": ("directory.274", handle, "text/plain")})
        assert answer.status_code in (200, 201, 202), answer.text
        made = client.post("/directory/274?month=2026-12", headers=headers["demo-plan"])
        assert made.status_code == 201, made.text
        names = [d["name"] for d in made.json()["documents"]]
        assert names == ["274-demo-plan-alameda-2026-12.x12",
                         "274-demo-plan-san-francisco-2026-12.x12"]
        assert client.post("/directory/274?plan=demo-plan",
                           headers=headers["harbor"]).status_code == 403
        assert client.post("/directory/274?month=2026-13",
                           headers=headers["demo-plan"]).status_code == 422
        box = client.get("/mailbox", headers=headers["dhcs"]).json()["documents"]
        assert sorted(d["name"] for d in box) == sorted(names)
