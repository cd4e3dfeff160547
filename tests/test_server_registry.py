"""The server's ECM registries: kept in the store's database per plan, loaded from the plans'
uploads (MIF, roster) and the demo fixtures, applied to providers' 837P in the server, which
splits the accepted claims per member's plan; MIFs forwarded per assigned provider; RTF/OTF
routed to the member's plan. Every step re-runs without duplicating anything."""

import csv
import io

import pytest
import yaml
from conftest import FIXTURES, ROOT
from server_world import MIXED, World, claim_ids, make_world
from sqlalchemy import func, inspect, select

from gateway.pipeline.partners import Partners, issue_demo_tokens
from gateway.pipeline.registries import (
    load_demo_registries,
    load_plan_members,
    registry_counts,
    routed_claims,
    server_registry,
    server_rules,
)
from gateway.pipeline.process import run_step
from gateway.pipeline.store import Store
from gateway.registry.store import Registry, assignments
from gateway.tabular import read_table

MIF = FIXTURES / "mif" / "mif-clean.csv"
HARBOR_NPI = "1234500001"


def fixture_rows(path, npi_column="ECM Provider NPI", npi=None):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    if npi is None:
        return rows
    at = rows[0].index(npi_column)
    return [rows[0]] + [r for r in rows[1:] if r[at] == npi]


def sources(registry) -> dict[str, int]:
    c = assignments.c
    with registry.engine.connect() as conn:
        return dict(conn.execute(select(c.source, func.count()).group_by(c.source)).all())


# -- where the registries live ---------------------------------------------------------------------
def test_registries_share_the_store_database_and_are_cached_per_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    one, two = Store(url), Store(url)
    assert server_registry(one) is server_registry(two)
    tables = set(inspect(one.engine).get_table_names())
    assert {"submissions", "documents", "member_assignments", "providers",
            "encounter_history", "routed_claims", "state_encounter_status"} <= tables


def test_an_in_memory_store_shares_its_engine_with_its_registries():
    store = Store("sqlite://")
    registry = server_registry(store)
    assert registry.engine is store.engine
    assert server_registry(Store("sqlite://")) is not registry


def test_a_registry_still_opens_its_own_database():
    assert Registry().loaded() == {"members": False, "providers": False, "history": False,
                                 "cs_authorizations": False}


def test_demo_registries_load_once_however_often_they_are_loaded(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    assert server_rules(world.registry) is None  # nothing loaded: no ECM rules, as the CLI
    first = load_demo_registries(world.store, world.partners)
    again = load_demo_registries(world.store, world.partners)
    assert first == again == {"members": 32, "providers": 8, "history": 2}
    assert registry_counts(world.registry) == {"members": 32, "providers": 8, "history": 2}
    assert sources(world.registry) == {"plan:demo-plan:mif:2025-06": 30,
                                       "plan:demo-plan:mif:2026-09": 2}
    assert server_rules(world.registry) is not None


# -- a provider's 837P -----------------------------------------------------------------------------
def test_provider_837p_is_checked_against_the_server_registries(tmp_path):
    world = make_world(tmp_path)
    done = world.send("harbor", MIXED)
    sid = done.submission_id
    assert done.status == "routed"
    summary = world.store.submission(sid)["summary"]
    assert summary == {"kind": "837p", "claims": 10, "accepted_claims": 1,
                       "rejected_claims": 9, "valid": False, "routed": {"demo-plan": 1}}
    errors = [(f["rule"], f["location"]) for f in world.store.findings(sid, view="plan")
              if f["severity"] == "error"]
    assert errors == [  # the plan's view: every reason (ST#6's hospice beside its dates)
        ("GATEWAY-AUTH-001", "ISA#1/GS#1/ST#2/2010AA/NM109"),
        ("GATEWAY-AUTH-001", "ISA#1/GS#1/ST#3/2010AA/NM109"),
        ("GATEWAY-AUTH-001", "ISA#1/GS#1/ST#4/2010AA/NM109"),
        ("ECM-MEM-002", "ISA#1/GS#1/ST#5/2010BA[1]/NM109"),
        ("GATEWAY-AUTH-001", "ISA#1/GS#1/ST#6/2010AA/NM109"),
        ("ECM-MEM-003", "ISA#1/GS#1/ST#6/2400[1]/SV101-2"),
        ("ECM-PRV-001", "ISA#1/GS#1/ST#7/2400[1]/SV101-2"),
        ("ECM-DUP-001", "ISA#1/GS#1/ST#7/2400[2]/SV101-2"),
        ("ECM-DUP-002", "ISA#1/GS#1/ST#7/2400[3]/SV101-2"),
        ("ECM-CODE-001", "ISA#1/GS#1/ST#7/2400[4]/SV101-2"),
    ]
    st6 = next(f for f in world.store.findings(sid, view="plan")
               if f["location"] == "ISA#1/GS#1/ST#6/2400[1]/SV101-2")
    assert "also ECM-PGM-001" in st6["message"]
    told = [(f["rule"], f["location"]) for f in world.store.findings(sid)
            if f["rule"].startswith("ECM-MEM") or f["rule"].startswith("ECM-PRV")]
    # harbor's view: only "not assigned to you" (ST#3's child, CY_HIGH_UTILIZER, gets no POF
    # remark: the children's thresholds are unpublished, ECM Policy Guide 002:331-332)
    assert told == [
        ("ECM-MEM-010", "ISA#1/GS#1/ST#5/2010BA[1]/NM109"),
        ("ECM-MEM-010", "ISA#1/GS#1/ST#6/2400[1]/SV101-2"),
        ("ECM-MEM-010", "ISA#1/GS#1/ST#7/2400[1]/SV101-2")]
    plan_box = world.box("demo-plan")
    assert [(d["role"], d["name"]) for d in plan_box] == [("routed-837p", f"{sid}.837p.x12")]
    assert claim_ids(world.content(plan_box[0])) == ["MIX-A-GOOD"]
    harbor_box = world.box("harbor")
    assert sorted(d["role"] for d in harbor_box) == ["ack-277ca", "ack-999"]
    ack = world.content(next(d for d in harbor_box if d["role"] == "ack-277ca")).decode()
    assert "STC*A7:97:85" in ack and "ECM-MEM-010" in ack  # the ECM reason reaches the sender
    assert "ECM-PRV-001" not in ack and "assigned NPI" not in ack  # ... what it may know
    for other in ("golden-table", "dhcs"):
        assert world.box(other) == []


def _with_valley_plan(tmp_path) -> World:
    """The demo world plus a second plan; member 91272489K belongs to it, not to the demo plan."""
    issue_demo_tokens(ROOT / "config" / "demo" / "partners.yaml", tmp_path / "partners.yaml")
    data = yaml.safe_load((tmp_path / "partners.yaml").read_text())
    data["partners"].append({"id": "valley-plan", "name": "Valley Health Plan", "role": "plan",
                             "identifiers": {"payer_ids": ["VHP01"]}})
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(data))
    world = World(Store(f"sqlite:///{tmp_path / 'gateway.sqlite'}"),
                  Partners.load(tmp_path / "partners.yaml"))
    load_demo_registries(world.store, world.partners)
    demo = [row for _, row in read_table(MIF, "mif").rows if row["member_cin"] != "91272489K"]
    load_plan_members(world.registry, "demo-plan", demo)
    valley = [row for _, row in read_table(FIXTURES / "mif" / "mif-valley.csv", "mif").rows
              if row["member_cin"] == "91272489K"]
    load_plan_members(world.registry, "valley-plan", valley)
    return world


def two_plan_interchange() -> bytes:
    """ST#1 of ecm-mixed (MIX-A-GOOD, a demo-plan member) and a copy for 91272489K."""
    segments = MIXED.decode().split("~\n")
    end = next(i for i, s in enumerate(segments) if s.startswith("SE*"))
    first = segments[2:end + 1]
    second = "~\n".join(first).replace("ST*837*0001", "ST*837*0002").replace(
        "SE*24*0001", "SE*24*0002").replace("0000005010001", "0000005010002").replace(
        "ALVAREZ*MARISOL****MI*91230000A", "JARAMILLO*FITZGERALD****MI*91272489K").replace(
        "CLM*MIX-A-GOOD", "CLM*MIX-K-VALLEY").replace("D8*20250603", "D8*20250613")
    parts = segments[:2] + first + second.split("~\n") + ["GE*2*501", "IEA*1*000000501", ""]
    return "~\n".join(parts).encode()


def test_claims_for_members_of_different_plans_are_split_per_plan(tmp_path):
    world = _with_valley_plan(tmp_path)
    assert sources(world.registry) == {"plan:demo-plan:mif:2025-06": 29,
                                       "plan:demo-plan:mif:2026-09": 2,
                                       "plan:valley-plan:mif:2025-06": 1}
    done = world.send("harbor", two_plan_interchange())
    sid = done.submission_id
    summary = world.store.submission(sid)["summary"]
    assert summary["accepted_claims"] == 2 and summary["valid"] is True
    assert summary["routed"] == {"demo-plan": 1, "valley-plan": 1}
    demo, valley = world.box("demo-plan"), world.box("valley-plan")
    assert [d["name"] for d in demo] == [f"{sid}.demo-plan.837p.x12"]
    assert [d["name"] for d in valley] == [f"{sid}.valley-plan.837p.x12"]
    assert claim_ids(world.content(demo[0])) == ["MIX-A-GOOD"]
    # the claim's payer id says DEMOPLAN, but the member is the valley plan's
    assert claim_ids(world.content(valley[0])) == ["MIX-K-VALLEY"]


def test_rerunning_the_837p_step_does_not_duplicate_routing_records(tmp_path):
    world = make_world(tmp_path)
    sid = world.send("harbor", MIXED).submission_id
    harbor = world.partners.partners["harbor"]

    def records():
        with world.registry.engine.connect() as conn:
            return conn.execute(select(routed_claims.c.claim_id, routed_claims.c.recipient)
                                .where(routed_claims.c.submission_id == sid)).all()

    before = records()
    run_step(world.store, world.partners, sid)
    assert records() == before == [("MIX-A-GOOD", "demo-plan")]


def test_a_plans_encounters_to_the_state_become_history_once(tmp_path):
    world = make_world(tmp_path)
    done = world.send("demo-plan", MIXED)
    sid = done.submission_id
    assert world.store.submission(sid)["summary"]["routed"] == {"dhcs": 4}
    assert claim_ids(world.content(world.box("dhcs")[0])) == [
        "MIX-A-GOOD", "MIX-B-CS-GOOD", "MIX-C-GOOD", "MIX-D-WARN"]
    assert registry_counts(world.registry)["history"] == 2 + 4
    plan = world.partners.partners["demo-plan"]
    again = run_step(world.store, world.partners, sid)  # a re-run after a crash
    assert again.status == "routed"
    assert registry_counts(world.registry)["history"] == 6
    # a replay is a new submission of the same chain: it replaces, too (and its claims are
    # not duplicates of the lines the first run put into the history)
    from gateway.pipeline.process import replay

    replayed = replay(world.store, world.partners, sid, actor="operator", force=True)
    assert world.store.submission(replayed.submission_id)["summary"]["accepted_claims"] == 4
    assert registry_counts(world.registry)["history"] == 6


# -- a plan's MIF and roster -------------------------------------------------------------------------
def test_a_plans_mif_is_loaded_and_each_provider_gets_only_its_members(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    done = world.upload("demo-plan", MIF)
    sid = done.submission_id
    assert done.status == "routed"
    summary = world.store.submission(sid)["summary"]
    assert summary["members_loaded"] == 30 and summary["forwarded_rows"] == {"harbor": 9}
    assert sources(world.registry) == {"plan:demo-plan:mif:2025-06": 30}
    harbor_box = world.box("harbor")
    assert [(d["role"], d["name"], d["media_type"]) for d in harbor_box] == [
        ("routed-mif", f"{sid}.harbor.mif.csv", "text/csv")]
    assert world.rows(harbor_box[0]) == fixture_rows(MIF, npi=HARBOR_NPI)
    assert world.box("golden-table") == [] and world.box("dhcs") == []
    warnings = [f for f in world.store.findings(sid) if f["rule"] == "GATEWAY-MIF-001"]
    rows = fixture_rows(MIF)
    not_partners = [f"row {n}" for n, r in enumerate(rows[1:], start=2)
                    if r[16] not in (HARBOR_NPI, "1234737579")]
    assert [f["location"] for f in warnings] == not_partners
    assert warnings[0]["message"] == ("the assigned ECM provider (NPI 1234579195) is not a "
                                      "configured trading partner: the row was loaded but not "
                                      "forwarded")
    for row in rows[1:]:  # no member data in any finding
        for f in world.store.findings(sid):
            assert row[0] not in f["message"] and row[1] not in f["message"]


def test_a_new_mif_of_the_same_period_replaces_the_plans_earlier_one(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    first = world.upload("demo-plan", MIF)
    text = MIF.read_text().splitlines()
    shorter = "\n".join(text[:-1]) + "\n"  # the last member dropped
    second = world.upload("demo-plan", MIF, payload=shorter.encode())
    assert second.submission_id != first.submission_id
    assert sources(world.registry) == {"plan:demo-plan:mif:2025-06": 29}
    plan = world.partners.partners["demo-plan"]
    run_step(world.store, world.partners, second.submission_id)  # re-run
    assert sources(world.registry) == {"plan:demo-plan:mif:2025-06": 29}
    next_period = shorter.replace(",2025-06\n", ",2025-07\n")
    world.upload("demo-plan", MIF, payload=next_period.encode())
    assert sources(world.registry) == {"plan:demo-plan:mif:2025-06": 29,
                                       "plan:demo-plan:mif:2025-07": 29}


def test_an_xlsx_mif_is_forwarded_as_xlsx(tmp_path):
    from openpyxl import load_workbook

    world = make_world(tmp_path, demo_registries=False)
    sid = world.upload("demo-plan", FIXTURES / "mif" / "mif-clean.xlsx").submission_id
    [document] = world.box("harbor")
    assert document["name"] == f"{sid}.harbor.mif.xlsx"
    sheet = load_workbook(io.BytesIO(world.content(document))).active
    values = [[c for c in row] for row in sheet.iter_rows(values_only=True)]
    assert values[0][0] == "Member CIN"
    assert [r[0] for r in values[1:]] == [r[0] for r in fixture_rows(MIF, npi=HARBOR_NPI)[1:]]


def test_a_plans_roster_loads_its_provider_directory(tmp_path):
    world = make_world(tmp_path, demo_registries=False)
    roster = FIXTURES / "roster" / "providers.csv"
    done = world.upload("demo-plan", roster)
    assert done.status == "validated"
    assert world.store.submission(done.submission_id)["summary"]["providers_loaded"] == 8
    plan = world.partners.partners["demo-plan"]
    run_step(world.store, world.partners, done.submission_id)
    assert registry_counts(world.registry)["providers"] == 8
    assert all(world.box(p) == [] for p in world.partners.partners)


# -- a provider's RTF / OTF ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rtf", "otf"])
def test_a_providers_member_file_goes_to_the_members_plan(tmp_path, kind):
    world = make_world(tmp_path)
    path = FIXTURES / kind / f"{kind}-clean.csv"
    done = world.upload("harbor", path)
    sid = done.submission_id
    assert done.status == "routed"
    [document] = world.box("demo-plan")
    assert (document["role"], document["name"]) == (f"routed-{kind}", f"{sid}.demo-plan.{kind}.csv")
    assert world.rows(document) == fixture_rows(path)
    assert world.box("golden-table") == []


def test_a_provider_cannot_send_another_providers_rtf(tmp_path):
    world = make_world(tmp_path)
    done = world.upload("golden-table", FIXTURES / "rtf" / "rtf-clean.csv")
    assert done.status == "rejected"
    findings = world.store.findings(done.submission_id)
    assert [f["location"] for f in findings if f["rule"] == "GATEWAY-AUTH-002"] == [
        f"row {n}" for n in range(2, 11)]
    assert findings[0]["message"] == ("the row's ECM provider NPI 1234500001 / TIN 941200000 "
                                      "is not the submitting partner golden-table's: the row "
                                      "was not forwarded")
    assert world.box("demo-plan") == []


# -- a provider's invoice --------------------------------------------------------------------------
def recent_invoice() -> bytes:
    """invoice-clean with its June services moved to a recent month of 31 days (inside timely
    filing, every day exists)."""
    import calendar
    from datetime import date, timedelta

    month = date.today().replace(day=1) - timedelta(days=1)
    while calendar.monthrange(month.year, month.month)[1] != 31:
        month = month.replace(day=1) - timedelta(days=1)
    text = (FIXTURES / "invoice" / "invoice-clean.csv").read_text()
    return text.replace("2025-06-", month.strftime("%Y-%m-")).encode()


def test_an_invoice_is_checked_with_the_registries_and_split_per_members_plan(tmp_path):
    world = _with_valley_plan(tmp_path)
    unknown_member = recent_invoice().replace(b"91258326G", b"99999999Z")
    done = world.upload("harbor", FIXTURES / "invoice" / "invoice-clean.csv",
                        payload=unknown_member)
    sid = done.submission_id
    assert done.status == "routed"
    assert [d["role"] for d in world.box("harbor", sid)] == ["report"]
    [demo] = world.box("demo-plan", sid)
    [valley] = world.box("valley-plan", sid)
    assert demo["name"] == f"{sid}.demo-plan.837p.x12"
    members = [s.split("*")[-1] for s in world.content(demo).decode().split("~")
               if s.strip().startswith("NM1*IL*")]
    assert members == ["91230000A"]  # Golden Table's claim is not Harbor's to send
    assert "*MI*91272489K~" in world.content(valley).decode()
    assert "*MI*91230000A~" not in world.content(valley).decode()
    # the server's registries were applied: the member no MIF knows is rejected
    # (and Golden Table's claim is not Harbor's to send: GATEWAY-AUTH-001, its row 7 with it)
    refused = [("GATEWAY-AUTH-001", "row 6, column Billing Provider NPI"), ("INV-003", "row 7")]
    assert [(f["rule"], f["location"]) for f in world.store.findings(sid, view="plan")
            if f["severity"] == "error"] == [("ECM-MEM-002", "row 4, column Member CIN")] + \
        refused
    assert [(f["rule"], f["location"]) for f in world.store.findings(sid)  # harbor's view
            if f["severity"] == "error"] == [("ECM-MEM-010", "row 4, column Member CIN")] + \
        refused


def test_a_members_plan_rows_answer_what_plans_and_assignment_answer(tmp_path):
    """The FHIR routing's one look-up per member (member_plan_rows) answers exactly what
    plans_of_members and member_assignment answer: a member in two plans' MIFs, one of them
    with two reporting periods, and a member of no plan."""
    from gateway.pipeline.registries import (
        member_assignment,
        member_plan_rows,
        plan_of_source,
        plans_of_members,
    )

    world = _with_valley_plan(tmp_path)
    registry = world.registry
    row = next(r for _, r in read_table(MIF, "mif").rows if r["member_cin"] != "91272489K")
    cin = row["member_cin"]
    load_plan_members(registry, "valley-plan", [{**row, "member_last_name": "VALLEYNAME"}])
    load_plan_members(registry, "demo-plan", [{**row, "reporting_period": "2031-01",
                                               "member_last_name": "LATERNAME"}])
    for member in (cin, "91272489K", "00000000Z"):
        rows = member_plan_rows(registry, member)
        plans = list(dict.fromkeys(p for p in map(plan_of_source,
                                                   (r["source"] for r in rows)) if p))
        assert plans == plans_of_members(registry, [member]).get(member, [])
        for plan in (None, "demo-plan", "valley-plan", "no-plan"):
            first = next((r for r in rows if plan is None
                          or plan_of_source(r["source"]) == plan), None)
            assert first == member_assignment(registry, member, plan), (member, plan)
    assert len(plans_of_members(registry, [cin])[cin]) == 2
    assert member_assignment(registry, cin, "demo-plan")["last_name"] == "LATERNAME"


def _bad_date(text: str) -> str:
    """The MIF with an impossible authorization date in its row 3."""
    lines = text.splitlines()
    cells = lines[2].split(",")
    cells[11] = "2025-02-30"
    lines[2] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", ["bad-date", "overlap"])
def test_a_mif_that_is_not_applied_is_forwarded_to_no_one(tmp_path, name):
    """Whole or nothing: a MIF with an error finding loads nothing and goes to no provider
    (before, its valid rows still went to their providers' mailboxes)."""
    world = make_world(tmp_path, demo_registries=False)
    if name == "bad-date":
        payload = _bad_date(MIF.read_text())
        errors = [("ROW-002", "row 3, column ECM Authorization Date")]
        rows, accepted = 31, 30
    else:
        payload = (FIXTURES / "ecm-policy" / "mif-overlapping.csv").read_text()
        errors = [("ECM-MIF-001", "row 4, column Member Date of Birth")] * 2 + [  # warnings
            ("ECM-MIF-002", "row 6, column ECM Benefit Start Date")]
        rows, accepted = 5, 5
    done = world.upload("demo-plan", MIF, payload=payload.encode())
    assert done.status == "rejected"
    summary = world.store.submission(done.submission_id)["summary"]
    assert summary == {"kind": "mif", "rows": rows, "accepted_rows": accepted,
                       "rejected_rows": rows - accepted, "layout": "default", "valid": False,
                       "members_loaded": 0, "forwarded_rows": {}}
    found = [(f["rule"], f["location"]) for f in world.store.findings(done.submission_id)]
    assert found == [*errors, ("ECM-REG-002", "file")]
    assert world.box("harbor") == []
    assert sources(world.registry) == {}
